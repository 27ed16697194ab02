//! Speed of the three models on this machine's CPU: milliseconds per training step (published
//! batch sizes: U-Net 4, Vox2Vox 4, CycleGAN 2) and per predicted window (batch 1), at the
//! `cpu-small` and `paper` scales — the same measurement as `seglab bench` (`train::bench`).
//!
//! ```sh
//! cargo bench --profile dev --bench models                                # both scales
//! SEGLAB_BENCH_SCALES=cpu-small cargo bench --profile dev --bench models  # one scale
//! ```
//!
//! `paper` steps take minutes on a 2-core CPU (the Vox2Vox generator has 150 M parameters);
//! they are timed once after one warm-up step. `benches/peers/run.sh` compares with PyTorch.

use seglab::backend::DeviceSpec;
use seglab::models::{ModelKind, ModelScale, ScaleSpec};
use seglab::train::bench::{self, BenchPhase, BenchSpec};

fn main() {
    let scales = std::env::var("SEGLAB_BENCH_SCALES").unwrap_or_else(|_| "cpu-small,paper".into());
    let device = DeviceSpec::CPU;
    println!(
        "seglab models benchmark, Flex CPU backend, {} threads",
        rayon::current_num_threads()
    );
    for s in scales.split(',') {
        let scale: ModelScale = s
            .trim()
            .parse()
            .expect("SEGLAB_BENCH_SCALES: paper or cpu-small");
        let steps = match scale {
            ModelScale::CpuSmall => 10,
            ModelScale::Paper => 1,
        };
        for model in [ModelKind::Unet3d, ModelKind::Vox2Vox, ModelKind::CycleGan] {
            let spec = BenchSpec::new(model, ScaleSpec::new(scale), steps);
            let train = bench::run(&spec, BenchPhase::Train, device).expect("benchmark");
            let predict = bench::run(&spec, BenchPhase::Predict, device).expect("benchmark");
            println!(
                "{model:<9} {:<10} {:>3}³ width {:>3} batch {}  {:>10.1} ms/step  {:>9.1} ms/window",
                scale.name(),
                train.patch,
                train.width,
                train.batch,
                train.median_ms,
                predict.median_ms
            );
        }
    }
}
