//! Preprocessing speed: the percentile contrast stretch (docs/published-code.md §1.3) on
//! a volume of the thesis' crop size, 2 × 56 × 627 × 647 (C, Z, Y, X).
//!
//! Run: `cargo bench --bench dataset`. Prints the best and median of several runs for
//! integer-valued intensities (uint8/uint16 files: percentiles by counting) and for
//! non-integer float intensities (percentiles by selection on a copy).

use std::time::Instant;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use seglab::dataset::preprocess::{Arithmetic, PreprocessConfig, percentiles};
use seglab::dataset::spec::PreprocessDefaults;
use seglab::preset::Preset;
use seglab::volume::{DType, Volume};

const SHAPE: [usize; 4] = [2, 56, 627, 647];
const RUNS: usize = 5;

fn volume(integral: bool) -> Volume<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let n: usize = SHAPE.iter().product();
    let data = (0..n)
        .map(|_| {
            // Sparse fluorescence-like intensities: mostly dim background, a bright tail.
            let v = if rng.random_bool(0.93) {
                rng.random::<f32>() * 30.0
            } else {
                30.0 + rng.random::<f32>().powi(2) * 225.0
            };
            if integral { v.floor() } else { v }
        })
        .collect();
    Volume::from_vec(SHAPE, data).unwrap()
}

fn time(mut f: impl FnMut()) -> (f64, f64) {
    let mut t: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[0], t[RUNS / 2])
}

fn main() {
    let threads = rayon::current_num_threads();
    println!(
        "percentile stretch on {} ({:.1} M voxels), {threads} threads, {RUNS} runs",
        SHAPE.map(|s| s.to_string()).join(" x "),
        SHAPE.iter().product::<usize>() as f64 / 1e6
    );
    let names = vec!["golgi".to_string(), "nuclei".to_string()];
    let pre = PreprocessConfig::default()
        .resolve(Preset::Code, &names, &PreprocessDefaults::default())
        .unwrap();
    println!("steps: {}", pre.describe());
    for (label, integral, dtype) in [
        ("integer-valued (uint8 file)", true, DType::U8),
        ("float-valued (float32 file)", false, DType::F32),
    ] {
        let v = volume(integral);
        let arithmetic = Arithmetic::for_dtype(dtype);
        let (best, median) = time(|| {
            let p = percentiles(v.channel(0), &[95.0, 99.8], arithmetic);
            std::hint::black_box(p);
        });
        println!(
            "{label:30} percentiles of one channel: best {:7.1} ms, median {:7.1} ms",
            best * 1e3,
            median * 1e3
        );
        let (best, median) = time(|| {
            let out = pre.apply(&v, dtype).unwrap();
            std::hint::black_box(out);
        });
        println!(
            "{label:30} full stretch + scale, 2 ch: best {:7.1} ms, median {:7.1} ms",
            best * 1e3,
            median * 1e3
        );
    }
}
