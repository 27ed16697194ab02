//! `seglab eval`: compares a predicted mask with a reference mask and prints voxel, object,
//! surface and pairing metrics as a table or as JSON (`metrics::evaluate`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use crate::metrics::{
    ClassMetrics, Connectivity, EmptyPolicy, EvalConfig, Evaluation, ObjectMatching, ObjectMetrics,
    evaluate,
};
use crate::volume::{Spacing, Volume, read_tiff};

/// Compare a predicted mask with a reference mask.
///
/// Per class: Dice, IoU, precision, recall, specificity and the confusion
/// counts; HD95 and ASSD in µm; objects (connected components) matched
/// one-to-one. With golgi, nuclei and pair classes: pair detection and
/// the error of the nucleus-to-Golgi polarity vector. Non-zero voxels are
/// foreground. The conventions behind every number are printed with it.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    seglab eval --pred pred.tif --gt mask.tif\n  \
    seglab eval --pred p.tif --gt g.tif --classes golgi,nuclei,- --json\n  \
    seglab eval --pred golgi-nuclei.tif --gt golgi-nuclei-pair.tif\n  \
    seglab eval --pred p.tif --gt g.tif --spacing 0.5,0.1,0.1 --dice-smoothing 1")]
pub struct EvalArgs {
    /// Predicted mask (TIFF).
    #[arg(long, value_name = "FILE")]
    pub pred: PathBuf,
    /// Reference mask (TIFF) of the same shape.
    #[arg(long, value_name = "FILE")]
    pub gt: PathBuf,
    /// Class of each mask channel, in order; `-` skips a channel.
    /// Default by channel count: nuclei; golgi,nuclei; golgi,nuclei,pair.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// Class of each reference channel when the reference has other
    /// channels than the prediction (default: --classes when the counts
    /// agree, else by channel count). Classes are matched by name, so a
    /// golgi,nuclei prediction can be scored against golgi,nuclei,pair
    /// masks.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub gt_classes: Option<Vec<String>>,
    /// Voxel spacing z,y,x in µm (default: the files' own, else 1,1,1).
    #[arg(long, value_name = "Z,Y,X", value_parser = parse_spacing)]
    pub spacing: Option<Spacing>,
    /// Object connectivity: 6, 18 or 26.
    #[arg(long, value_name = "N", default_value_t = EvalConfig::default().connectivity)]
    pub connectivity: Connectivity,
    /// Drop objects under N voxels before object matching.
    #[arg(long, value_name = "N", default_value_t = EvalConfig::default().min_object_size)]
    pub min_size: u64,
    /// Object matching: iou (IoU >= threshold) or overlap50
    /// (>= 50 % of a predicted object inside a reference object).
    #[arg(long, value_name = "RULE", default_value_t = EvalConfig::default().matching)]
    pub matching: ObjectMatching,
    /// IoU threshold of object and pair matching, in [0.5, 1].
    #[arg(long, value_name = "T", default_value_t = EvalConfig::default().iou_threshold)]
    pub iou_threshold: f64,
    /// Dice smoothing s in (2TP+s)/(2TP+FP+FN+s); 1 = published code.
    #[arg(long, value_name = "S", default_value_t = EvalConfig::default().dice_smoothing)]
    pub dice_smoothing: f64,
    /// Score when both masks are empty: nan (nnU-Net) or one.
    #[arg(long, value_name = "RULE", default_value_t = EvalConfig::default().empty)]
    pub empty: EmptyPolicy,
    /// Skip HD95 and ASSD (the slowest part).
    #[arg(long)]
    pub no_surfaces: bool,
    /// Skip object metrics.
    #[arg(long)]
    pub no_objects: bool,
    /// Skip nucleus-Golgi pairing metrics.
    #[arg(long)]
    pub no_pairing: bool,
    /// Print JSON (NaN written as null) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `z,y,x` into three positive numbers (no I/O).
fn parse_spacing(s: &str) -> Result<Spacing, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let values: Vec<f64> = parts
        .iter()
        .map(|p| p.parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("expected three numbers z,y,x, got `{s}`"))?;
    match values[..] {
        [z, y, x] if values.iter().all(|v| v.is_finite() && *v > 0.0) => Ok([z, y, x]),
        _ => Err(format!("expected three numbers > 0 as z,y,x, got `{s}`")),
    }
}

