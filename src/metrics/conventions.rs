//! Evaluation settings ([`EvalConfig`]) and the record of conventions ([`Conventions`]) that is
//! written next to every number an evaluation produces.
//!
//! Metric values depend on choices that papers rarely state: what an empty mask scores, whether
//! Dice is smoothed, which voxels touch, what counts as a matched object, how a surface is
//! defined. seglab makes each choice a setting with one default, validates it, and copies the
//! resolved settings plus their plain-language definitions into every [`crate::metrics::Evaluation`]
//! (docs/design.md §3: state the aggregation and empty-mask conventions).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::MetricsError;
use crate::volume::Spacing;

/// What a ratio metric is when both the reference and the prediction are empty.
///
/// nnU-Net sets Dice and IoU to NaN when `tp + fp + fn == 0` and drops them from its `nanmean`
/// (docs/design.md §3); that is the default here. `One` scores a correct "nothing here"
/// as perfect, as some challenges do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyPolicy {
    /// NaN (undefined), nnU-Net's rule.
    #[default]
    Nan,
    /// 1.0 (perfect agreement on "no object").
    One,
}

impl EmptyPolicy {
    pub const ALL: [EmptyPolicy; 2] = [EmptyPolicy::Nan, EmptyPolicy::One];

    /// The value given to a ratio metric when both masks are empty.
    pub fn value(self) -> f64 {
        match self {
            EmptyPolicy::Nan => f64::NAN,
            EmptyPolicy::One => 1.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EmptyPolicy::Nan => "nan",
            EmptyPolicy::One => "one",
        }
    }
}

display_by_name!(EmptyPolicy);

impl FromStr for EmptyPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EmptyPolicy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("expected nan or one, got `{s}`"))
    }
}

/// Which neighbouring voxels belong to the same object.
///
/// Serialised as the number of neighbours (6, 18 or 26), the usual way to write it; these are
/// scipy's `generate_binary_structure(3, 1 | 2 | 3)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Connectivity {
    /// Face neighbours only (scipy's default structure for `ndimage.label`).
    Six,
    /// Faces and edges.
    Eighteen,
    /// Faces, edges and corners (scikit-image's default for `measure.label`, which nnU-Net
    /// uses for its connected-component postprocessing). The default: a thin or slightly
    /// diagonal object such as a Golgi ribbon stays one object.
    #[default]
    TwentySix,
}

impl Connectivity {
    pub const ALL: [Connectivity; 3] = [
        Connectivity::Six,
        Connectivity::Eighteen,
        Connectivity::TwentySix,
    ];

    /// The number of neighbours: 6, 18 or 26.
    pub fn neighbours(self) -> u8 {
        match self {
            Connectivity::Six => 6,
            Connectivity::Eighteen => 18,
            Connectivity::TwentySix => 26,
        }
    }
}

impl From<Connectivity> for u8 {
    fn from(c: Connectivity) -> u8 {
        c.neighbours()
    }
}

impl TryFrom<u8> for Connectivity {
    type Error = String;

    fn try_from(n: u8) -> Result<Self, Self::Error> {
        match n {
            6 => Ok(Connectivity::Six),
            18 => Ok(Connectivity::Eighteen),
            26 => Ok(Connectivity::TwentySix),
            _ => Err(format!("connectivity must be 6, 18 or 26, got {n}")),
        }
    }
}

impl fmt::Display for Connectivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.neighbours())
    }
}

impl FromStr for Connectivity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u8 = s
            .trim()
            .parse()
            .map_err(|_| format!("connectivity must be 6, 18 or 26, got `{s}`"))?;
        Connectivity::try_from(n)
    }
}

/// How predicted objects are paired with reference objects (both one-to-one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectMatching {
    /// A predicted and a reference object match when their IoU is at least `iou_threshold`
    /// (0.5 by default: at that level each object has at most one partner except for an
    /// object split into exact halves; see `matching.rs`).
    #[default]
    Iou,
    /// The rule of the Recycle-GAN nuclei paper (object-based evaluation, "a nucleus has at
    /// least 50 % overlap with its matching groundtruth"): a predicted object matches the
    /// reference object that holds at least half of its voxels; see `matching.rs`.
    Overlap50,
}

impl ObjectMatching {
    pub const ALL: [ObjectMatching; 2] = [ObjectMatching::Iou, ObjectMatching::Overlap50];

    pub fn name(self) -> &'static str {
        match self {
            ObjectMatching::Iou => "iou",
            ObjectMatching::Overlap50 => "overlap50",
        }
    }
}

display_by_name!(ObjectMatching);

impl FromStr for ObjectMatching {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectMatching::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("expected iou or overlap50, got `{s}`"))
    }
}

