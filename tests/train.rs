//! Training behaviour of the three models at `cpu-small` widths on tiny synthetic blob volumes:
//! the supervised models overfit two patches, the CycleGAN learns an easy unpaired domain,
//! a checkpoint round trip changes nothing, and the same seed gives the same losses.

use std::ops::ControlFlow;

use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use seglab::models::{CycleGanConfig, ModelScale, ScaleSpec, Unet3dConfig, Vox2VoxConfig};
use seglab::preset::Preset;
use seglab::train::losses::{DiceLossConfig, DiceMode};
use seglab::train::{
    AdamSettings, Batch, CycleGanTrainConfig, CycleGanTrainer, StepLosses, Trainer,
    Unet3dTrainConfig, Unet3dTrainer, Vox2VoxTrainConfig, Vox2VoxTrainer,
};

mod util;
use util::blobs::{
    CLASSES, EASY, Golgi, UnpairedBlobs, blob_batch, blob_sample, cyclegan_scores, dice_per_class,
    train_scored,
};

fn cpu_small() -> ScaleSpec {
    ScaleSpec::new(ModelScale::CpuSmall)
}

fn losses_of(trainer: &mut impl Trainer, batch: &Batch, steps: usize) -> Vec<StepLosses> {
    (0..steps).map(|_| trainer.train_step(batch)).collect()
}

#[test]
fn unet3d_overfits_two_patches() {
    let device = Device::flex();
    let n = cpu_small().patch_size();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // Batch-norm statistics that follow the weights within tens of steps (Keras' 0.99 would
    // need hundreds to catch up with weights changing this fast; prediction uses them).
    let cfg = Unet3dConfig::for_scale(2, 2, &cpu_small())
        .unwrap()
        .with_bn_momentum(0.1);
    // Per-class Dice (the published global Dice lets the large nuclei class drown out the
    // small Golgi spheres) and lr 1e-2 instead of the published 1e-4, so that two patches are
    // memorised in a few hundred steps.
    let train = Unet3dTrainConfig::for_preset(Preset::Code)
        .with_loss(DiceLossConfig::new().with_mode(DiceMode::PerClass))
        .with_optimizer(AdamSettings::new(1e-2).with_amsgrad(true));
    let mut trainer = Unet3dTrainer::new(cfg, train, 0, &device).unwrap();
    let batch = blob_batch(&mut rng, 2, n, Golgi::Small, trainer.device());
    let mut dice = vec![0.0];
    for round in 0..12 {
        losses_of(&mut trainer, &batch, 25);
        dice = dice_per_class(
            trainer.predict(batch.images.clone()),
            batch.masks.clone().inner(),
        );
        if dice.iter().all(|&d| d > 0.9) {
            eprintln!(
                "U-Net reached Dice {dice:?} after {} steps",
                (round + 1) * 25
            );
            return;
        }
    }
    panic!(
        "U-Net did not overfit: Dice {dice:?} after {} steps",
        trainer.steps()
    );
}

#[test]
fn vox2vox_overfits_two_patches() {
    let device = Device::flex();
    let n = cpu_small().patch_size();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut scale = cpu_small();
    scale.width_divisor = Some(16);
    let cfg = Vox2VoxConfig::for_scale(2, 2, &scale).unwrap();
    // Half the `cpu-small` widths, per-class Dice with the thesis' Golgi weight and a faster
    // generator (lr 5e-3), so that two patches are memorised in a few hundred steps.
    let loss = DiceLossConfig::new()
        .with_mode(DiceMode::PerClass)
        .with_class_weights(Some(vec![6.0, 1.0]));
    let train = Vox2VoxTrainConfig::for_task(&CLASSES, Preset::Code)
        .with_loss(loss)
        .with_opt_g(AdamSettings::new(5e-3).with_beta_1(0.5));
    let mut trainer = Vox2VoxTrainer::new(cfg, train, 0, &device).unwrap();
    let batch = blob_batch(&mut rng, 2, n, Golgi::Small, trainer.device());
    let mut dice = vec![0.0];
    for round in 0..24 {
        losses_of(&mut trainer, &batch, 25);
        dice = dice_per_class(
            trainer.predict(batch.images.clone()),
            batch.masks.clone().inner(),
        );
        if dice.iter().all(|&d| d > 0.9) {
            eprintln!(
                "Vox2Vox reached Dice {dice:?} after {} steps",
                (round + 1) * 25
            );
            return;
        }
    }
    panic!(
        "Vox2Vox did not overfit: Dice {dice:?} after {} steps",
        trainer.steps()
    );
}