impl EvalArgs {
    fn config(&self) -> EvalConfig {
        EvalConfig {
            empty: self.empty,
            dice_smoothing: self.dice_smoothing,
            connectivity: self.connectivity,
            min_object_size: self.min_size,
            matching: self.matching,
            iou_threshold: self.iou_threshold,
            spacing: self.spacing,
            surfaces: !self.no_surfaces,
            objects: !self.no_objects,
            pairing: !self.no_pairing,
        }
    }
}

/// The class names of the evaluated channels and the channels they come from.
fn resolve_classes(
    given: Option<&[String]>,
    channels: usize,
    file: &Path,
) -> anyhow::Result<(Vec<String>, Vec<usize>)> {
    let names: Vec<String> = match given {
        Some(names) => {
            if names.len() != channels {
                bail!(
                    "{}: {channels} channels but --classes names {} ({}); name every \
                     channel, `-` skips one",
                    file.display(),
                    names.len(),
                    names.join(",")
                );
            }
            names.to_vec()
        }
        None => match channels {
            1 => vec!["nuclei".into()],
            2 => vec!["golgi".into(), "nuclei".into()],
            3 => vec!["golgi".into(), "nuclei".into(), "pair".into()],
            n => bail!(
                "{}: {n} channels; name them with --classes (e.g. golgi,nuclei,-)",
                file.display()
            ),
        },
    };
    let keep: Vec<usize> = (0..channels).filter(|&c| names[c] != "-").collect();
    if keep.is_empty() {
        bail!("--classes skips every channel");
    }
    Ok((keep.iter().map(|&c| names[c].clone()).collect(), keep))
}

/// Pairs each evaluated class of the prediction with the reference channel of the same name:
/// (class names, prediction channels, reference channels), in the prediction's order.
fn match_classes(
    (pred_names, pred_channels): (Vec<String>, Vec<usize>),
    (gt_names, gt_channels): (Vec<String>, Vec<usize>),
    gt_file: &Path,
) -> anyhow::Result<(Vec<String>, Vec<usize>, Vec<usize>)> {
    let mut gt_of = Vec::with_capacity(pred_names.len());
    for name in &pred_names {
        match gt_names.iter().position(|g| g == name) {
            Some(j) => gt_of.push(gt_channels[j]),
            None => bail!(
                "{}: no channel of class `{name}` (its classes: {}); name them with \
                 --gt-classes",
                gt_file.display(),
                gt_names.join(",")
            ),
        }
    }
    Ok((pred_names, pred_channels, gt_of))
}

fn read_mask(path: &Path) -> anyhow::Result<Volume<u8>> {
    Ok(read_tiff(path)?.to_binary())
}

