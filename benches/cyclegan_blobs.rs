//! How fast the CycleGAN learns the blob domains of the training tests (image = blurred mask +
//! noise; `tests/util/blobs.rs`): the per-class Dice of the segmenter on the held-out test
//! images, and on the test masks fed to it as images (its identity term's task), every
//! `SEGLAB_BLOBS_EVERY` steps for each seed, then for each seed the step with the best mean
//! validation Dice (the checkpoint `seglab train` keeps with `train.selection = val-dice`). The figures behind
//! README, Limits.
//!
//! ```sh
//! cargo bench --profile dev --bench cyclegan_blobs                  # easy; seeds 0,1,2; 1,000 steps
//! SEGLAB_BLOBS_SETTING=small-golgi cargo bench --profile dev --bench cyclegan_blobs
//! SEGLAB_BLOBS_SEEDS=0 SEGLAB_BLOBS_STEPS=1500 cargo bench --profile dev --bench cyclegan_blobs
//! SEGLAB_BLOBS_IDENTITY_ONLY=1 cargo bench --profile dev --bench cyclegan_blobs
//! ```
//!
//! `SEGLAB_BLOBS_SETTING` is `easy` (the training test's: Golgi as large as the nuclei, widths
//! ÷ 8, Golgi weight 1; about 0.9 s a step on 2 cores) or `small-golgi` (small sparse Golgi,
//! widths ÷ 16, the published Golgi weight 3.5; about 0.55 s a step).
//! `SEGLAB_BLOBS_IDENTITY_ONLY=1` trains on the identity terms alone (λ_cyc 0, λ_id 100, so the
//! adversarial terms weigh next to nothing): the segmenter's mapping of masks onto themselves
//! is then supervised directly.

use std::ops::ControlFlow;
use std::time::Instant;

use burn::tensor::Device;
use seglab::train::CycleGanTrainer;

#[path = "../tests/util/blobs.rs"]
mod blobs;

use blobs::{CLASSES, EASY, SMALL_GOLGI, UnpairedBlobs, train_scored};

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
    let name = env_or("SEGLAB_BLOBS_SETTING", "easy".to_string());
    let setting = match name.as_str() {
        "easy" => EASY,
        "small-golgi" => SMALL_GOLGI,
        other => panic!("SEGLAB_BLOBS_SETTING: expected easy or small-golgi, got {other:?}"),
    };
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
        "CycleGAN, blob setting {name} ({setting:?}){}, {} threads; Dice (golgi, nuclei)",
        if identity_only {
            " (identity terms only)"
        } else {
            ""
        },
        rayon::current_num_threads()
    );
    println!(
        "seed\tstep\tvalid golgi\tvalid nuclei\ttest golgi\ttest nuclei\tidentity golgi\t\
         identity nuclei\tseconds"
    );
    let mut kept = Vec::new();
    for seed in seeds {
        let (model, mut train) = setting.config();
        if identity_only {
            train = train.with_lambda_cycle(0.0).with_lambda_identity(100.0);
        }
        let mut trainer =
            CycleGanTrainer::new(model, train, &CLASSES, &CLASSES, seed, &device).unwrap();
        let mut blobs = UnpairedBlobs::new(setting.golgi, &device);
        let start = Instant::now();
        let best = train_scored(&mut trainer, &mut blobs, steps, every, |step, s| {
            let (v, t, i) = (&s.validation, &s.test, &s.identity);
            println!(
                "{seed}\t{step}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.0}",
                v[0],
                v[1],
                t[0],
                t[1],
                i[0],
                i[1],
                start.elapsed().as_secs_f64()
            );
            ControlFlow::Continue(())
        });
        kept.push((seed, best));
    }
    println!("best step on mean validation Dice: seed, step, test golgi, test nuclei");
    for (seed, (step, scores)) in kept {
        let t = scores.test;
        println!("{seed}\t{step}\t{:.3}\t{:.3}", t[0], t[1]);
    }
}
