//! Learning curves: per model, one panel per (split, metric) — every loss term and the
//! validation Dice — with the mean line and a ± std band over folds (or whatever aggregation
//! the report uses), one line per configuration of the model.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, Figure, LABEL, TICK, TITLE, band_extent, err, text};
use crate::report::ReportError;
use crate::report::aggregate::{Aggregation, aggregate, polars_error};
use crate::report::input::{f64_column, string_column, u64_column};
use crate::report::prepare::{Prepared, Task, higher_is_better, metric_label, model_label};
use crate::train::driver::{LABEL_FREE, THRESHOLD_PREFIX};
use polars::prelude::*;

/// One line with its band.
#[derive(Clone, Debug)]
pub struct Curve {
    pub label: String,
    pub color: RGBColor,
    /// (epoch, mean, std) — std `None` where fewer than two units remain.
    pub points: Vec<(f64, f64, Option<f64>)>,
}

#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub curves: Vec<Curve>,
}

/// The learning-curve figure of one model.
#[derive(Clone, Debug)]
pub struct LearningCurves {
    pub title: String,
    pub panels: Vec<Panel>,
    pub legend: Vec<(String, RGBColor)>,
}

const WIDTH: u32 = 1200;
const PANEL_H: u32 = 340;

impl LearningCurves {
    /// The curves of `model` in `task`, aggregated per (configuration, split, metric, epoch).
    pub(crate) fn build(
        prep: &Prepared,
        task: &Task,
        model: &str,
        aggregation: Aggregation,
    ) -> Result<Option<Self>, ReportError> {
        if prep.curves.height() == 0 {
            return Ok(None);
        }
        let rows = prep.task_curves(&task.key, col("model").eq(lit(model.to_string())))?;
        if rows.height() == 0 {
            return Ok(None);
        }
        let stats = aggregate(&rows, &["config", "split", "metric", "epoch"], aggregation)?;
        let e = polars_error("epochs");
        let configs = string_column(&stats, "config").map_err(&e)?;
        let splits = string_column(&stats, "split").map_err(&e)?;
        let metrics = string_column(&stats, "metric").map_err(&e)?;
        let epochs = u64_column(&stats, "epoch").map_err(&e)?;
        let means = f64_column(&stats, "mean").map_err(&e)?;
        let stds = f64_column(&stats, "std").map_err(&e)?;

        let config_order: Vec<String> = prep
            .configs_of(&task.key)
            .into_iter()
            .filter(|c| c.model == model)
            .map(|c| c.label.clone())
            .collect();
        let mut keys: Vec<(String, String)> = Vec::new();
        for i in 0..stats.height() {
            let k = (
                splits[i].clone().unwrap_or_default(),
                metrics[i].clone().unwrap_or_default(),
            );
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        // training terms first, then validation
        keys.sort_by_key(|(s, m)| (s != "train", s.clone(), m.clone()));
        let mut panels = Vec::new();
        for (split, metric) in &keys {
            let mut curves = Vec::new();
            for (ci, label) in config_order.iter().enumerate() {
                let mut points = Vec::new();
                for i in 0..stats.height() {
                    if configs[i].as_deref() == Some(label.as_str())
                        && splits[i].as_deref() == Some(split.as_str())
                        && metrics[i].as_deref() == Some(metric.as_str())
                        && let (Some(ep), Some(m)) = (epochs[i], means[i])
                    {
                        points.push((ep as f64, m, stds[i]));
                    }
                }
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                if !points.is_empty() {
                    curves.push(Curve {
                        label: label.clone(),
                        color: style::color(ci),
                        points,
                    });
                }
            }
            let direction = curve_direction(metric);
            panels.push(Panel {
                title: format!("{split}: {} ({direction})", metric_label(metric)),
                y_label: format!("{} (unitless)", metric_label(metric)),
                curves,
            });
        }
        let legend = config_order
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), style::color(i)))
            .collect();
        Ok(Some(Self {
            title: format!(
                "Learning curves — {}, {} (mean ± std band over {})",
                model_label(model),
                task.name,
                aggregation.describe_per_epoch().0
            ),
            panels,
            legend,
        }))
    }

    fn layout(&self) -> (usize, u32, u32) {
        let cols = self.panels.len().clamp(1, 3);
        let rows = self.panels.len().div_ceil(cols).max(1) as u32;
        let legend_h = 12 + 24 * style::legend_rows(&self.legend, WIDTH);
        (cols, rows, legend_h)
    }
}