/// Runs `seglab eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let config = args.config();
    config.validate()?;
    let pred = read_mask(&args.pred)?;
    let gt = read_mask(&args.gt)?;
    if pred.spatial() != gt.spatial() {
        bail!(
            "{} has shape {} but {} has shape {} (C × Z × Y × X)",
            args.pred.display(),
            shape_str(pred.shape()),
            args.gt.display(),
            shape_str(gt.shape())
        );
    }
    let pred_classes = resolve_classes(args.classes.as_deref(), pred.channels(), &args.pred)?;
    let gt_names = match (&args.gt_classes, pred.channels() == gt.channels()) {
        (Some(names), _) => Some(names.as_slice()),
        (None, true) => args.classes.as_deref(),
        (None, false) => None,
    };
    let gt_classes = resolve_classes(gt_names, gt.channels(), &args.gt)?;
    let (names, pred_channels, gt_channels) = match_classes(pred_classes, gt_classes, &args.gt)?;
    let pred = pred.select_channels(&pred_channels)?;
    let gt = gt.select_channels(&gt_channels)?;
    let e = evaluate(&pred, &gt, &names, &config).with_context(|| {
        format!(
            "evaluating {} against {}",
            args.pred.display(),
            args.gt.display()
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", table(&e, &args.pred, &args.gt, gt.shape()));
    }
    Ok(ExitCode::SUCCESS)
}

fn shape_str(s: [usize; 4]) -> String {
    format!("{} × {} × {} × {}", s[0], s[1], s[2], s[3])
}

/// A table cell.
enum Cell {
    Ratio(f64),
    Count(i64),
    Missing,
}

impl Cell {
    fn render(&self) -> String {
        match self {
            Cell::Ratio(v) if v.is_nan() => "NaN".into(),
            Cell::Ratio(v) => format!("{v:.4}"),
            Cell::Count(n) => n.to_string(),
            Cell::Missing => "-".into(),
        }
    }
}

type Getter = fn(&ClassMetrics) -> Cell;

/// An object-metric cell, `-` when objects were not computed.
fn object(m: &ClassMetrics, f: fn(&ObjectMetrics) -> Cell) -> Cell {
    m.objects.as_ref().map_or(Cell::Missing, f)
}

/// The human-readable report: one column per class, then pairing and conventions.
fn table(e: &Evaluation, pred: &Path, gt: &Path, shape: [usize; 4]) -> String {
    let c = &e.conventions;
    let mut out = String::new();
    let _ = writeln!(out, "prediction  {}", pred.display());
    let _ = writeln!(out, "reference   {}", gt.display());
    let _ = writeln!(out, "shape       {} (C × Z × Y × X)", shape_str(shape));
    let _ = writeln!(
        out,
        "spacing     {} × {} × {} µm (z × y × x; {})",
        c.spacing_zyx_um[0],
        c.spacing_zyx_um[1],
        c.spacing_zyx_um[2],
        c.spacing_source.describe()
    );
    out.push('\n');
    let rows: Vec<(&str, Getter)> = vec![
        ("dice", |m| Cell::Ratio(m.voxel.dice)),
        ("iou", |m| Cell::Ratio(m.voxel.iou)),
        ("precision", |m| Cell::Ratio(m.voxel.precision)),
        ("recall", |m| Cell::Ratio(m.voxel.recall)),
        ("specificity", |m| Cell::Ratio(m.voxel.specificity)),
        ("tp", |m| Cell::Count(m.voxel.counts.tp as i64)),
        ("fp", |m| Cell::Count(m.voxel.counts.fp as i64)),
        ("fn", |m| Cell::Count(m.voxel.counts.fn_ as i64)),
        ("tn", |m| Cell::Count(m.voxel.counts.tn as i64)),
        ("hd95 (µm)", |m| m.hd95.map_or(Cell::Missing, Cell::Ratio)),
        ("assd (µm)", |m| m.assd.map_or(Cell::Missing, Cell::Ratio)),
        ("objects ref", |m| {
            object(m, |o| Cell::Count(o.n_ref as i64))
        }),
        ("objects pred", |m| {
            object(m, |o| Cell::Count(o.n_pred as i64))
        }),
        ("objects matched", |m| {
            object(m, |o| Cell::Count(o.tp as i64))
        }),
        ("object precision", |m| {
            object(m, |o| Cell::Ratio(o.precision))
        }),
        ("object recall", |m| object(m, |o| Cell::Ratio(o.recall))),
        ("object f1", |m| object(m, |o| Cell::Ratio(o.f1))),
        ("count error", |m| object(m, |o| Cell::Count(o.count_error))),
    ];
    let width = e
        .classes
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(10)
        + 2;
    let _ = write!(out, "{:<18}", "");
    for (name, _) in &e.classes {
        let _ = write!(out, "{name:>width$}");
    }
    out.push('\n');
    for (label, get) in &rows {
        let _ = write!(out, "{label:<18}");
        for (_, m) in &e.classes {
            let _ = write!(out, "{:>width$}", get(m).render());
        }
        out.push('\n');
    }
    let mut notes = Vec::new();
    if let Some(p) = &e.pairing {
        let d = &p.detection;
        notes.push(format!(
            "Pairs: {} reference, {} predicted, {} matched; precision {}, recall {}, \
             F1 {}.",
            d.n_ref,
            d.n_pred,
            d.tp,
            Cell::Ratio(d.precision).render(),
            Cell::Ratio(d.recall).render(),
            Cell::Ratio(d.f1).render()
        ));
        notes.push(format!(
            "Polarity error over {} matched pairs: angle {}°, length {} µm (means).",
            p.n_polarity,
            Cell::Ratio(p.polarity_angle_deg).render(),
            Cell::Ratio(p.polarity_length_um).render()
        ));
        notes.push(String::new());
    }
    notes.push(format!(
        "NaN = undefined; both masks empty → {} ({}); Dice smoothing {}.",
        c.empty,
        match c.empty {
            EmptyPolicy::Nan => "nnU-Net's rule",
            EmptyPolicy::One => "scored as perfect",
        },
        c.dice_smoothing
    ));
    notes.push(format!(
        "Objects: {}-connected, at least {} voxels, matched one-to-one by {}.",
        c.connectivity,
        c.min_object_size,
        match c.matching {
            ObjectMatching::Iou => format!("IoU >= {}", c.iou_threshold),
            ObjectMatching::Overlap50 => ">= 50 % of the predicted object".to_string(),
        }
    ));
    if let Some(note) = &c.spacing_note {
        notes.push(format!("Note: {note}."));
    }
    notes.push("All definitions: --json (the conventions object).".into());
    out.push('\n');
    for note in notes {
        out.push_str(&wrap(&note, 79));
    }
    out
}

/// Greedy word wrap to `width` columns; every line ends with a newline.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_parser() {
        assert_eq!(parse_spacing("2.18,1,1"), Ok([2.18, 1.0, 1.0]));
        assert_eq!(parse_spacing(" 0.5, 0.1 ,0.1"), Ok([0.5, 0.1, 0.1]));
        assert!(parse_spacing("1,1").is_err());
        assert!(parse_spacing("1,0,1").is_err());
        assert!(parse_spacing("a,b,c").is_err());
    }

    #[test]
    fn wrapping() {
        assert_eq!(wrap("a bb ccc", 4), "a bb\nccc\n");
        assert_eq!(wrap("", 10), "\n");
    }

    #[test]
    fn class_resolution() {
        let f = Path::new("g.tif");
        assert_eq!(
            resolve_classes(None, 2, f).unwrap(),
            (vec!["golgi".to_string(), "nuclei".to_string()], vec![0, 1])
        );
        assert_eq!(resolve_classes(None, 1, f).unwrap().0, vec!["nuclei"]);
        assert_eq!(resolve_classes(None, 3, f).unwrap().0[2], "pair");
        let err = resolve_classes(None, 4, f).unwrap_err().to_string();
        assert!(err.contains("g.tif") && err.contains("--classes"), "{err}");
        let given = ["golgi", "nuclei", "-"].map(String::from);
        assert_eq!(
            resolve_classes(Some(&given), 3, f).unwrap(),
            (vec!["golgi".to_string(), "nuclei".to_string()], vec![0, 1])
        );
        let err = resolve_classes(Some(&given[..2]), 3, f)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("3 channels") && err.contains("golgi,nuclei"),
            "{err}"
        );
        assert!(resolve_classes(Some(&["-".to_string()]), 1, f).is_err());
    }

    #[test]
    fn prediction_classes_are_matched_to_reference_channels_by_name() {
        let f = Path::new("g.tif");
        let two = resolve_classes(None, 2, f).unwrap();
        let three = resolve_classes(None, 3, f).unwrap();
        let names = ["golgi", "nuclei"].map(String::from).to_vec();
        assert_eq!(
            match_classes(two.clone(), three.clone(), f).unwrap(),
            (names.clone(), vec![0, 1], vec![0, 1])
        );
        // A reference stored nuclei first: the channels cross.
        let swapped =
            resolve_classes(Some(&["pair", "nuclei", "golgi"].map(String::from)), 3, f).unwrap();
        assert_eq!(
            match_classes(two.clone(), swapped, f).unwrap(),
            (names, vec![0, 1], vec![2, 1])
        );
        let nuclei_only = resolve_classes(None, 1, f).unwrap();
        let err = match_classes(two, nuclei_only, f).unwrap_err().to_string();
        assert!(
            err.contains("g.tif") && err.contains("`golgi`") && err.contains("--gt-classes"),
            "{err}"
        );
    }

    #[test]
    fn table_lists_every_class_and_the_conventions() {
        let mut v = Volume::<u8>::zeros([2, 3, 4, 5]);
        v.set(0, 1, 1, 1, 1);
        let e = evaluate(&v, &v, &["golgi", "nuclei"], &EvalConfig::default()).unwrap();
        let t = table(&e, Path::new("p.tif"), Path::new("g.tif"), v.shape());
        assert!(t.contains("golgi") && t.contains("nuclei"), "{t}");
        assert!(t.contains("NaN"), "{t}"); // the empty nuclei channel
        assert!(t.contains("26-connected, at least 50 voxels"), "{t}");
        assert!(t.contains("in voxels"), "{t}"); // no spacing known
        for line in t.lines() {
            assert!(line.chars().count() <= 79, "line too long: {line}");
        }
    }
}
