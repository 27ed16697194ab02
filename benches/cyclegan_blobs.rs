//! How fast the CycleGAN learns the easy blob domain of the training tests (image = blurred
//! mask + noise; `tests/util/blobs.rs`): the per-class Dice of the segmenter on the held-out
//! test images, and on the test masks fed to it as images (its identity term's task), every
//! `SEGLAB_BLOBS_EVERY` steps for each seed. The figures behind README, Limits.
//!
//! ```sh
//! cargo bench --profile dev --bench cyclegan_blobs                  # seeds 0,1,2; 1,000 steps
//! SEGLAB_BLOBS_SEEDS=0 SEGLAB_BLOBS_STEPS=1500 cargo bench --profile dev --bench cyclegan_blobs
//! SEGLAB_BLOBS_IDENTITY_ONLY=1 cargo bench --profile dev --bench cyclegan_blobs
//! ```
//!
//! `SEGLAB_BLOBS_IDENTITY_ONLY=1` trains on the identity terms alone (λ_cyc 0, λ_id 100, so the
//! adversarial terms weigh next to nothing): the segmenter's mapping of masks onto themselves
//! is then supervised directly. A step takes about 0.55 s on 2 cores.

use std::time::Instant;

use burn::tensor::Device;
use seglab::train::{CycleGanTrainer, Trainer};

#[path = "../tests/util/blobs.rs"]
mod blobs;

use blobs::{CLASSES, UnpairedBlobs, cyclegan_scores, easy_cyclegan_config};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}: cannot parse {v:?}")),
        Err(_) => default,
    }
}

fn main() {
    let steps: usize = env_or("SEGLAB_BLOBS_STEPS", 1000);
    let every: usize = env_or("SEGLAB_BLOBS_EVERY", 50);
    let identity_only = env_or("SEGLAB_BLOBS_IDENTITY_ONLY", 0u8) == 1;
    let seeds: Vec<u64> = env_or("SEGLAB_BLOBS_SEEDS", "0,1,2".to_string())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("SEGLAB_BLOBS_SEEDS: comma-separated integers")
        })
        .collect();
    let device = Device::flex();
    println!(
        "CycleGAN on the easy blob domain{}, {} threads; Dice (golgi, nuclei)",
        if identity_only {
            " (identity terms only)"
        } else {
            ""
        },
        rayon::current_num_threads()
    );
    println!("seed\tstep\ttest golgi\ttest nuclei\tidentity golgi\tidentity nuclei\tseconds");
    for seed in seeds {
        let (model, mut train) = easy_cyclegan_config();
        if identity_only {
            train = train.with_lambda_cycle(0.0).with_lambda_identity(100.0);
        }
        let mut trainer =
            CycleGanTrainer::new(model, train, &CLASSES, &CLASSES, seed, &device).unwrap();
        let mut blobs = UnpairedBlobs::new(trainer.device());
        let start = Instant::now();
        for step in 1..=steps {
            trainer.train_step(&blobs.next_batch());
            if step % every == 0 || step == steps {
                let (test, identity) = cyclegan_scores(&trainer, &blobs.test);
                println!(
                    "{seed}\t{step}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.0}",
                    test[0],
                    test[1],
                    identity[0],
                    identity[1],
                    start.elapsed().as_secs_f64()
                );
            }
        }
    }
}
