//! Metrics: how well a predicted mask agrees with a reference mask, per class, as voxels,
//! as objects, as surfaces and as nucleus–Golgi pairs.
//!
//! [`evaluate`] is the one entry point (CLI `seglab eval`, validation during training, the
//! sweep runner): it takes two [`Volume<u8>`] masks (channels = classes, non-zero =
//! foreground), the class names and an [`EvalConfig`], and returns an [`Evaluation`]: per-class
//! [`ClassMetrics`] (voxel metrics, HD95, ASSD, [`ObjectMetrics`]), optional
//! [`PairingMetrics`], and the [`Conventions`] the numbers follow. [`Evaluation::rows`] turns
//! it into the long (class, metric, value) rows of the store's `results` table.
//! [`dice_per_class`] is the cheap path for per-epoch validation.
//!
//! The parts: `voxel.rs` (confusion counts, Dice, IoU, precision, recall, specificity),
//! `components.rs` (3-D connected components, small-object removal), `matching.rs` (one-to-one
//! object matching), `edt.rs` (exact Euclidean distance transform with voxel spacing),
//! `surface.rs` (HD95, ASSD), `pairing.rs` (pair detection and polarity vectors),
//! `conventions.rs` (settings and their definitions). The published code computes only
//! smoothed Dice, precision and recall per channel (docs/published-code.md §7); the
//! object rules follow the Recycle-GAN nuclei paper and the empty-mask rule nnU-Net
//! (docs/design.md §3).
//!
//! This module does not read or write files, threshold probabilities, aggregate over volumes,
//! folds or seeds (that is `report::aggregate`, from the per-case rows), or depend on burn.
//! Non-finite values stay NaN; JSON writes them as `null`.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::volume::{Spacing, Volume};

pub mod components;
pub mod conventions;
pub mod edt;
pub mod matching;
pub mod pairing;
pub mod surface;
pub mod voxel;

pub use components::{Labels, label};
pub use conventions::{
    Connectivity, Conventions, EmptyPolicy, EvalConfig, ObjectMatching, SpacingSource,
};
pub use matching::{ObjectMetrics, match_objects};
pub use pairing::{PairMatch, PairingMetrics};
pub use surface::{SurfaceDistances, surface_distances};
pub use voxel::{Counts, VoxelMetrics, dice_per_class};

/// Errors of the metrics module.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("prediction shape {pred:?} differs from reference shape {reference:?} (C, Z, Y, X)")]
    ShapeMismatch {
        pred: [usize; 4],
        reference: [usize; 4],
    },
    #[error("the masks have {channels} channels but {names} class names were given ({list})")]
    ClassCount {
        channels: usize,
        names: usize,
        list: String,
    },
    #[error("class name `{0}` is empty or given twice")]
    ClassName(String),
    #[error("invalid evaluation setting `{field}`: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error(
        "the masks declare different voxel spacings: prediction {pred:?} µm, reference \
         {reference:?} µm (z, y, x); give the spacing explicitly"
    )]
    SpacingMismatch { pred: Spacing, reference: Spacing },
}

/// The metrics of one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    #[serde(flatten)]
    pub voxel: VoxelMetrics,
    /// µm; absent when surfaces are not computed, NaN when a mask is empty.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "nan_serde::option"
    )]
    pub hd95: Option<f64>,
    /// µm; absent when surfaces are not computed, NaN when a mask is empty.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "nan_serde::option"
    )]
    pub assd: Option<f64>,
    /// Absent when objects are not computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectMetrics>,
}

/// The result of [`evaluate`]: per-class metrics in channel order, optional pairing metrics,
/// and the conventions behind them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// (class name, metrics) in channel order; a JSON object keyed by class name.
    #[serde(with = "ordered_map")]
    pub classes: Vec<(String, ClassMetrics)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing: Option<PairingMetrics>,
    pub conventions: Conventions,
}

/// One long-format result row: the store's `results` table adds trial and volume ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub class: String,
    pub metric: String,
    pub value: f64,
}

impl Evaluation {
    /// The metrics of class `name`.
    pub fn class(&self, name: &str) -> Option<&ClassMetrics> {
        self.classes.iter().find(|(n, _)| n == name).map(|(_, m)| m)
    }