/// Unpaired training on the easy blob domain ([`EASY`]: Golgi spheres as large as the nuclei,
/// widths ÷ 8), scored every 50 steps; the step with the best mean validation Dice is kept, as
/// the training driver keeps a checkpoint (`val-dice`), and training stops once both classes
/// pass 0.8 there or after 400 steps. On the held-out test images the kept segmenter has
/// Dice > 0.7 for both classes, at least 0.2 above the untrained network. Small, sparse Golgi
/// take far longer and are not learned reliably (README, Limits, and
/// `benches/cyclegan_blobs.rs`).
#[test]
fn cyclegan_learns_an_easy_unpaired_domain() {
    let device = Device::flex();
    let (model, train) = EASY.config();
    let mut trainer = CycleGanTrainer::new(model, train, &CLASSES, &CLASSES, 0, &device).unwrap();
    let mut blobs = UnpairedBlobs::new(EASY.golgi, trainer.device());
    let untrained = cyclegan_scores(&trainer, &blobs).test;
    let (step, best) = train_scored(&mut trainer, &mut blobs, 400, 50, |step, scores| {
        eprintln!("step {step}: {scores:?}");
        if scores.validation.iter().all(|&d| d > 0.8) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    let trained = best.test;
    for (c, class) in CLASSES.iter().enumerate() {
        let (u, t) = (untrained[c], trained[c]);
        assert!(
            t > 0.7 && t - u > 0.2,
            "{class} not learned: test Dice {u:.3} untrained, {t:.3} at step {step} (best on \
             validation)"
        );
    }
}

/// Two 32³ patches of the small-Golgi blob domain drawn with `seed`.
fn two_blob_patches(seed: u64, device: &Device) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    blob_batch(&mut rng, 2, 32, Golgi::Small, device)
}

/// A U-Net at the [`tiny`] scale with seed 0 and the default training settings.
fn tiny_scale_unet(device: &Device) -> Unet3dTrainer {
    let cfg = Unet3dConfig::for_scale(2, 2, &tiny()).unwrap();
    Unet3dTrainer::new(cfg, Unet3dTrainConfig::new(), 0, device).unwrap()
}

/// Tiny networks for the bookkeeping tests (widths ÷ 32, 32³ patches).
fn tiny() -> ScaleSpec {
    let mut s = cpu_small();
    s.width_divisor = Some(32);
    s
}

fn loss_values(l: &[StepLosses]) -> Vec<Vec<f64>> {
    l.iter()
        .map(|s| s.0.iter().map(|&(_, v)| v).collect())
        .collect()
}

/// Trains `make()` for 4 steps, checkpointing after 2; a second trainer (other seed) loaded
/// from the checkpoint must predict identically and continue with identical losses, and a
/// third trainer with the same seed must reproduce all 4 losses.
///
/// "Identical" is bit for bit: the CPU backend's sums run in a fixed order (the convolution's
/// weight gradient sums its threads' shares in thread order), so a seed fixes every value.
fn check_resume_and_determinism<T: Trainer>(
    make: impl Fn(u64) -> T,
    batch_of: impl Fn(&T) -> Batch,
) {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("checkpoint_last");
    let mut a = make(5);
    let batch = batch_of(&a);
    let first = losses_of(&mut a, &batch, 2);
    a.save_checkpoint(&ckpt).unwrap();
    assert!(ckpt.join("state.json").exists());
    let rest = losses_of(&mut a, &batch, 2);

    let mut b = make(99);
    let image = batch.images.clone().narrow(0, 0, 1).inner();
    assert_ne!(
        b.predict(image.clone()).try_into_vec_as::<f32>().unwrap(),
        make(5)
            .predict(image.clone())
            .try_into_vec_as::<f32>()
            .unwrap(),
        "different seeds should give different networks"
    );
    b.load_checkpoint(&ckpt).unwrap();
    assert_eq!(b.steps(), 2);
    let mut reference = make(5);
    losses_of(&mut reference, &batch, 2);
    assert_eq!(
        b.predict(image.clone()).try_into_vec_as::<f32>().unwrap(),
        reference.predict(image).try_into_vec_as::<f32>().unwrap(),
        "checkpoint save → load must give identical predictions",
    );
    assert_eq!(
        loss_values(&losses_of(&mut b, &batch, 2)),
        loss_values(&rest),
        "resumed losses",
    );

    let mut c = make(5);
    let again = losses_of(&mut c, &batch, 4);
    assert_eq!(
        loss_values(&again),
        loss_values(&[first, rest].concat()),
        "same seed, same losses",
    );
}

#[test]
fn unet3d_checkpoint_resume_and_determinism() {
    let device = Device::flex();
    check_resume_and_determinism(
        |seed| {
            let cfg = Unet3dConfig::for_scale(2, 2, &tiny()).unwrap();
            Unet3dTrainer::new(cfg, Unet3dTrainConfig::new(), seed, &device).unwrap()
        },
        |t| two_blob_patches(1, t.device()),
    );
}

#[test]
fn vox2vox_checkpoint_resume_and_determinism() {
    let device = Device::flex();
    check_resume_and_determinism(
        |seed| {
            let mut scale = cpu_small();
            scale.width_divisor = Some(16);
            let cfg = Vox2VoxConfig::for_scale(2, 2, &scale).unwrap();
            Vox2VoxTrainer::new(cfg, Vox2VoxTrainConfig::new(), seed, &device).unwrap()
        },
        |t| two_blob_patches(2, t.device()),
    );
}

#[test]
fn cyclegan_checkpoint_resume_and_determinism() {
    let device = Device::flex();
    check_resume_and_determinism(
        |seed| {
            let cfg = CycleGanConfig::for_scale(2, 2, &tiny()).unwrap();
            // A pool of 3 fills during the first two steps (batch 2), so the resumed steps
            // draw from a restored, full pool.
            let train = CycleGanTrainConfig::new().with_pool_size(3);
            CycleGanTrainer::new(cfg, train, &CLASSES, &CLASSES, seed, &device).unwrap()
        },
        |t| two_blob_patches(3, t.device()),
    );
}

#[test]
fn checkpoints_refuse_other_models_and_configs() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let unet = tiny_scale_unet(&device);
    unet.save_checkpoint(&ckpt).unwrap();
    // Saving again replaces the checkpoint and leaves no partial or old copy behind.
    unet.save_checkpoint(&ckpt).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["ckpt"]);

    let mut vox = Vox2VoxTrainer::new(
        Vox2VoxConfig::for_scale(2, 2, &tiny()).unwrap(),
        Vox2VoxTrainConfig::new(),
        0,
        &device,
    )
    .unwrap();
    let err = vox.load_checkpoint(&ckpt).unwrap_err().to_string();
    assert!(
        err.contains("checkpoint of a unet3d model, expected vox2vox"),
        "{err}"
    );

    let mut wider = Unet3dTrainer::new(
        Unet3dConfig::for_scale(2, 2, &tiny())
            .unwrap()
            .with_base_filters(2),
        Unet3dTrainConfig::new(),
        0,
        &device,
    )
    .unwrap();
    let err = wider.load_checkpoint(&ckpt).unwrap_err().to_string();
    assert!(err.contains("model configuration differs"), "{err}");

    let err = wider
        .load_checkpoint(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing") && err.contains("state.json"),
        "{err}"
    );
}