/// Settings of one evaluation. The defaults below are the only place they are written; the CLI
/// and the sweep runner start from `EvalConfig::default()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Value of Dice, IoU, precision, recall and the object and pair scores when both masks
    /// (or both object sets) are empty.
    pub empty: EmptyPolicy,
    /// Smoothing `s` of Dice = (2·TP + s) / (2·TP + FP + FN + s). 0 gives the plain Dice;
    /// 1 reproduces the published code's numbers (docs/published-code.md §7). IoU,
    /// precision and recall are never smoothed (the published code does not smooth them).
    pub dice_smoothing: f64,
    /// Neighbourhood of connected components (objects and pairs).
    pub connectivity: Connectivity,
    /// Objects with fewer voxels than this are removed from both masks before object matching
    /// and pairing (50, as in the Recycle-GAN nuclei paper). Voxel metrics and surface
    /// distances always use the masks as given.
    pub min_object_size: u64,
    pub matching: ObjectMatching,
    /// IoU at or above which objects (and pairs) match, in [0.5, 1]. Below 0.5 an object can
    /// have several partners and a greedy one-to-one assignment would no longer be unique.
    pub iou_threshold: f64,
    /// Voxel spacing (z, y, x) in µm; overrides the spacing the masks carry.
    pub spacing: Option<Spacing>,
    /// Compute HD95 and ASSD (the most expensive part: two distance transforms per class).
    pub surfaces: bool,
    /// Compute object metrics (connected components and matching).
    pub objects: bool,
    /// Compute nucleus–Golgi pairing metrics when the classes include golgi, nuclei and pair.
    pub pairing: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            empty: EmptyPolicy::Nan,
            dice_smoothing: 0.0,
            connectivity: Connectivity::TwentySix,
            min_object_size: 50,
            matching: ObjectMatching::Iou,
            iou_threshold: 0.5,
            spacing: None,
            surfaces: true,
            objects: true,
            pairing: true,
        }
    }
}

impl EvalConfig {
    /// The settings that reproduce the published code's voxel numbers (Dice smoothed by 1).
    pub fn published_code() -> Self {
        Self {
            dice_smoothing: 1.0,
            ..Self::default()
        }
    }

    /// Checks every field; the error names the field and the value.
    pub fn validate(&self) -> Result<(), MetricsError> {
        if !(self.dice_smoothing.is_finite() && self.dice_smoothing >= 0.0) {
            return Err(MetricsError::Config {
                field: "dice_smoothing",
                message: format!("must be a finite number >= 0, got {}", self.dice_smoothing),
            });
        }
        if !(0.5..=1.0).contains(&self.iou_threshold) {
            return Err(MetricsError::Config {
                field: "iou_threshold",
                message: format!("must be in [0.5, 1], got {}", self.iou_threshold),
            });
        }
        if let Some(s) = self.spacing {
            validate_spacing(s)?;
        }
        Ok(())
    }
}

/// A spacing must be three finite positive numbers.
pub(crate) fn validate_spacing(s: Spacing) -> Result<(), MetricsError> {
    if s.iter().all(|v| v.is_finite() && *v > 0.0) {
        Ok(())
    } else {
        Err(MetricsError::Config {
            field: "spacing",
            message: format!("must be three finite numbers > 0 (z, y, x in µm), got {s:?}"),
        })
    }
}

/// Where the spacing of an evaluation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpacingSource {
    /// `EvalConfig::spacing` (the `--spacing` option).
    Config,
    /// Both mask files declare the same spacing.
    Files,
    /// Only the reference mask declares one.
    Reference,
    /// Only the predicted mask declares one.
    Prediction,
    /// Neither: 1 µm per voxel, so distances are in voxels.
    Default,
}

impl SpacingSource {
    /// Words for tables: where the spacing came from.
    pub fn describe(self) -> &'static str {
        match self {
            SpacingSource::Config => "given",
            SpacingSource::Files => "from the files",
            SpacingSource::Reference => "from the reference file",
            SpacingSource::Prediction => "from the prediction file",
            SpacingSource::Default => "unknown: 1 µm per voxel",
        }
    }
}

