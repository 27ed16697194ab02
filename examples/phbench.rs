use seglab::synth::{PhantomConfig, PhantomPreset, render_phantom};
fn main() {
    let c = PhantomConfig::preset(PhantomPreset::Retina);
    for i in 0..3 {
        let t = std::time::Instant::now();
        let p = render_phantom(&c, [48, 192, 192], i).unwrap();
        println!(
            "{} nuclei {:.3}s",
            p.report.nuclei,
            t.elapsed().as_secs_f64()
        );
    }
}