    /// Every number as a (class, metric, value) row, in a fixed order. Metric names:
    /// `dice, iou, precision, recall, specificity, tp, fp, fn, tn`; with surfaces `hd95,
    /// assd`; with objects `n_ref, n_pred, object_tp, object_fp, object_fn,
    /// object_precision, object_recall, object_f1, count_error, object_mean_iou`; pairing
    /// rows carry the class `pair`: `n_pairs_ref, n_pairs_pred, pair_tp, pair_precision,
    /// pair_recall, pair_f1, n_polarity, polarity_angle_deg, polarity_length_um`. Counts
    /// are exact as f64 up to 2^53.
    pub fn rows(&self) -> Vec<MetricRow> {
        let mut rows = Vec::new();
        let mut push = |class: &str, metric: &str, value: f64| {
            rows.push(MetricRow {
                class: class.to_string(),
                metric: metric.to_string(),
                value,
            })
        };
        for (name, m) in &self.classes {
            let v = &m.voxel;
            let c = &v.counts;
            for (metric, value) in [
                ("dice", v.dice),
                ("iou", v.iou),
                ("precision", v.precision),
                ("recall", v.recall),
                ("specificity", v.specificity),
                ("tp", c.tp as f64),
                ("fp", c.fp as f64),
                ("fn", c.fn_ as f64),
                ("tn", c.tn as f64),
            ] {
                push(name, metric, value);
            }
            if let Some(h) = m.hd95 {
                push(name, "hd95", h);
            }
            if let Some(a) = m.assd {
                push(name, "assd", a);
            }
            if let Some(o) = &m.objects {
                for (metric, value) in [
                    ("n_ref", o.n_ref as f64),
                    ("n_pred", o.n_pred as f64),
                    ("object_tp", o.tp as f64),
                    ("object_fp", o.fp as f64),
                    ("object_fn", o.fn_ as f64),
                    ("object_precision", o.precision),
                    ("object_recall", o.recall),
                    ("object_f1", o.f1),
                    ("count_error", o.count_error as f64),
                    ("object_mean_iou", o.mean_iou),
                ] {
                    push(name, metric, value);
                }
            }
        }
        if let Some(p) = &self.pairing {
            let d = &p.detection;
            for (metric, value) in [
                ("n_pairs_ref", d.n_ref as f64),
                ("n_pairs_pred", d.n_pred as f64),
                ("pair_tp", d.tp as f64),
                ("pair_precision", d.precision),
                ("pair_recall", d.recall),
                ("pair_f1", d.f1),
                ("n_polarity", p.n_polarity as f64),
                ("polarity_angle_deg", p.polarity_angle_deg),
                ("polarity_length_um", p.polarity_length_um),
            ] {
                push(PAIR, metric, value);
            }
        }
        rows
    }
}

/// Class names that switch on pairing when all three are present.
const GOLGI: &str = "golgi";
const NUCLEI: &str = "nuclei";
const PAIR: &str = "pair";