/// Resolves the spacing: the configured one, else the masks' (which must agree), else 1 µm.
pub(crate) fn resolve_spacing(
    config: Option<Spacing>,
    pred: Option<Spacing>,
    reference: Option<Spacing>,
) -> Result<(Spacing, SpacingSource), MetricsError> {
    if let Some(s) = config {
        validate_spacing(s)?;
        return Ok((s, SpacingSource::Config));
    }
    let (s, source) = match (pred, reference) {
        (Some(p), Some(r)) => {
            let close = p
                .iter()
                .zip(&r)
                .all(|(a, b)| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()));
            if !close {
                return Err(MetricsError::SpacingMismatch {
                    pred: p,
                    reference: r,
                });
            }
            (r, SpacingSource::Files)
        }
        (None, Some(r)) => (r, SpacingSource::Reference),
        (Some(p), None) => (p, SpacingSource::Prediction),
        (None, None) => return Ok(([1.0; 3], SpacingSource::Default)),
    };
    validate_spacing(s)?;
    Ok((s, source))
}

/// The conventions behind the numbers of one evaluation: the resolved settings plus their
/// definitions in words. Serialised as the `conventions` object of `seglab eval --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conventions {
    /// "non-zero": every non-zero voxel of a mask channel is foreground.
    pub foreground: String,
    pub empty: EmptyPolicy,
    pub empty_rule: String,
    pub dice_smoothing: f64,
    pub dice: String,
    pub voxel_metrics: String,
    pub spacing_zyx_um: Spacing,
    pub spacing_source: SpacingSource,
    /// Set when no spacing was known (distances are then in voxels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spacing_note: Option<String>,
    pub connectivity: Connectivity,
    pub min_object_size: u64,
    pub matching: ObjectMatching,
    pub iou_threshold: f64,
    pub objects: String,
    pub surface: String,
    pub hd95: String,
    pub assd: String,
    pub pairing: String,
    /// How NaN is written in JSON output: `null` (JSON has no NaN). A metric that was not
    /// computed is absent, never null.
    pub nan_in_json: String,
}