impl Figure for LearningCurves {
    fn size(&self) -> (u32, u32) {
        let (_, rows, legend_h) = self.layout();
        (WIDTH, 50 + legend_h + rows * PANEL_H)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (cols, _, legend_h) = self.layout();
        let (title, rest) = area.split_vertically(50);
        title.titled(&self.title, text(TITLE)).map_err(err)?;
        let (legend, body) = rest.split_vertically(legend_h);
        style::legend(&legend, &self.legend)?;
        for (panel, sub) in self
            .panels
            .iter()
            .zip(style::grid(&body, self.panels.len(), cols))
        {
            draw_panel(panel, &sub)?;
        }
        Ok(())
    }
}

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), String> {
    let Some((x0, mut x1, y0, y1)) = band_extent(panel.curves.iter().flat_map(|c| &c.points))
    else {
        return Ok(());
    };
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, text(LABEL))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("Epoch")
        .y_desc(panel.y_label.as_str())
        .axis_desc_style(text(TICK + 1.0))
        .label_style(text(TICK))
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&style::tick)
        .x_labels(8)
        .y_labels(6)
        .draw()
        .map_err(err)?;
    for c in &panel.curves {
        let band: Vec<(f64, f64, f64)> = c
            .points
            .iter()
            .filter_map(|&(x, m, s)| s.map(|s| (x, m - s, m + s)))
            .collect();
        if band.len() >= 2 {
            let mut poly: Vec<(f64, f64)> = band.iter().map(|&(x, _, hi)| (x, hi)).collect();
            poly.extend(band.iter().rev().map(|&(x, lo, _)| (x, lo)));
            chart
                .draw_series(std::iter::once(Polygon::new(
                    poly,
                    c.color.mix(0.22).filled(),
                )))
                .map_err(err)?;
        }
        chart
            .draw_series(LineSeries::new(
                c.points.iter().map(|&(x, m, _)| (x, m)),
                c.color.stroke_width(2),
            ))
            .map_err(err)?;
    }
    Ok(())
}

/// What a panel's metric says, for its title: which way is better, or what it is for when
/// neither is (a GAN's adversarial terms, the label-free criterion's evidence).
fn curve_direction(metric: &str) -> &'static str {
    let adversarial = metric.starts_with("d_") || metric.ends_with("_adversarial");
    if metric.ends_with("_spread") {
        "collapse diagnostic"
    } else if metric.starts_with(THRESHOLD_PREFIX) {
        "chosen on the validation volumes"
    } else if metric.starts_with("fg_") || metric.starts_with("size_") {
        "label-free evidence: predicted, or synthetic for _ref"
    } else if metric == LABEL_FREE {
        "label-free criterion, lower is better"
    } else if adversarial {
        "adversarial term"
    } else if higher_is_better(metric) {
        "higher is better"
    } else {
        "lower is better"
    }
}

#[cfg(test)]
mod tests {
    use super::curve_direction;

    #[test]
    fn panel_titles_say_which_way_is_better_or_what_a_metric_is() {
        assert_eq!(curve_direction("dice_golgi"), "higher is better");
        assert_eq!(curve_direction("loss_g_ab_cycle"), "lower is better");
        assert_eq!(
            curve_direction("label_free"),
            "label-free criterion, lower is better"
        );
        for gan in [
            "d_a_fake",
            "d_b_real",
            "g_ab_adversarial",
            "loss_g_ab_adversarial",
        ] {
            assert_eq!(curve_direction(gan), "adversarial term", "{gan}");
        }
        for evidence in ["fg_golgi", "fg_ref_nuclei", "size_golgi", "size_ref_nuclei"] {
            assert!(
                curve_direction(evidence).starts_with("label-free evidence"),
                "{evidence}"
            );
        }
        assert_eq!(curve_direction("output_spread"), "collapse diagnostic");
    }
}
