//! Fixed, deterministic report inputs: the one place tests, golden files and the benchmark
//! get their store frames from (until they can be written through `tracking::Store`).
//!
//! [`small_sweep`] is the golden-test store: a 2-class sweep (U-Net, Vox2Vox, CycleGAN at two
//! Golgi weights; 3 folds × 2 seeds; 2 test volumes per fold) and a 3-class U-Net, with one
//! NaN precision, one failed trial (with a partial result row that must not count), one
//! running trial and one trial that never reached the store. Its metric values are built
//! around the EMBC paper's Table II and its timings around the thesis' Table 5.7.
//! [`large_sweep`] scales the same shape up for the benchmark.

use polars::prelude::*;

use super::input::{ReportInput, SliceSet};
use crate::dataset::{DatasetSpec, VolumeEntry};
use crate::volume::Volume;

/// Adds the `split_id` and `split_json` columns a store records: fold f tests volumes
/// 2f+1 and 2f+2 (as `push_trial` writes their results), validates on the next fold's first
/// test volume and trains on the rest.
fn add_splits(trials: &mut DataFrame, volumes: usize, per_fold: usize) {
    let folds: Vec<u64> = trials
        .column("fold")
        .and_then(|c| c.cast(&DataType::UInt64))
        .and_then(|c| Ok(c.u64()?.into_no_null_iter().collect()))
        .unwrap_or_default();
    let k = volumes / per_fold;
    let name = |v: usize| format!("vol{v:02}");
    let identity = |f: usize| {
        let test: Vec<usize> = (0..per_fold).map(|i| f * per_fold + i + 1).collect();
        let val = ((f + 1) % k) * per_fold + 1;
        let fold = crate::dataset::splits::Fold {
            index: f,
            train: (1..=volumes)
                .filter(|v| !test.contains(v) && *v != val)
                .map(name)
                .collect(),
            val: vec![name(val)],
            test: test.into_iter().map(name).collect(),
        };
        crate::experiment::trial::split_identity(&fold)
    };
    let (json, id): (Vec<String>, Vec<String>) =
        folds.iter().map(|f| identity(*f as usize)).unzip();
    for column in [
        Column::new("split_id".into(), id),
        Column::new("split_json".into(), json),
    ] {
        trials
            .with_column(column)
            .expect("the split columns have one value per trial");
    }
}

/// One trial to generate.
struct TrialSpec {
    id: String,
    model: &'static str,
    classes: &'static str,
    fold: u32,
    seed: u64,
    golgi_weight: Option<f64>,
    status: &'static str,
    error: Option<&'static str>,
}

/// Paper Table II means (dice, precision, recall) per (model, class); pair values from the
/// thesis' Table 5.2.
fn base(model: &str, class: &str, metric: &str) -> f64 {
    let t = match (model, class) {
        ("unet3d", "nuclei") => [0.7756, 0.8055, 0.7773],
        ("unet3d", "golgi") => [0.6834, 0.7248, 0.7353],
        ("unet3d", _) => [0.7601, 0.6941, 0.8403],
        ("vox2vox", "nuclei") => [0.7947, 0.8079, 0.8077],
        ("vox2vox", "golgi") => [0.5993, 0.6886, 0.6829],
        ("vox2vox", _) => [0.7198, 0.6763, 0.7721],
        ("cyclegan", "nuclei") => [0.7807, 0.7497, 0.8433],
        ("cyclegan", "golgi") => [0.6773, 0.6290, 0.8001],
        _ => [0.6999, 0.6711, 0.7314],
    };
    match metric {
        "dice" => t[0],
        "precision" => t[1],
        _ => t[2],
    }
}

