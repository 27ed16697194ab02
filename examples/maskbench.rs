use seglab::preset::Preset;
use seglab::synth::{MaskConfig, generate_masks};
fn main() {
    let classes: u8 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(2);
    let c = MaskConfig::preset(Preset::Code, classes);
    for i in 0..3 {
        let t = std::time::Instant::now();
        let out = generate_masks(&c, [56, 627, 647], i).unwrap();
        println!(
            "{} pairs {:.3}s",
            out.report.pairs,
            t.elapsed().as_secs_f64()
        );
    }
}
