//! Sliding-window bookkeeping (window extraction through reflection maps, batching, output
//! checks, merging, thresholding) per window, with a predictor that does no work of its own
//! beyond returning a copy of its input: 64³ windows, step 48, on a 2 × 56 × 627 × 647
//! volume (the thesis' crop size; 196 windows under the published rule).
//!
//! Run: `cargo bench --bench infer`. Compare the per-window figure with a model's own time
//! per 64³ window (DESIGN.md budget: bookkeeping under 10 % of it).

use std::time::Instant;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use seglab::dataset::pad::PadMode;
use seglab::infer::{
    InferError, MergeMode, SlidingWindowConfig, WindowPredictor, predict_volume, window_geometry,
};
use seglab::volume::Volume;

const SHAPE: [usize; 4] = [2, 56, 627, 647];
const RUNS: usize = 3;

/// Returns its input windows (the cheapest predictor that still hands back fresh volumes).
struct Echo;

impl WindowPredictor for Echo {
    fn out_channels(&self) -> usize {
        SHAPE[0]
    }
    fn predict(&mut self, windows: &[Volume<f32>]) -> Result<Vec<Volume<f32>>, InferError> {
        Ok(windows.to_vec())
    }
}

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let n: usize = SHAPE.iter().product();
    let image = Volume::from_vec(SHAPE, (0..n).map(|_| rng.random::<f32>()).collect()).unwrap();
    println!(
        "sliding window on {}, window 64^3, step 48, {} threads, best of {RUNS} runs",
        SHAPE.map(|s| s.to_string()).join(" x "),
        rayon::current_num_threads()
    );
    for padding in [PadMode::HighEnd, PadMode::Symmetric] {
        let g = window_geometry([SHAPE[1], SHAPE[2], SHAPE[3]], [64; 3], [48; 3], padding);
        for merge in [MergeMode::Or, MergeMode::Mean, MergeMode::Gaussian] {
            let config = SlidingWindowConfig {
                padding,
                merge,
                ..Default::default()
            };
            let best = (0..RUNS)
                .map(|_| {
                    let start = Instant::now();
                    let p = predict_volume(&mut Echo, &image, &config).unwrap();
                    std::hint::black_box(p);
                    start.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min);
            println!(
                "padding {:9} merge {:8} {:4} windows: total {:7.1} ms, {:6.2} ms per window",
                padding.name(),
                merge.name(),
                g.origins.len(),
                best * 1e3,
                best * 1e3 / g.origins.len() as f64
            );
        }
    }
}