/// Deterministic small perturbation in [-1, 1) from integers (a tiny hash).
fn jitter(parts: &[u64]) -> f64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for p in parts {
        h ^= p.wrapping_add(0x632B_E59B_D9B4_E019);
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 29;
    }
    (h >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

fn metric_value(t: &TrialSpec, volume: usize, class: &str, metric: &str, spread: f64) -> f64 {
    let mut v = base(t.model, class, metric);
    if let Some(w) = t.golgi_weight
        && class == "golgi"
    {
        v += 0.01 * (w - 3.5);
    }
    let class_id = ["nuclei", "golgi", "pair"]
        .iter()
        .position(|c| *c == class)
        .unwrap_or(3) as u64;
    let metric_id = metric.len() as u64;
    v += 0.01 * (f64::from(t.fold) - 1.0);
    v += spread
        * jitter(&[
            t.fold as u64,
            t.seed,
            volume as u64,
            class_id,
            metric_id,
            t.model.len() as u64,
        ]);
    (v * 1e4).round() / 1e4
}

/// Columns of the `epochs` table: trial, epoch, split, metric, value.
#[derive(Default)]
struct EpochRows(Vec<String>, Vec<u32>, Vec<String>, Vec<String>, Vec<f64>);

/// Columns of the `results` table: trial, volume, class, metric, value.
#[derive(Default)]
struct ResultRows(Vec<String>, Vec<String>, Vec<String>, Vec<String>, Vec<f64>);

/// Columns of the `timings` table: trial, phase, seconds.
#[derive(Default)]
struct TimingRows(Vec<String>, Vec<String>, Vec<f64>);

#[derive(Default)]
struct Frames {
    trials: Vec<(TrialSpec, i64)>,
    epochs: EpochRows,
    results: ResultRows,
    timings: TimingRows,
}

impl Frames {
    fn push_trial(&mut self, t: TrialSpec, epochs: u32, volumes_per_fold: usize, spread: f64) {
        let classes: Vec<&str> = t.classes.split(',').collect();
        let finished = t.status == "finished";
        // results: finished trials in full; a failed trial leaves one partial row
        if finished || t.status == "failed" {
            let volumes = if finished { volumes_per_fold } else { 1 };
            for k in 0..volumes {
                let volume = t.fold as usize * volumes_per_fold + k + 1;
                for class in &classes {
                    for metric in ["dice", "precision", "recall"] {
                        let value = metric_value(&t, volume, class, metric, spread);
                        self.results.0.push(t.id.clone());
                        self.results.1.push(format!("vol{volume:02}"));
                        self.results.2.push((*class).into());
                        self.results.3.push(metric.into());
                        self.results.4.push(value);
                    }
                    if finished {
                        self.results.0.push(t.id.clone());
                        self.results.1.push(format!("vol{volume:02}"));
                        self.results.2.push((*class).into());
                        self.results.3.push("hd95".into());
                        self.results.4.push(
                            (4.0 + 3.0 * jitter(&[t.fold as u64, t.seed, volume as u64])).abs(),
                        );
                    }
                }
            }
        }
        // epochs: loss terms fall, validation Dice rises; running trials stop early
        let last = if finished { epochs } else { epochs / 2 };
        let terms: &[&str] = match t.model {
            "unet3d" => &["loss"],
            "vox2vox" => &["g_loss", "d_loss"],
            _ => &["g_loss", "d_loss", "cycle_loss"],
        };
        for e in 1..=last {
            let x = f64::from(e) / f64::from(epochs.max(1));
            let wobble = 0.03 * jitter(&[t.fold as u64, t.seed, u64::from(e), 7]);
            for (i, term) in terms.iter().enumerate() {
                let v = (1.0 + i as f64) * (0.2 + 0.8 * (-3.0 * x).exp()) + wobble;
                self.epochs.0.push(t.id.clone());
                self.epochs.1.push(e);
                self.epochs.2.push("train".into());
                self.epochs.3.push((*term).into());
                self.epochs.4.push(v);
            }
            let dice = base(t.model, "nuclei", "dice") * (1.0 - 0.6 * (-4.0 * x).exp()) + wobble;
            self.epochs.0.push(t.id.clone());
            self.epochs.1.push(e);
            self.epochs.2.push("val".into());
            self.epochs.3.push("dice".into());
            self.epochs.4.push(dice);
        }
        // timings (seconds), around the thesis' Table 5.7
        if finished {
            let (synth, train) = match t.model {
                "unet3d" => (None, 66.0 * 60.0),
                "vox2vox" => (None, 74.0 * 60.0),
                _ => (Some(40.0 * 60.0), 28.6 * 3600.0),
            };
            let scale = 1.0 + 0.02 * f64::from(t.fold) - 0.02;
            let mut phases = vec![("train", train * scale), ("predict", 35.0)];
            if let Some(s) = synth {
                phases.insert(0, ("synth_masks", s));
            }
            for (phase, seconds) in phases {
                self.timings.0.push(t.id.clone());
                self.timings.1.push(phase.into());
                self.timings.2.push(seconds);
            }
        }
        let n = self.trials.len() as i64;
        self.trials.push((t, n));
    }

    fn into_input(self, sweep: &str, dataset: DatasetSpec) -> ReportInput {
        let mut events: Vec<(&TrialSpec, &'static str, i64)> = Vec::new();
        for (t, n) in &self.trials {
            events.push((t, t.status, 1000 + 10 * n));
        }
        let col_str = |f: &dyn Fn(&TrialSpec) -> String| -> Vec<String> {
            events.iter().map(|(t, _, _)| f(t)).collect()
        };
        let trials = DataFrame::new(
            events.len(),
            vec![
                Column::new("sweep".into(), vec![sweep.to_string(); events.len()]),
                Column::new("trial_id".into(), col_str(&|t| t.id.clone())),
                Column::new("attempt".into(), vec![0u32; events.len()]),
                Column::new(
                    "status".into(),
                    events.iter().map(|e| e.1.to_string()).collect::<Vec<_>>(),
                ),
                Column::new(
                    "event_ms".into(),
                    events.iter().map(|e| e.2).collect::<Vec<_>>(),
                ),
                Column::new("model".into(), col_str(&|t| t.model.to_string())),
                Column::new("classes".into(), col_str(&|t| t.classes.to_string())),
                Column::new(
                    "fold".into(),
                    events.iter().map(|e| e.0.fold).collect::<Vec<_>>(),
                ),
                Column::new(
                    "seed".into(),
                    events.iter().map(|e| e.0.seed).collect::<Vec<_>>(),
                ),
                Column::new("preset".into(), vec!["code"; events.len()]),
                Column::new("scale".into(), vec!["cpu-small"; events.len()]),
                Column::new("dataset".into(), vec![dataset.name.clone(); events.len()]),
                Column::new(
                    "error".into(),
                    events
                        .iter()
                        .map(|e| e.0.error.map(str::to_owned))
                        .collect::<Vec<_>>(),
                ),
                Column::new(
                    "param.loss.golgi_weight".into(),
                    events
                        .iter()
                        .map(|e| e.0.golgi_weight.map(|w| format!("{w:.1}")))
                        .collect::<Vec<_>>(),
                ),
            ],
        )
        .expect("fixture trials");
        let e = self.epochs;
        let n = e.0.len();
        let epochs = DataFrame::new(
            n,
            vec![
                Column::new("trial_id".into(), e.0),
                Column::new("attempt".into(), vec![0u32; n]),
                Column::new("epoch".into(), e.1),
                Column::new("split".into(), e.2),
                Column::new("metric".into(), e.3),
                Column::new("value".into(), e.4),
                Column::new("wall_s".into(), vec![1.0f64; n]),
            ],
        )
        .expect("fixture epochs");
        let r = self.results;
        let n = r.0.len();
        let results = DataFrame::new(
            n,
            vec![
                Column::new("trial_id".into(), r.0),
                Column::new("attempt".into(), vec![0u32; n]),
                Column::new("volume".into(), r.1),
                Column::new("class".into(), r.2),
                Column::new("metric".into(), r.3),
                Column::new("value".into(), r.4),
            ],
        )
        .expect("fixture results");
        let t = self.timings;
        let n = t.0.len();
        let timings = DataFrame::new(
            n,
            vec![
                Column::new("trial_id".into(), t.0),
                Column::new("attempt".into(), vec![0u32; n]),
                Column::new("phase".into(), t.1),
                Column::new("seconds".into(), t.2),
            ],
        )
        .expect("fixture timings");
        ReportInput {
            sweep: sweep.into(),
            trials,
            epochs,
            results,
            timings,
            dataset: Some(dataset),
            slices: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

fn dataset(volumes: usize) -> DatasetSpec {
    DatasetSpec {
        name: "phantom-retina".into(),
        description: None,
        image_channels: vec!["golgi".into(), "nuclei".into()],
        mask_channels: vec!["golgi".into(), "nuclei".into(), "pair".into()],
        spacing: None,
        annotation_hours_per_volume: Some(28.0),
        files: Default::default(),
        preprocess: Default::default(),
        splits: Default::default(),
        volumes: (1..=volumes)
            .map(|i| VolumeEntry {
                id: format!("vol{i:02}"),
                image: format!("images/vol{i:02}.tif").into(),
                mask: Some(format!("masks/vol{i:02}.tif").into()),
                group: None,
                annotation_hours: None,
            })
            .collect(),
    }
}

/// The golden-test store (see the module doc).
pub fn small_sweep() -> ReportInput {
    let mut f = Frames::default();
    let two = "golgi,nuclei";
    let configs: [(&'static str, &'static str, Option<f64>); 5] = [
        ("unet3d", two, None),
        ("vox2vox", two, None),
        ("cyclegan", two, Some(1.0)),
        ("cyclegan", two, Some(3.5)),
        ("unet3d", "golgi,nuclei,pair", None),
    ];
    for (ci, (model, classes, weight)) in configs.into_iter().enumerate() {
        for fold in 0..3u32 {
            for seed in 0..2u64 {
                let (status, error) = match (ci, fold, seed) {
                    (1, 2, 1) => ("failed", Some("out of memory in predict (fold 2)")),
                    (3, 2, 1) => ("running", None),
                    (4, 2, 1) => continue, // never reached the store
                    _ => ("finished", None),
                };
                let id = format!("c{ci}f{fold}s{seed}");
                f.push_trial(
                    TrialSpec {
                        id,
                        model,
                        classes,
                        fold,
                        seed,
                        golgi_weight: weight,
                        status,
                        error,
                    },
                    12,
                    2,
                    0.02,
                );
            }
        }
    }
    let mut input = f.into_input("paper-2class", dataset(6));
    add_splits(&mut input.trials, 6, 2);
    // an empty prediction: precision is undefined (NaN), never a number
    let ids = input.results.column("trial_id").unwrap().clone();
    let ids = ids.str().unwrap();
    let vols = input.results.column("volume").unwrap().clone();
    let vols = vols.str().unwrap();
    let classes = input.results.column("class").unwrap().clone();
    let classes = classes.str().unwrap();
    let metrics = input.results.column("metric").unwrap().clone();
    let metrics = metrics.str().unwrap();
    let values: Vec<f64> = input
        .results
        .column("value")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .enumerate()
        .map(|(i, v)| {
            let hit = ids.get(i) == Some("c2f2s1")
                && vols.get(i) == Some("vol06")
                && classes.get(i) == Some("golgi")
                && metrics.get(i) == Some("precision");
            if hit { f64::NAN } else { v }
        })
        .collect();
    input
        .results
        .replace("value", Column::new("value".into(), values))
        .unwrap();
    input
}

/// A sweep of about `trials` finished 2- and 3-class trials (4 models × Golgi weights ×
/// 5 folds × seeds), 2 test volumes each, 50 epochs: the benchmark input.
pub fn large_sweep(trials: usize) -> ReportInput {
    let mut f = Frames::default();
    let weights = [1.0, 2.0, 3.5, 5.0];
    let mut configs: Vec<(&'static str, &'static str, Option<f64>)> = Vec::new();
    for classes in ["golgi,nuclei", "golgi,nuclei,pair"] {
        configs.push(("unet3d", classes, None));
        configs.push(("vox2vox", classes, None));
        for w in weights {
            configs.push(("cyclegan", classes, Some(w)));
        }
    }
    let folds = 5u32;
    let seeds = (trials / (configs.len() * folds as usize)).max(1) as u64;
    let mut n = 0;
    'outer: for seed in 0..seeds {
        for (model, classes, weight) in &configs {
            for fold in 0..folds {
                if n == trials {
                    break 'outer;
                }
                f.push_trial(
                    TrialSpec {
                        id: format!("t{n:05}"),
                        model,
                        classes,
                        fold,
                        seed,
                        golgi_weight: *weight,
                        status: "finished",
                        error: None,
                    },
                    50,
                    2,
                    0.05,
                );
                n += 1;
            }
        }
    }
    f.into_input("large", dataset(10))
}

/// A small test volume with two image channels (Golgi, nuclei), its 2-class ground truth and
/// two imperfect predictions, for slice-overlay figures.
pub fn slice_set() -> SliceSet {
    let (z, y, x) = (8usize, 48usize, 64usize);
    let mut image = Volume::<f32>::zeros([2, z, y, x]);
    let mut truth = Volume::<u8>::zeros([2, z, y, x]);
    let nuclei = [(14.0, 16.0, 9.0), (30.0, 44.0, 10.0), (34.0, 20.0, 7.0)];
    for zi in 0..z {
        for yi in 0..y {
            for xi in 0..x {
                let noise = 20.0 * (jitter(&[zi as u64, yi as u64, xi as u64]) + 1.0) as f32;
                let mut nuc = noise;
                let mut gol = noise;
                for &(cy, cx, r) in &nuclei {
                    let (dy, dx) = (yi as f64 - cy, xi as f64 - cx);
                    let dz = (zi as f64 - 4.0) * 1.5;
                    if dy * dy + dx * dx + dz * dz < r * r {
                        nuc += 150.0;
                        truth.set(1, zi, yi, xi, 1);
                    }
                    let (gy, gx) = (dy + r * 0.7, dx - r * 0.5);
                    if gy * gy + gx * gx + dz * dz < (r * 0.4) * (r * 0.4) {
                        gol += 180.0;
                        truth.set(0, zi, yi, xi, 1);
                    }
                }
                image.set(0, zi, yi, xi, gol);
                image.set(1, zi, yi, xi, nuc);
            }
        }
    }
    let shifted = |dx: isize, drop_golgi: bool| {
        let mut p = Volume::<u8>::zeros([2, z, y, x]);
        for c in 0..2 {
            for zi in 0..z {
                for yi in 0..y {
                    for xi in 0..x {
                        let sx = xi as isize - dx;
                        if sx >= 0 && (sx as usize) < x && !(drop_golgi && c == 0 && yi < 20) {
                            p.set(c, zi, yi, xi, truth.get(c, zi, yi, sx as usize));
                        }
                    }
                }
            }
        }
        p
    };
    SliceSet {
        name: "vol05".into(),
        image,
        image_channels: vec!["golgi".into(), "nuclei".into()],
        classes: vec!["golgi".into(), "nuclei".into()],
        predictions: vec![
            ("U-Net".into(), shifted(2, false)),
            ("CycleGAN".into(), shifted(-1, true)),
        ],
        truth,
        z: None,
    }
}