/// Evaluates `pred` against `gt` (same shape; channel `c` is class `classes[c]`).
///
/// Channels are evaluated in parallel; every sum is over integers or in a fixed order, so the
/// result does not depend on the number of threads. Pairing runs when `config.pairing` is set
/// and the classes include `golgi`, `nuclei` and `pair`.
pub fn evaluate<S: AsRef<str>>(
    pred: &Volume<u8>,
    gt: &Volume<u8>,
    classes: &[S],
    config: &EvalConfig,
) -> Result<Evaluation, MetricsError> {
    config.validate()?;
    if pred.shape() != gt.shape() {
        return Err(MetricsError::ShapeMismatch {
            pred: pred.shape(),
            reference: gt.shape(),
        });
    }
    let names: Vec<&str> = classes.iter().map(|s| s.as_ref()).collect();
    if names.len() != gt.channels() {
        return Err(MetricsError::ClassCount {
            channels: gt.channels(),
            names: names.len(),
            list: names.join(","),
        });
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() || names[..i].contains(n) {
            return Err(MetricsError::ClassName(n.to_string()));
        }
    }
    let (spacing, source) = conventions::resolve_spacing(config.spacing, pred.spacing, gt.spacing)?;
    let shape = gt.spatial();
    let index = |name: &str| names.iter().position(|n| *n == name);
    let pair_channels = match (index(GOLGI), index(NUCLEI), index(PAIR)) {
        (Some(g), Some(n), Some(p)) if config.pairing => Some([g, n, p]),
        _ => None,
    };

    struct PerClass {
        metrics: ClassMetrics,
        /// Filtered labels (prediction, reference) and removed counts (reference,
        /// prediction), kept for the pair channel.
        labels: Option<(Labels, Labels, (u64, u64))>,
    }
    let per_class: Vec<PerClass> = (0..names.len())
        .into_par_iter()
        .map(|c| {
            let (p, g) = (pred.channel(c), gt.channel(c));
            let voxel = Counts::of(p, g).metrics(config.dice_smoothing, config.empty);
            let is_pair = pair_channels.is_some_and(|[_, _, pc]| pc == c);
            let labels = (config.objects || is_pair).then(|| {
                let (lp, lg) = rayon::join(
                    || label(p, shape, config.connectivity),
                    || label(g, shape, config.connectivity),
                );
                let (fp, fg) = (
                    lp.without_smaller_than(config.min_object_size),
                    lg.without_smaller_than(config.min_object_size),
                );
                let removed = (
                    (lg.count() - fg.count()) as u64,
                    (lp.count() - fp.count()) as u64,
                );
                (fp, fg, removed)
            });
            let objects = match (&labels, config.objects) {
                (Some((lp, lg, removed)), true) => Some(ObjectMetrics::from_matching(
                    &match_objects(lp, lg, config.matching, config.iou_threshold),
                    config.empty,
                    *removed,
                )),
                _ => None,
            };
            let surf = config
                .surfaces
                .then(|| surface_distances(p, g, shape, spacing));
            PerClass {
                metrics: ClassMetrics {
                    voxel,
                    hd95: surf.map(|s| s.hd95),
                    assd: surf.map(|s| s.assd),
                    objects,
                },
                labels: labels.filter(|_| is_pair),
            }
        })
        .collect();

    let pairing = pair_channels.map(|[g, n, p]| {
        let (lp, lg, removed) = per_class[p]
            .labels
            .as_ref()
            .expect("labels are kept for the pair channel");
        pairing::evaluate_pairing(
            &pairing::PairInputs {
                golgi: pred.channel(g),
                nuclei: pred.channel(n),
                pairs: lp,
            },
            &pairing::PairInputs {
                golgi: gt.channel(g),
                nuclei: gt.channel(n),
                pairs: lg,
            },
            spacing,
            config.iou_threshold,
            config.empty,
            *removed,
        )
    });
    Ok(Evaluation {
        classes: names
            .iter()
            .map(|n| n.to_string())
            .zip(per_class.into_iter().map(|p| p.metrics))
            .collect(),
        pairing,
        conventions: Conventions::new(config, spacing, source),
    })
}

/// Voxel metrics of every channel (no objects, no surfaces): the cheap path for validation
/// during training when more than Dice is wanted.
pub fn voxel_metrics(
    pred: &Volume<u8>,
    gt: &Volume<u8>,
    config: &EvalConfig,
) -> Result<Vec<VoxelMetrics>, MetricsError> {
    config.validate()?;
    if pred.shape() != gt.shape() {
        return Err(MetricsError::ShapeMismatch {
            pred: pred.shape(),
            reference: gt.shape(),
        });
    }
    Ok((0..gt.channels())
        .into_par_iter()
        .map(|c| {
            Counts::of(pred.channel(c), gt.channel(c)).metrics(config.dice_smoothing, config.empty)
        })
        .collect())
}

/// Serde helpers that write NaN as JSON `null` and read `null` back as NaN.
pub(crate) mod nan_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    /// For `Option<f64>` fields that are absent when not computed and `null` when NaN.
    pub mod option {
        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => super::serialize(v, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }

    /// For `[f64; 3]` vectors.
    pub mod array {
        use serde::ser::SerializeTuple;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &[f64; 3], s: S) -> Result<S::Ok, S::Error> {
            let mut t = s.serialize_tuple(3)?;
            for x in v {
                t.serialize_element(&x.is_finite().then_some(*x))?;
            }
            t.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[f64; 3], D::Error> {
            let v = <[Option<f64>; 3]>::deserialize(d)?;
            Ok(v.map(|x| x.unwrap_or(f64::NAN)))
        }
    }
}

/// Panics unless `len` values fill a volume of `shape` (Z, Y, X); `what` names the values in
/// the message. Callers pass channels of a checked [`crate::volume::Volume`], so a mismatch is
/// a bug.
pub(crate) fn assert_fills(len: usize, shape: [usize; 3], what: &str) {
    assert_eq!(
        len,
        shape.iter().product::<usize>(),
        "{what} does not match {shape:?}"
    );
}

