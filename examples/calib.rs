use seglab::dataset::threshold::otsu_threshold;
use seglab::synth::preview::{PreviewRow, write_preview};
use seglab::synth::{PhantomConfig, PhantomPreset, render_phantom};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let preset: PhantomPreset = args.get(1).map(|s| s.parse().unwrap()).unwrap_or_default();
    let n: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(4);
    let mut config = PhantomConfig::preset(preset);
    if let Some(f) = args.get(3) {
        config = config.with_overrides_file(std::path::Path::new(f)).unwrap();
    }
    let mut rows = Vec::new();
    for seed in 0..n {
        let p = render_phantom(&config, [48, 192, 192], seed).unwrap();
        let img = p.image.to_f32();
        let mut line = format!(
            "seed {seed}: nuclei {} paired {} lone {} dust {} |",
            p.report.nuclei,
            p.report.paired,
            p.report.lone_golgi,
            p.report.dust.len()
        );
        for c in 0..2 {
            let ch = img.channel(c);
            let t = otsu_threshold(ch).unwrap();
            let m = p.mask.channel(c);
            let (mut i, mut a, mut b) = (0usize, 0usize, 0usize);
            let (mut sin, mut sout, mut nin) = (0f64, 0f64, 0usize);
            for (&v, &g) in ch.iter().zip(m) {
                let pr = v > t;
                let g = g != 0;
                i += usize::from(pr && g);
                a += usize::from(pr);
                b += usize::from(g);
                if g {
                    sin += v as f64;
                    nin += 1;
                } else {
                    sout += v as f64;
                }
            }
            let d = 2.0 * i as f64 / (a + b) as f64;
            let nv = ch.len() as f64;
            line += &format!(
                " ch{c}: t={t:.0} pred={:.4} gt={:.4} dice={d:.3} mean_in={:.1} mean_out={:.1} |",
                a as f64 / nv,
                b as f64 / nv,
                sin / nin as f64,
                sout / (nv - nin as f64)
            );
        }
        println!("{line}");
        if seed < 3 {
            rows.push(PreviewRow {
                label: format!("seed {seed}"),
                image: Some((img, vec!["golgi".into(), "nuclei".into()])),
                mask: Some((
                    p.mask.clone(),
                    vec!["golgi".into(), "nuclei".into(), "pair".into()],
                )),
            });
        }
    }
    write_preview(&rows, None, std::path::Path::new("/tmp/calib.png")).unwrap();
}