/// A checkpoint written before an option existed (its stored configuration lacks the field)
/// loads with the option's default and predicts as before; a stored value that differs from
/// the trainer's is still refused.
#[test]
fn checkpoints_written_before_an_option_existed_load_with_its_default() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let unet = tiny_scale_unet(&device);
    unet.save_checkpoint(&ckpt).unwrap();
    let state = ckpt.join("state.json");
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let removed = [
        info["model_config"]
            .as_object_mut()
            .unwrap()
            .remove("bn_momentum"),
        info["train_config"]["optimizer"]
            .as_object_mut()
            .unwrap()
            .remove("epsilon"),
    ];
    assert!(removed.iter().all(Option::is_some), "{info}");
    std::fs::write(&state, info.to_string()).unwrap();

    let loaded = seglab::train::trial::trainer_from_checkpoint(&ckpt, &device).unwrap();
    let x = Tensor::<5>::from_data(
        burn::tensor::TensorData::new(
            (0..2 * 16 * 16 * 16)
                .map(|i| (i % 7) as f32 / 7.0)
                .collect::<Vec<_>>(),
            [1, 2, 16, 16, 16],
        ),
        &device,
    );
    let (a, b) = (unet.predict(x.clone()), loaded.predict(x));
    assert_eq!(
        a.try_into_vec_as::<f32>().unwrap(),
        b.try_into_vec_as::<f32>().unwrap()
    );

    info["model_config"]["bn_momentum"] = serde_json::json!(0.5);
    std::fs::write(&state, info.to_string()).unwrap();
    let mut fresh = tiny_scale_unet(&device);
    let err = fresh.load_checkpoint(&ckpt).unwrap_err().to_string();
    assert!(err.contains("model configuration differs"), "{err}");
}

// ---- The epoch driver and `seglab train` -------------------------------------------------

use seglab::dataset::patches::{PatchSet, PatchVolume};
use seglab::infer::{MergeMode, SlidingWindowConfig, predict_volume};
use seglab::synth::dataset::write_phantom_dataset;
use seglab::synth::{PhantomConfig, PhantomPreset};
use seglab::tracking::{EpochRow, ResultRow, TimingRow};
use seglab::train::config::{DriverConfig, PatchConfig, Selection, TrialSink};
use seglab::train::driver::{FitData, FitEnd, FitOptions, TrainerWindows, fit};
use seglab::train::{MemorySink, StopFlag, TrainError};
use seglab::volume::Volume;

/// Blob volumes of 16³ as a patch set (image + mask).
fn blob_set(count: usize, seed: u64) -> PatchSet {
    PatchSet::new(blob_volumes(count, 16, seed), [16; 3]).unwrap()
}

/// `count` blob volumes of n³ voxels with their masks.
fn blob_volumes(count: usize, n: usize, seed: u64) -> Vec<PatchVolume> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let (img, mask) = blob_sample(&mut rng, n, Golgi::Small);
            PatchVolume {
                id: format!("v{i}"),
                image: Volume::from_vec([2, n, n, n], img).unwrap(),
                mask: Some(
                    Volume::from_vec([2, n, n, n], mask.iter().map(|&m| m as u8).collect())
                        .unwrap(),
                ),
            }
        })
        .collect()
}

/// A sink that raises the stop flag after `after` epochs were recorded.
struct StopAfter {
    inner: MemorySink,
    after: usize,
    stop: StopFlag,
}

impl TrialSink for StopAfter {
    fn epochs(&mut self, rows: &[EpochRow]) -> Result<(), TrainError> {
        self.inner.epochs(rows)?;
        let epochs: std::collections::BTreeSet<u32> =
            self.inner.epochs.iter().map(|r| r.epoch).collect();
        if epochs.len() >= self.after {
            self.stop.request();
        }
        Ok(())
    }
    fn results(&mut self, rows: &[ResultRow]) -> Result<(), TrainError> {
        self.inner.results(rows)
    }
    fn timings(&mut self, rows: &[TimingRow]) -> Result<(), TrainError> {
        self.inner.timings(rows)
    }
}