impl Conventions {
    /// The conventions of `config` evaluated with the resolved `spacing`.
    pub fn new(config: &EvalConfig, spacing: Spacing, source: SpacingSource) -> Self {
        let empty_value = match config.empty {
            EmptyPolicy::Nan => "NaN",
            EmptyPolicy::One => "1",
        };
        let matching = match config.matching {
            ObjectMatching::Iou => format!(
                "one-to-one: a predicted and a reference object match when IoU >= {}; \
                 candidates are taken greedily by decreasing IoU, ties by lower reference \
                 label, then lower predicted label (labels number objects in raster order)",
                config.iou_threshold
            ),
            ObjectMatching::Overlap50 => "one-to-one, Recycle-GAN nuclei paper rule: a \
                 predicted object is a candidate for every reference object holding at \
                 least 50 % of its voxels; candidates are taken greedily by decreasing \
                 overlap (voxels), ties by lower reference label, then lower predicted label; \
                 a taken candidate is a true positive, an untaken predicted object a false \
                 positive, an untaken reference object a false negative"
                .to_string(),
        };
        Self {
            foreground: "non-zero".into(),
            empty: config.empty,
            empty_rule: format!(
                "a ratio with a zero denominator is NaN, except when both masks (or both \
                 object sets) are empty: Dice, IoU, precision, recall and the object and pair \
                 scores are then {empty_value}; a Dice smoothing s > 0 makes the empty Dice \
                 s/s = 1; HD95 and ASSD are NaN when either surface is empty"
            ),
            dice_smoothing: config.dice_smoothing,
            dice: "(2 TP + s) / (2 TP + FP + FN + s), s = dice_smoothing".into(),
            voxel_metrics: "over all voxels of a channel: IoU = TP / (TP + FP + FN), \
                 precision = TP / (TP + FP), recall = TP / (TP + FN), \
                 specificity = TN / (TN + FP)"
                .into(),
            spacing_zyx_um: spacing,
            spacing_source: source,
            spacing_note: (source == SpacingSource::Default).then(|| {
                "no spacing given or found in the files: 1 µm per voxel, so hd95, assd and \
                 polarity lengths are in voxels"
                    .to_string()
            }),
            connectivity: config.connectivity,
            min_object_size: config.min_object_size,
            matching: config.matching,
            iou_threshold: config.iou_threshold,
            objects: format!(
                "objects are the {}-connected components of each mask with at least {} \
                 voxels (smaller ones removed from both masks); {matching}; object precision \
                 = TP / n_pred, recall = TP / n_ref, F1 = 2 TP / (n_ref + n_pred), \
                 count_error = n_pred - n_ref, mean_iou = mean IoU of the matched pairs",
                config.connectivity, config.min_object_size
            ),
            surface: "surface = mask minus its binary erosion by the 6-connected structuring \
                 element (scipy generate_binary_structure(3, 1)), voxels outside the volume \
                 counting as background, so objects touching the border have a surface there"
                .into(),
            hd95: "95th percentile (NumPy linear interpolation) of the pooled distances of \
                 both directions: every prediction-surface voxel to the nearest \
                 reference-surface voxel and every reference-surface voxel to the nearest \
                 prediction-surface voxel, by an exact Euclidean distance transform with the \
                 voxel spacing, in µm"
                .into(),
            assd: "mean of the two directed mean surface distances (prediction to reference, \
                 reference to prediction), in µm"
                .into(),
            pairing: format!(
                "pairs are the {}-connected components (at least {} voxels) of the pair \
                 channel; a pair's nucleus is nuclei ∩ component and its Golgi is golgi ∩ \
                 component; predicted pairs match reference pairs one-to-one by IoU >= {}; \
                 polarity vector = Golgi centroid - nucleus centroid in µm (z, y, x); for \
                 matched pairs whose vectors are both defined and non-zero: angle error in \
                 degrees and absolute length error in µm, averaged",
                config.connectivity, config.min_object_size, config.iou_threshold
            ),
            nan_in_json: "null".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_follow_the_references() {
        let c = EvalConfig::default();
        c.validate().unwrap();
        assert_eq!(c.empty, EmptyPolicy::Nan);
        assert_eq!(c.min_object_size, 50);
        assert_eq!(c.iou_threshold, 0.5);
        assert_eq!(EvalConfig::published_code().dice_smoothing, 1.0);
    }

    #[test]
    fn validation_names_the_field_and_value() {
        let c = EvalConfig {
            iou_threshold: 0.3,
            ..EvalConfig::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("iou_threshold") && msg.contains("0.3"),
            "{msg}"
        );
        let c = EvalConfig {
            dice_smoothing: -1.0,
            ..EvalConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("dice_smoothing")
        );
        let c = EvalConfig {
            spacing: Some([1.0, 0.0, 1.0]),
            ..EvalConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("spacing"));
    }

    #[test]
    fn connectivity_serialises_as_neighbour_count() {
        assert_eq!(serde_json::to_string(&Connectivity::Six).unwrap(), "6");
        let c: Connectivity = serde_json::from_str("18").unwrap();
        assert_eq!(c, Connectivity::Eighteen);
        assert!(serde_json::from_str::<Connectivity>("8").is_err());
        assert_eq!(
            "26".parse::<Connectivity>().unwrap(),
            Connectivity::TwentySix
        );
        assert!("4".parse::<Connectivity>().is_err());
        assert_eq!(
            "overlap50".parse::<ObjectMatching>(),
            Ok(ObjectMatching::Overlap50)
        );
        assert_eq!("one".parse::<EmptyPolicy>(), Ok(EmptyPolicy::One));
        assert!("zero".parse::<EmptyPolicy>().is_err());
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let err = serde_json::from_str::<EvalConfig>(r#"{"min_size": 3}"#).unwrap_err();
        assert!(err.to_string().contains("min_size"), "{err}");
        let c: EvalConfig = serde_json::from_str(r#"{"min_object_size": 3}"#).unwrap();
        assert_eq!(c.min_object_size, 3);
        assert_eq!(c.connectivity, Connectivity::TwentySix);
    }

    #[test]
    fn spacing_resolution() {
        let a = Some([2.0, 1.0, 1.0]);
        let b = Some([0.5, 0.1, 0.1]);
        assert_eq!(
            resolve_spacing(b, a, a).unwrap(),
            ([0.5, 0.1, 0.1], SpacingSource::Config)
        );
        assert_eq!(
            resolve_spacing(None, a, a).unwrap(),
            ([2.0, 1.0, 1.0], SpacingSource::Files)
        );
        assert_eq!(
            resolve_spacing(None, None, b).unwrap().1,
            SpacingSource::Reference
        );
        assert_eq!(
            resolve_spacing(None, b, None).unwrap().1,
            SpacingSource::Prediction
        );
        assert_eq!(
            resolve_spacing(None, None, None).unwrap(),
            ([1.0; 3], SpacingSource::Default)
        );
        let err = resolve_spacing(None, a, b).unwrap_err().to_string();
        assert!(err.contains("spacing"), "{err}");
        // An explicit spacing settles a disagreement between the files.
        assert!(resolve_spacing(Some([1.0; 3]), a, b).is_ok());
    }

    #[test]
    fn conventions_note_a_missing_spacing() {
        let c = Conventions::new(&EvalConfig::default(), [1.0; 3], SpacingSource::Default);
        assert!(c.spacing_note.as_deref().unwrap().contains("voxels"));
        let c = Conventions::new(&EvalConfig::default(), [1.0; 3], SpacingSource::Files);
        assert!(c.spacing_note.is_none());
        assert_eq!(c.nan_in_json, "null");
    }
}