/// Serde for `Vec<(String, T)>` as a JSON object that keeps the order.
mod ordered_map {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &[(String, T)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<Vec<(String, T)>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Vec<(String, T)>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object keyed by class name")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A [C, 4, 5, 6] volume with a box per channel.
    fn boxes(boxes: &[([usize; 3], [usize; 3])]) -> Volume<u8> {
        let mut v = Volume::zeros([boxes.len(), 4, 5, 6]);
        for (c, (lo, hi)) in boxes.iter().enumerate() {
            for z in lo[0]..hi[0] {
                for y in lo[1]..hi[1] {
                    for x in lo[2]..hi[2] {
                        v.set(c, z, y, x, 1);
                    }
                }
            }
        }
        v
    }

    fn small_objects() -> EvalConfig {
        EvalConfig {
            min_object_size: 1,
            ..EvalConfig::default()
        }
    }

    #[test]
    fn evaluate_two_classes_by_hand() {
        // golgi: prediction 2×2×2 cube, reference the same cube shifted by one in x;
        // nuclei: identical 2×3×3 boxes.
        let pred = boxes(&[([1, 1, 1], [3, 3, 3]), ([0, 0, 0], [2, 3, 3])]);
        let gt = boxes(&[([1, 1, 2], [3, 3, 4]), ([0, 0, 0], [2, 3, 3])]);
        let e = evaluate(&pred, &gt, &["golgi", "nuclei"], &small_objects()).unwrap();
        let g = e.class("golgi").unwrap();
        assert_eq!(
            g.voxel.counts,
            Counts {
                tp: 4,
                fp: 4,
                fn_: 4,
                tn: 108
            }
        );
        assert_eq!(g.voxel.dice, 0.5);
        // Every surface voxel is 0 or 1 µm from the other surface (each cube is all surface).
        assert_eq!(g.hd95, Some(1.0));
        assert_eq!(g.assd, Some(0.5));
        let o = g.objects.as_ref().unwrap();
        // IoU 4/12 < 0.5: no match.
        assert_eq!((o.n_ref, o.n_pred, o.tp), (1, 1, 0));
        let n = e.class("nuclei").unwrap();
        assert_eq!(n.voxel.dice, 1.0);
        assert_eq!((n.hd95, n.assd), (Some(0.0), Some(0.0)));
        assert_eq!(n.objects.as_ref().unwrap().f1, 1.0);
        assert!(e.pairing.is_none());
        assert_eq!(e.conventions.spacing_source, SpacingSource::Default);
    }

    #[test]
    fn min_object_size_removes_small_objects_from_both_masks() {
        // 8-voxel cubes are below the default 50 voxels: no objects at all.
        let pred = boxes(&[([1, 1, 1], [3, 3, 3])]);
        let e = evaluate(&pred, &pred, &["nuclei"], &EvalConfig::default()).unwrap();
        let o = e.classes[0].1.objects.as_ref().unwrap();
        assert_eq!(
            (o.n_ref, o.n_pred, o.removed_ref, o.removed_pred),
            (0, 0, 1, 1)
        );
        assert!(o.f1.is_nan());
        // Voxel metrics and surfaces use the masks as given.
        assert_eq!(e.classes[0].1.voxel.dice, 1.0);
        assert_eq!(e.classes[0].1.hd95, Some(0.0));
    }

    #[test]
    fn input_errors() {
        let a = boxes(&[([0, 0, 0], [1, 1, 1])]);
        let b = Volume::<u8>::zeros([1, 4, 5, 7]);
        let err = evaluate(&a, &b, &["nuclei"], &EvalConfig::default()).unwrap_err();
        assert!(err.to_string().contains("[1, 4, 5, 7]"), "{err}");
        let err = evaluate(&a, &a, &["golgi", "nuclei"], &EvalConfig::default()).unwrap_err();
        assert!(
            err.to_string().contains("1 channels but 2 class names"),
            "{err}"
        );
        let two = boxes(&[([0, 0, 0], [1, 1, 1]); 2]);
        assert!(evaluate(&two, &two, &["a", "a"], &EvalConfig::default()).is_err());
        let a1 = a.clone().with_spacing(Some([1.0, 1.0, 1.0]));
        let a2 = a.clone().with_spacing(Some([2.0, 1.0, 1.0]));
        let err = evaluate(&a1, &a2, &["nuclei"], &EvalConfig::default()).unwrap_err();
        assert!(matches!(err, MetricsError::SpacingMismatch { .. }), "{err}");
    }

    #[test]
    fn pairing_runs_with_three_named_classes() {
        // golgi at x 4..6, nuclei at x 0..2, pair = x 0..6, same in both masks.
        let v = boxes(&[
            ([0, 0, 4], [4, 5, 6]),
            ([0, 0, 0], [4, 5, 2]),
            ([0, 0, 0], [4, 5, 6]),
        ]);
        let e = evaluate(&v, &v, &["golgi", "nuclei", "pair"], &EvalConfig::default()).unwrap();
        let p = e.pairing.as_ref().unwrap();
        assert_eq!((p.detection.tp, p.n_polarity), (1, 1));
        assert_eq!((p.polarity_angle_deg, p.polarity_length_um), (0.0, 0.0));
        // The pair channel is still a class of its own.
        assert_eq!(e.class("pair").unwrap().voxel.dice, 1.0);
        let rows = e.rows();
        assert!(
            rows.iter()
                .any(|r| r.class == "pair" && r.metric == "pair_f1" && r.value == 1.0)
        );
        // Switched off, or without the three names, there is no pairing.
        let off = EvalConfig {
            pairing: false,
            ..EvalConfig::default()
        };
        assert!(
            evaluate(&v, &v, &["golgi", "nuclei", "pair"], &off)
                .unwrap()
                .pairing
                .is_none()
        );
        assert!(
            evaluate(&v, &v, &["a", "b", "c"], &EvalConfig::default())
                .unwrap()
                .pairing
                .is_none()
        );
    }

    #[test]
    fn rows_and_json_round_trip() {
        let pred = boxes(&[([1, 1, 1], [3, 3, 3]), ([0, 0, 0], [0, 0, 0])]);
        let gt = boxes(&[([1, 1, 2], [3, 3, 4]), ([0, 0, 0], [0, 0, 0])]);
        let e = evaluate(&pred, &gt, &["golgi", "nuclei"], &small_objects()).unwrap();
        let rows = e.rows();
        let metric = |class: &str, m: &str| {
            rows.iter()
                .find(|r| r.class == class && r.metric == m)
                .unwrap_or_else(|| panic!("no row {class}/{m}"))
                .value
        };
        assert_eq!(metric("golgi", "dice"), 0.5);
        assert_eq!(metric("golgi", "tn"), 108.0);
        assert!(metric("nuclei", "dice").is_nan());
        assert!(metric("nuclei", "hd95").is_nan());
        assert_eq!(metric("nuclei", "count_error"), 0.0);
        assert_eq!(rows.len(), 2 * (9 + 2 + 10));

        let json = serde_json::to_string(&e).unwrap();
        // Classes keep channel order; NaN is null.
        assert!(json.find("\"golgi\"").unwrap() < json.find("\"nuclei\"").unwrap());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["classes"]["nuclei"]["dice"], serde_json::Value::Null);
        assert_eq!(v["classes"]["golgi"]["fn"], 4);
        assert_eq!(v["classes"]["golgi"]["objects"]["n_ref"], 1);
        assert_eq!(v["conventions"]["nan_in_json"], "null");
        let back: Evaluation = serde_json::from_str(&json).unwrap();
        // NaN != NaN, so compare what the round trip writes again.
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        assert_eq!(back.classes[0].1.voxel, e.classes[0].1.voxel);
        assert!(back.classes[1].1.voxel.dice.is_nan());
        assert!(back.classes[1].1.hd95.unwrap().is_nan());

        // Without surfaces the fields are absent, not null.
        let cfg = EvalConfig {
            surfaces: false,
            objects: false,
            ..EvalConfig::default()
        };
        let e = evaluate(&pred, &gt, &["golgi", "nuclei"], &cfg).unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert!(v["classes"]["golgi"].get("hd95").is_none());
        assert!(v["classes"]["golgi"].get("objects").is_none());
        assert_eq!(e.rows().len(), 2 * 9);
    }

    #[test]
    fn voxel_metrics_and_published_smoothing() {
        let pred = boxes(&[([1, 1, 1], [3, 3, 3])]);
        let gt = boxes(&[([1, 1, 2], [3, 3, 4])]);
        let m = voxel_metrics(&pred, &gt, &EvalConfig::published_code()).unwrap();
        assert_eq!(m[0].dice, 9.0 / 17.0);
        let d = dice_per_class(pred.data(), gt.data(), 1, 0.0, EmptyPolicy::Nan);
        assert_eq!(d, vec![0.5]);
    }
}
