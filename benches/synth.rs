//! Timings of the synthetic-data generators, and the Otsu calibration of the phantom presets
//! `retina` and `published` (DESIGN.md budgets: one 56 × 627 × 647 synthetic mask with 45–69 pairs under 2 s on
//! 2 cores; the thesis reports 40 minutes for its synthetic masks).
//!
//! Run: `cargo bench --bench synth` (RAYON_NUM_THREADS caps the threads;
//! `SEGLAB_SYNTH_PUBLISHED_SCALE=0.25` draws the published crops at a quarter of their Y and X
//! extent, default 0.5).

use std::time::Instant;

use seglab::dataset::published::{CROPS, scaled_shape};
use seglab::dataset::threshold::otsu_threshold;
use seglab::preset::Preset;
use seglab::synth::{MaskConfig, PhantomConfig, PhantomPreset, generate_masks, render_phantom};

/// Median and minimum wall time in seconds of `runs` calls.
fn time(runs: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let mut t: Vec<f64> = (0..runs)
        .map(|i| {
            let start = Instant::now();
            f(i);
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0])
}

fn dice(pred: impl Iterator<Item = bool>, truth: &[u8]) -> f64 {
    let (mut i, mut a, mut b) = (0usize, 0usize, 0usize);
    for (p, &t) in pred.zip(truth) {
        let t = t != 0;
        i += usize::from(p && t);
        a += usize::from(p);
        b += usize::from(t);
    }
    2.0 * i as f64 / (a + b).max(1) as f64
}

fn main() {
    println!(
        "seglab synth benchmark — {} rayon threads",
        rayon::current_num_threads()
    );
    let shape = [56, 627, 647];
    for classes in [2u8, 3] {
        let config = MaskConfig::preset(Preset::Code, classes);
        let mut pairs = Vec::new();
        let (median, min) = time(5, |i| {
            let out = generate_masks(&config, shape, i as u64).expect("valid config");
            pairs.push(out.report.pairs);
        });
        println!(
            "synthetic mask {classes}-class 56x627x647 (code preset, pairs {pairs:?}): \
             median {median:.3} s, min {min:.3} s (budget 2 s)"
        );
    }

    let retina = PhantomConfig::preset(PhantomPreset::Retina);
    let (median, min) = time(3, |i| {
        render_phantom(&retina, [48, 192, 192], i as u64).expect("valid config");
    });
    println!("phantom retina 48x192x192: median {median:.3} s, min {min:.3} s");
    let shapes = vec![[48, 192, 192]; 6];
    calibration("retina", &retina, &shapes);

    let scale: f64 = std::env::var("SEGLAB_SYNTH_PUBLISHED_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.5);
    let published = PhantomConfig::preset(PhantomPreset::Published);
    let shapes: Vec<[usize; 3]> = CROPS.iter().map(|c| scaled_shape(c, scale)).collect();
    let (median, min) = time(1, |i| {
        render_phantom(&published, shapes[4], i as u64).expect("valid config");
    });
    let [z, y, x] = shapes[4];
    println!("phantom published Crop5_BC at scale {scale} ({z}x{y}x{x}): {median:.3} s ({min:.3})");
    calibration(&format!("published (scale {scale})"), &published, &shapes);
}

/// Prints the mean ± std over `shapes` (one volume each, seeds 0, 1, …) of a per-channel Otsu
/// threshold's Dice on the raw phantom image: the calibration band of DESIGN.md is nuclei
/// 0.55–0.75 and Golgi 0.30–0.50 (the real crops' difficulty).
fn calibration(name: &str, config: &PhantomConfig, shapes: &[[usize; 3]]) {
    let (mut golgi, mut nuclei) = (Vec::new(), Vec::new());
    for (seed, &shape) in shapes.iter().enumerate() {
        let p = render_phantom(config, shape, seed as u64).expect("valid config");
        let img = p.image.to_f32();
        for (c, out) in [(0, &mut golgi), (1, &mut nuclei)] {
            let ch = img.channel(c);
            let t = otsu_threshold(ch).expect("non-empty");
            out.push(dice(ch.iter().map(|&v| v > t), p.mask.channel(c)));
        }
    }
    let stats = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
        (m, sd)
    };
    let ((gm, gs), (nm, ns)) = (stats(&golgi), stats(&nuclei));
    println!(
        "phantom {name} Otsu Dice over {} volumes: nuclei {nm:.3} ± {ns:.3} (target 0.55–0.75), \
         golgi {gm:.3} ± {gs:.3} (target 0.30–0.50)",
        shapes.len()
    );
}