/// The settings shared by the driver tests' [`FitOptions`].
struct FitSetup<'a> {
    driver: &'a DriverConfig,
    patches: &'a PatchConfig,
    classes: &'a [String],
    infer: &'a SlidingWindowConfig,
}

impl<'a> FitSetup<'a> {
    fn new(
        driver: &'a DriverConfig,
        patches: &'a PatchConfig,
        classes: &'a [String],
        infer: &'a SlidingWindowConfig,
    ) -> Self {
        Self {
            driver,
            patches,
            classes,
            infer,
        }
    }

    /// Trial "t", attempt 1, checkpoints under `dir`.
    fn options(&self, dir: &std::path::Path, seed: u64, resume: bool) -> FitOptions<'a> {
        FitOptions {
            driver: self.driver,
            patches: self.patches,
            classes: self.classes,
            infer: self.infer,
            seed,
            trial_id: "t",
            attempt: 1,
            checkpoint_latest: dir.join("latest"),
            checkpoint_best: dir.join("best"),
            resume,
            augment: &NO_AUGMENT,
            image_fill: 0.0,
        }
    }
}

/// Training patches as drawn (no flips or rotations), as published.
const NO_AUGMENT: seglab::dataset::augment::AugmentConfig =
    seglab::dataset::augment::AugmentConfig {
        flip: 0.0,
        rotate: 0.0,
        max_degrees: 30.0,
    };

fn tiny_unet() -> Unet3dTrainer {
    let scale = ScaleSpec {
        width_divisor: Some(16),
        patch_size: Some(16),
        ..cpu_small()
    };
    let cfg = Unet3dConfig::for_scale(2, 2, &scale).unwrap();
    Unet3dTrainer::new(cfg, Unet3dTrainConfig::new(), 3, &Device::flex()).unwrap()
}

/// The (epoch, split, metric, value) of rows, without timing.
fn values(rows: &[EpochRow]) -> Vec<(u32, String, String, f64)> {
    rows.iter()
        .map(|r| (r.epoch, r.split.clone(), r.metric.clone(), r.value))
        .collect()
}

#[test]
fn driver_resume_after_interrupt_continues_with_identical_losses() {
    let train = blob_set(4, 1);
    let val = blob_set(2, 2);
    let driver = DriverConfig {
        epochs: 3,
        batch: 2,
        ..DriverConfig::published(seglab::models::ModelKind::Unet3d)
    };
    let patches = PatchConfig::published(16, 2);
    let infer = SlidingWindowConfig::default();
    let classes = vec!["golgi".to_string(), "nuclei".to_string()];
    let dir = util::temp_dir();
    let opts = |name: &str, resume: bool| {
        let setup = FitSetup::new(&driver, &patches, &classes, &infer);
        setup.options(&dir.path().join(name), 7, resume)
    };
    let data = FitData {
        train: &train,
        synthetic: None,
        val: Some(&val),
        val_volumes: &[],
    };
    // Uninterrupted.
    let mut full = MemorySink::default();
    let mut t = tiny_unet();
    let r = fit(
        &mut t,
        &data,
        &opts("a", false),
        &mut full,
        &StopFlag::new(),
        &mut |_| {},
    )
    .unwrap();
    assert!(matches!(r.end, FitEnd::Stopped(_)));
    assert_eq!(r.state.epochs_done, 3);
    // Interrupted after the first epoch, then resumed by a fresh trainer.
    let stop = StopFlag::new();
    let mut first = StopAfter {
        inner: MemorySink::default(),
        after: 1,
        stop: stop.clone(),
    };
    let mut t = tiny_unet();
    let r = fit(
        &mut t,
        &data,
        &opts("b", false),
        &mut first,
        &stop,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(r.end, FitEnd::Interrupted);
    assert_eq!(r.state.epochs_done, 1);
    let mut resumed = MemorySink::default();
    let mut t = tiny_unet();
    let r = fit(
        &mut t,
        &data,
        &opts("b", true),
        &mut resumed,
        &StopFlag::new(),
        &mut |_| {},
    )
    .unwrap();
    assert!(matches!(r.end, FitEnd::Stopped(_)));
    // The resumed fit re-emits epoch 1 and continues exactly.
    assert_eq!(values(&resumed.epochs), values(&full.epochs));
    let metrics: Vec<&str> = full.epochs.iter().map(|r| r.metric.as_str()).collect();
    for m in [
        "loss",
        "loss_loss",
        "dice_golgi",
        "dice_nuclei",
        "dice_mean",
    ] {
        assert!(metrics.contains(&m), "{m} missing from {metrics:?}");
    }
}

#[test]
fn driver_overfits_and_selects_the_best_epoch() {
    let train = blob_set(2, 5);
    let driver = DriverConfig {
        epochs: 12,
        batch: 2,
        patience: 0,
        iterations_per_epoch: Some(10),
        selection: seglab::train::config::Selection::ValDice,
        ..DriverConfig::published(seglab::models::ModelKind::Unet3d)
    };
    let patches = PatchConfig::published(16, 2);
    let infer = SlidingWindowConfig::default();
    let classes = vec!["golgi".to_string(), "nuclei".to_string()];
    let dir = util::temp_dir();
    let opts = FitSetup::new(&driver, &patches, &classes, &infer).options(dir.path(), 1, false);
    let mut scale = cpu_small();
    scale.patch_size = Some(16);
    let cfg = Unet3dConfig::for_scale(2, 2, &scale).unwrap();
    let train_cfg = Unet3dTrainConfig::new()
        .with_optimizer(seglab::train::AdamSettings::new(3e-3).with_amsgrad(true));
    let mut t = Unet3dTrainer::new(cfg, train_cfg, 0, &Device::flex()).unwrap();
    let mut sink = MemorySink::default();
    let data = FitData {
        train: &train,
        synthetic: None,
        val: Some(&train),
        val_volumes: &[],
    };
    let r = fit(
        &mut t,
        &data,
        &opts,
        &mut sink,
        &StopFlag::new(),
        &mut |_| {},
    )
    .unwrap();
    let best = r.state.best_value.unwrap();
    // The > 0.9 overfit of each model is asserted step by step above; here the driver must
    // learn through its own loop and select the best epoch.
    let first = sink
        .epochs
        .iter()
        .find(|e| e.epoch == 1 && e.metric == "dice_mean")
        .unwrap();
    assert!(
        best > first.value + 0.05,
        "no progress: Dice {} after epoch 1, best {best}",
        first.value
    );
    let best_epoch = r.state.best_epoch.unwrap();
    let at_best = sink
        .epochs
        .iter()
        .find(|e| e.epoch == best_epoch && e.metric == "dice_mean")
        .unwrap();
    assert_eq!(at_best.value, best);
    assert!(dir.path().join("best").join("driver.json").exists());

    // The best checkpoint holds the weights only; the latest one the optimizer state too.
    let best_dir = dir.path().join("best");
    assert!(best_dir.join("unet3d.bpk").exists());
    assert!(!best_dir.join("opt_unet3d.bpk").exists());
    assert!(
        seglab::train::checkpoint::read_info(&best_dir)
            .unwrap()
            .weights_only
    );
    assert!(dir.path().join("latest").join("opt_unet3d.bpk").exists());
    // A fresh trainer loads the best weights and predicts as the fitted trainer does (the
    // driver restored them: train.restore_best).
    let mut fresh = Unet3dTrainer::new(
        Unet3dConfig::for_scale(2, 2, &scale).unwrap(),
        Unet3dTrainConfig::new(),
        7,
        &Device::flex(),
    )
    .unwrap();
    fresh.load_checkpoint(&best_dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let batch = blob_batch(&mut rng, 2, 16, Golgi::Small, &Device::flex());
    let (a, b) = (t.predict(batch.images.clone()), fresh.predict(batch.images));
    assert_eq!(a.into_data(), b.into_data());
}

#[test]
fn a_fit_does_not_resume_from_a_weights_only_checkpoint() {
    let train = blob_set(2, 5);
    let driver = DriverConfig {
        epochs: 1,
        batch: 2,
        iterations_per_epoch: Some(1),
        ..DriverConfig::published(seglab::models::ModelKind::Unet3d)
    };
    let patches = PatchConfig::published(16, 2);
    let infer = SlidingWindowConfig::default();
    let classes = vec!["golgi".to_string(), "nuclei".to_string()];
    let dir = util::temp_dir();
    let setup = FitSetup::new(&driver, &patches, &classes, &infer);
    let data = FitData {
        train: &train,
        synthetic: None,
        val: Some(&train),
        val_volumes: &[],
    };
    let fit_once = |resume: bool| {
        let mut t = tiny_unet();
        fit(
            &mut t,
            &data,
            &setup.options(dir.path(), 1, resume),
            &mut MemorySink::default(),
            &StopFlag::new(),
            &mut |_| {},
        )
    };
    fit_once(false).unwrap();
    // Put the weights-only best checkpoint where a resume reads.
    let latest = dir.path().join("latest");
    std::fs::remove_dir_all(&latest).unwrap();
    std::fs::rename(dir.path().join("best"), &latest).unwrap();
    let err = fit_once(true).unwrap_err().to_string();
    assert!(
        err.contains("latest") && err.contains("weights only"),
        "{err}"
    );
}

/// A tiny U-Net fitted by `driver` on blob patches and validated on two whole blob volumes
/// (sliding 16³ windows, centre-weighted merge): the trainer (last epoch's weights), the rows,
/// the fit's state, and the validation volumes' predictions as a trial would make them.
struct WholeVolumeFit {
    sink: MemorySink,
    state: seglab::train::driver::DriverState,
    volumes: Vec<PatchVolume>,
    predictions: Vec<seglab::infer::Prediction>,
}

fn fit_on_whole_volumes(driver: &DriverConfig) -> WholeVolumeFit {
    let train = blob_set(2, 5);
    let volumes = blob_volumes(2, 24, 9);
    let val = PatchSet::new(volumes.clone(), [16; 3]).unwrap();
    let patches = PatchConfig::published(16, 2);
    let infer = SlidingWindowConfig {
        window: [16; 3],
        step: [12; 3],
        merge: MergeMode::Gaussian,
        ..SlidingWindowConfig::default()
    };
    let classes = CLASSES.map(String::from);
    let dir = util::temp_dir();
    let opts = FitSetup::new(driver, &patches, &classes, &infer).options(dir.path(), 1, false);
    let data = FitData {
        train: &train,
        synthetic: None,
        val: Some(&val),
        val_volumes: &volumes,
    };
    let mut t = tiny_unet();
    let mut sink = MemorySink::default();
    let r = fit(
        &mut t,
        &data,
        &opts,
        &mut sink,
        &StopFlag::new(),
        &mut |_| {},
    )
    .unwrap();
    let predictions = volumes
        .iter()
        .map(|v| {
            let mut windows = TrainerWindows {
                trainer: &t,
                out_channels: 2,
            };
            predict_volume(&mut windows, &v.image, &infer).unwrap()
        })
        .collect();
    WholeVolumeFit {
        sink,
        state: r.state,
        volumes,
        predictions,
    }
}

/// `train.val_volumes`: the validation Dice is that of the whole validation volumes predicted
/// as the test volumes are (sliding 16³ windows, centre-weighted merge), pooled over volumes.
#[test]
fn driver_validates_on_whole_volumes_like_the_test_prediction() {
    let driver = DriverConfig {
        epochs: 3,
        batch: 2,
        patience: 0,
        iterations_per_epoch: Some(10),
        val_volumes: true,
        restore_best: false,
        ..DriverConfig::published(seglab::models::ModelKind::Unet3d)
    };
    let f = fit_on_whole_volumes(&driver);
    // The last epoch's weights are the trainer's: its predictions of the volumes, pooled.
    let (dice, counts) = f.pooled_dice(&[0.5; 2]);
    for (c, expected) in dice.iter().enumerate() {
        let metric = format!("dice_{}", CLASSES[c]);
        assert_eq!(epoch_value(&f.sink, 3, &metric), *expected, "{metric}");
    }
    assert!(
        counts[1][0] > 0,
        "the U-Net found no nuclei voxel after 30 steps: the comparison is vacuous"
    );
}

/// `train.calibrate_threshold`: each epoch reports, per class, the threshold where the Dice
/// of the whole validation volumes peaks and that Dice; the fit's state hands the thresholds
/// of an epoch back, and no other threshold scores higher.
#[test]
fn driver_calibrates_a_threshold_per_class_on_the_validation_volumes() {
    let driver = DriverConfig {
        epochs: 2,
        batch: 2,
        patience: 0,
        iterations_per_epoch: Some(10),
        val_volumes: true,
        calibrate_threshold: true,
        restore_best: false,
        ..DriverConfig::published(seglab::models::ModelKind::Unet3d)
    };
    driver.validate().unwrap();
    let f = fit_on_whole_volumes(&driver);
    let chosen: Vec<f32> = CLASSES
        .iter()
        .map(|c| epoch_value(&f.sink, 2, &format!("threshold_{c}")) as f32)
        .collect();
    assert_eq!(f.state.calibrated_thresholds(2), Some(chosen.clone()));
    let (dice, counts) = f.pooled_dice(&chosen);
    for (c, d) in dice.iter().enumerate() {
        assert_eq!(epoch_value(&f.sink, 2, &format!("dice_{}", CLASSES[c])), *d);
        for other in [0.1f32, 0.3, 0.5, 0.7, 0.9] {
            let (at_other, _) = f.pooled_dice(&[other; 2]);
            assert!(
                at_other[c] <= *d,
                "class {c}: Dice {} at {other} beats {d} at the chosen {}",
                at_other[c],
                chosen[c]
            );
        }
    }
    assert!(
        counts[1][0] > 0,
        "no nuclei voxel found: the comparison is vacuous"
    );
    // Without val_volumes there is nothing to calibrate on.
    let bad = DriverConfig {
        val_volumes: false,
        ..driver
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("train.calibrate_threshold"), "{e}");
}

/// The value of `metric` at `epoch` among the sink's rows.
fn epoch_value(sink: &MemorySink, epoch: u32, metric: &str) -> f64 {
    sink.epochs
        .iter()
        .find(|r| r.epoch == epoch && r.metric == metric)
        .unwrap_or_else(|| panic!("no {metric} row for epoch {epoch}"))
        .value
}

impl WholeVolumeFit {
    /// Per-class Dice and (tp, fp, fn) of the validation predictions thresholded per class,
    /// pooled over the volumes.
    fn pooled_dice(&self, thresholds: &[f32]) -> ([f64; 2], [[u64; 3]; 2]) {
        let mut counts = [[0u64; 3]; 2];
        for (pred, v) in self.predictions.iter().zip(&self.volumes) {
            let pred = pred.mask_at(thresholds).unwrap();
            let gt = v.mask.as_ref().unwrap();
            let per_class = pred.data().len() / 2;
            for (i, (&p, &m)) in pred.data().iter().zip(gt.data()).enumerate() {
                let cnt = &mut counts[i / per_class];
                cnt[0] += u64::from(p != 0 && m != 0);
                cnt[1] += u64::from(p != 0 && m == 0);
                cnt[2] += u64::from(p == 0 && m != 0);
            }
        }
        let dice = counts.map(|[tp, fp, fn_]| 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64);
        (dice, counts)
    }
}

fn phantom_dataset(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("phantom");
    write_phantom_dataset(
        &PhantomConfig::preset(PhantomPreset::Easy),
        Some(PhantomPreset::Easy),
        3,
        [16, 48, 48],
        0,
        &out,
        false,
        &|_, _| {},
    )
    .unwrap();
    out
}

fn read_csv(path: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn seglab_train_threshold_end_to_end() {
    let dir = util::temp_dir();
    let data = phantom_dataset(dir.path());
    let out = dir.path().join("trial");
    let o = util::run_seglab(&[
        "train",
        "--dataset",
        data.to_str().unwrap(),
        "--model",
        "threshold",
        "--classes",
        "golgi,nuclei",
        "--fold",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results = read_csv(&out.join("results.csv"));
    let dice: Vec<f64> = results
        .iter()
        .filter(|r| r[3] == "nuclei" && r[4] == "dice")
        .map(|r| r[5].parse().unwrap())
        .collect();
    assert_eq!(dice.len(), 1, "one test volume in fold 0 of nested-3");
    assert!(
        dice[0] > 0.5,
        "Otsu nuclei Dice on the easy phantom {}",
        dice[0]
    );
    assert!(out.join("config.json").exists());
    let preds: Vec<_> = std::fs::read_dir(out.join("predictions"))
        .unwrap()
        .collect();
    assert_eq!(preds.len(), 1);
    let phases: Vec<String> = read_csv(&out.join("timings.csv"))
        .into_iter()
        .map(|r| r[2].clone())
        .collect();
    assert_eq!(phases, ["preprocess", "predict", "evaluate"]);
}

#[test]
fn seglab_train_unet3d_end_to_end_and_predict() {
    let dir = util::temp_dir();
    let data = phantom_dataset(dir.path());
    let out = dir.path().join("trial");
    let o = util::run_seglab(&[
        "train",
        "--dataset",
        data.to_str().unwrap(),
        "--model",
        "unet3d",
        "--classes",
        "golgi,nuclei",
        "--scale",
        "cpu-small",
        "--set",
        "train.epochs=2",
        "--set",
        "data.patches.size=16",
        "--set",
        "data.patches.step=16",
        "--set",
        "infer.window=16",
        "--set",
        "infer.step=12",
        "--set",
        "net.base_filters=2",
        "--set",
        "infer.merge=mean",
        "--set",
        "infer.threshold=0.3",
        "--set",
        "train.val_volumes=true",
        "--set",
        "train.calibrate_threshold=true",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let epochs = read_csv(&out.join("epochs.csv"));
    for metric in ["dice_golgi", "threshold_golgi", "threshold_nuclei"] {
        assert!(
            epochs
                .iter()
                .any(|r| r[2] == "2" && r[3] == "val" && r[4] == metric),
            "no {metric} row for epoch 2"
        );
    }
    let log = std::fs::read_to_string(out.join("log.txt")).unwrap();
    assert!(
        log.contains("thresholds calibrated on the validation volumes"),
        "{log}"
    );
    let results = read_csv(&out.join("results.csv"));
    assert!(results.iter().any(|r| r[4] == "dice"));
    let phases: Vec<String> = read_csv(&out.join("timings.csv"))
        .into_iter()
        .map(|r| r[2].clone())
        .collect();
    assert_eq!(
        phases,
        [
            "preprocess",
            "patches",
            "train",
            "validate",
            "predict",
            "evaluate"
        ]
    );
    for f in [
        "checkpoint_latest/state.json",
        "checkpoint_latest/driver.json",
        "log.txt",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // `seglab predict` with the trial's checkpoint reproduces the trial's prediction: it takes
    // the trial's merge and calibrated thresholds; options override them.
    let test_pred = std::fs::read_dir(out.join("predictions"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let id = test_pred.file_stem().unwrap().to_str().unwrap().to_string();
    let image = data.join("images").join(format!("{id}.tif"));
    let checkpoint = out.join("checkpoint_best");
    let predict = |name: &str, options: &[&str]| {
        let path = dir.path().join(name);
        let mut args = vec![
            "predict",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "--out",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(options);
        let o = util::run_seglab(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        seglab::volume::read_tiff(&path).unwrap().to_f32()
    };
    let a = seglab::volume::read_tiff(&test_pred).unwrap().to_f32();
    let b = predict("again.tif", &[]);
    assert_eq!(a.data(), b.data());
    let c = predict("published.tif", &["--merge", "or", "--threshold", "0.5"]);
    assert_ne!(
        a.data(),
        c.data(),
        "--merge and --threshold must override the trial's"
    );
}

/// Validation takes losses and prediction from one forward pass (`valid_predict`); the
/// prediction must equal `predict` of the same images, after a few training steps so that
/// weights and batch-norm statistics are not at their initial values. Returns the losses and
/// the prediction (host data).
fn check_valid_predict(trainer: &mut impl Trainer, batch: &Batch) -> (StepLosses, Vec<f32>) {
    losses_of(trainer, batch, 2);
    let (losses, pred) = trainer.valid_predict(batch);
    let expected: Vec<f32> = trainer
        .predict(batch.images.clone())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let got: Vec<f32> = pred.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(got.len(), expected.len());
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "prediction differs by {worst}");
    (losses, got)
}

#[test]
fn valid_predict_matches_predict_and_the_loss_of_its_prediction() {
    let device = Device::flex();
    let mut unet = tiny_scale_unet(&device);
    let batch = two_blob_patches(3, unet.device());
    let (losses, pred) = check_valid_predict(&mut unet, &batch);
    // The U-Net's validation loss is the global soft Dice (smoothing 1) of that prediction.
    let masks: Vec<f32> = batch.masks.clone().into_data().try_to_vec::<f32>().unwrap();
    let inter: f64 = pred.iter().zip(&masks).map(|(p, y)| f64::from(p * y)).sum();
    let total: f64 = pred.iter().chain(&masks).map(|&v| f64::from(v)).sum();
    let expected = 1.0 - (2.0 * inter + 1.0) / (total + 1.0);
    let loss = losses.get("loss").unwrap();
    assert!((loss - expected).abs() < 1e-4, "{loss} vs {expected}");
    assert_eq!(losses, unet.valid_step(&batch));

    let mut vox = Vox2VoxTrainer::new(
        Vox2VoxConfig::for_scale(2, 2, &tiny()).unwrap(),
        Vox2VoxTrainConfig::new(),
        0,
        &device,
    )
    .unwrap();
    let (losses, _) = check_valid_predict(&mut vox, &batch);
    let names: Vec<&str> = losses.0.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["g_loss", "dice_loss", "adv_loss", "d_loss"]);
}

/// Fits a tiny CycleGAN for 3 epochs on blob images and blob masks (unpaired), validating on
/// two whole blob volumes whose masks are `val_masks`, with `selection`; returns the rows and
/// the chosen epoch.
fn label_free_fit(
    selection: Selection,
    val_masks: impl Fn(&Volume<u8>) -> Volume<u8>,
) -> (MemorySink, Option<u32>) {
    let images = blob_volumes(2, 32, 5);
    let masks: Vec<PatchVolume> = blob_volumes(2, 32, 6)
        .into_iter()
        .map(|v| PatchVolume {
            image: v.mask.unwrap().map(f32::from),
            mask: None,
            id: v.id,
        })
        .collect();
    let train = PatchSet::new(
        images
            .into_iter()
            .map(|v| PatchVolume { mask: None, ..v })
            .collect(),
        [32; 3],
    )
    .unwrap();
    let synthetic = PatchSet::new(masks, [32; 3]).unwrap();
    let volumes: Vec<PatchVolume> = blob_volumes(2, 32, 9)
        .into_iter()
        .map(|v| PatchVolume {
            mask: v.mask.as_ref().map(&val_masks),
            ..v
        })
        .collect();
    let val = PatchSet::new(volumes.clone(), [32; 3]).unwrap();
    let driver = DriverConfig {
        epochs: 3,
        batch: 2,
        patience: 0,
        iterations_per_epoch: Some(3),
        val_volumes: true,
        selection,
        ..DriverConfig::published(seglab::models::ModelKind::CycleGan)
    };
    let patches = PatchConfig::published(32, 2);
    let infer = SlidingWindowConfig {
        window: [32; 3],
        step: [24; 3],
        ..SlidingWindowConfig::default()
    };
    let classes = CLASSES.map(String::from);
    let dir = util::temp_dir();
    let opts = FitSetup::new(&driver, &patches, &classes, &infer).options(dir.path(), 2, false);
    let data = FitData {
        train: &train,
        synthetic: Some(&synthetic),
        val: Some(&val),
        val_volumes: &volumes,
    };
    let cfg = CycleGanConfig::for_scale(2, 2, &tiny()).unwrap();
    let mut t = CycleGanTrainer::new(
        cfg,
        CycleGanTrainConfig::new(),
        &CLASSES,
        &CLASSES,
        4,
        &Device::flex(),
    )
    .unwrap();
    let mut sink = MemorySink::default();
    let r = fit(
        &mut t,
        &data,
        &opts,
        &mut sink,
        &StopFlag::new(),
        &mut |_| {},
    )
    .unwrap();
    (sink, r.state.best_epoch)
}

/// `train.selection = label-free` chooses the CycleGAN's epoch from validation images and
/// synthetic masks only: with the validation masks replaced by noise the criterion and the
/// choice are the same, while the (oracle) validation Dice, which reads those masks, changes.
#[test]
fn label_free_selection_never_reads_a_validation_mask() {
    let truth = label_free_fit(Selection::LabelFree, |m| m.clone());
    let noise = label_free_fit(Selection::LabelFree, |m| {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let noise = (0..m.data().len())
            .map(|_| u8::from(rand::RngExt::random_bool(&mut rng, 0.3)))
            .collect();
        Volume::from_vec(m.shape(), noise).unwrap()
    });
    let rows = |s: &MemorySink, metric: &str| -> Vec<f64> {
        s.epochs
            .iter()
            .filter(|r| r.split == "val" && r.metric == metric)
            .map(|r| r.value)
            .collect()
    };
    let criterion = rows(&truth.0, "label_free");
    assert_eq!(criterion.len(), 3);
    assert!(
        criterion.iter().all(|v| v.is_finite() && *v >= 0.0),
        "{criterion:?}"
    );
    assert_eq!(criterion, rows(&noise.0, "label_free"));
    assert_eq!(truth.1, noise.1);
    assert!(truth.1.is_some());
    assert_ne!(rows(&truth.0, "dice_mean"), rows(&noise.0, "dice_mean"));
    // The evidence is recorded beside the criterion.
    for m in ["fg_golgi", "fg_ref_golgi", "size_nuclei", "size_ref_nuclei"] {
        assert_eq!(rows(&truth.0, m).len(), 3, "{m}");
    }
}
