//! Metric versus a swept parameter (e.g. Dice per class vs the CycleGAN Golgi weight or the
//! Vox2Vox Dice β): one panel per (metric, class), one line per model (and value of any other
//! swept key), mean with ± std error bars from [`aggregate`].
//!
//! A continuous key (drawn by a random or Sobol `[search]`: numbers, at least
//! [`CONTINUOUS_VALUES`] of them, or no value shared by two configurations of a model while
//! other keys vary with it) is a
//! scatter instead: one point per configuration (its mean over folds and seeds) against the
//! key, one colour per model, no lines and no error bars — the other drawn keys vary from point
//! to point, so neither a line through the points nor a spread per value means anything.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::*;

use super::style::{self, Figure, LABEL, TICK, TITLE, band_extent, err, text};
use crate::report::ReportError;
use crate::report::aggregate::{Aggregation, aggregate, polars_error};
use crate::report::input::{f64_column, string_column};
use crate::report::prepare::{
    Config, Prepared, Task, class_label, compare_values, metric_label, model_label,
};

#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    /// (x, mean, std)
    pub points: Vec<(f64, f64, Option<f64>)>,
}

#[derive(Clone, Debug)]
pub struct SweepPanel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// The sweep figure of one swept key.
#[derive(Clone, Debug)]
pub struct SweepPlot {
    pub title: String,
    pub x_label: String,
    /// Tick labels when the values are not numbers (x = 0, 1, …).
    pub categories: Option<Vec<String>>,
    pub panels: Vec<SweepPanel>,
    pub cols: usize,
    pub legend: Vec<(String, RGBColor)>,
    /// A continuous key (module doc): points only.
    pub scatter: bool,
}

/// Distinct numeric values from which a swept key counts as continuous.
pub const CONTINUOUS_VALUES: usize = 8;

/// Whether the numeric values of `key` over `configs` make a continuous key (module doc).
fn is_continuous(values: &[String], numeric: bool, configs: &[&Config], key: &str) -> bool {
    if !numeric || values.len() < 2 {
        return false;
    }
    if values.len() >= CONTINUOUS_VALUES {
        return true;
    }
    // No value of the key shared by two configurations of one model …
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for c in configs {
        if let Some((_, v)) = c.params.iter().find(|(k, _)| k == key) {
            let pair = (c.model.as_str(), v.as_str());
            if seen.contains(&pair) {
                return false;
            }
            seen.push(pair);
        }
    }
    // … and other keys vary with it (a one-key grid also lists each value once).
    configs.iter().any(|c| c.params.len() > 1)
}

const PANEL_W: u32 = 420;
const PANEL_H: u32 = 330;

impl SweepPlot {
    pub(crate) fn build(
        prep: &Prepared,
        task: &Task,
        key: &str,
        metrics: &[String],
        aggregation: Aggregation,
    ) -> Result<Option<Self>, ReportError> {
        let configs: Vec<_> = prep
            .configs_of(&task.key)
            .into_iter()
            .filter(|c| c.params.iter().any(|(k, _)| k == key))
            .collect();
        if configs.is_empty() {
            return Ok(None);
        }
        let rows = prep.task_cases(&task.key, col(format!("param:{key}")).is_not_null())?;
        if rows.height() == 0 {
            return Ok(None);
        }
        let stats = aggregate(&rows, &["config", "class", "metric"], aggregation)?;
        let e = polars_error("aggregate");
        let s_config = string_column(&stats, "config").map_err(&e)?;
        let s_class = string_column(&stats, "class").map_err(&e)?;
        let s_metric = string_column(&stats, "metric").map_err(&e)?;
        let s_mean = f64_column(&stats, "mean").map_err(&e)?;
        let s_std = f64_column(&stats, "std").map_err(&e)?;

        let mut values: Vec<String> = configs
            .iter()
            .filter_map(|c| {
                c.params
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            })
            .collect();
        values.sort_by(|a, b| compare_values(a, b));
        values.dedup();
        let numeric = values.iter().all(|v| v.parse::<f64>().is_ok());
        let scatter = is_continuous(&values, numeric, &configs, key);
        let x_of = |v: &str| -> f64 {
            if numeric {
                v.parse().unwrap_or(0.0)
            } else {
                values.iter().position(|x| x == v).unwrap_or(0) as f64
            }
        };
        // series: model + the values of the other swept keys
        let mut series_of: BTreeMap<String, Vec<(&str, f64)>> = BTreeMap::new();
        let mut series_order: Vec<String> = Vec::new();
        for c in &configs {
            let others: Vec<String> = c
                .params
                .iter()
                .filter(|(k, _)| k != key)
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            let label = if others.is_empty() || scatter {
                model_label(&c.model)
            } else {
                format!("{} ({})", model_label(&c.model), others.join(", "))
            };
            let x = c
                .params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| x_of(v))
                .unwrap_or(0.0);
            if !series_order.contains(&label) {
                series_order.push(label.clone());
            }
            series_of.entry(label).or_default().push((&c.label, x));
        }
        let present: Vec<&String> = metrics
            .iter()
            .filter(|m| s_metric.iter().any(|x| x.as_deref() == Some(m.as_str())))
            .collect();
        let mut panels = Vec::new();
        for m in &present {
            for class in &task.classes {
                let mut series = Vec::new();
                for (si, label) in series_order.iter().enumerate() {
                    let mut points = Vec::new();
                    for &(config, x) in &series_of[label] {
                        if let Some(i) = (0..stats.height()).find(|&i| {
                            s_config[i].as_deref() == Some(config)
                                && s_class[i].as_deref() == Some(class.as_str())
                                && s_metric[i].as_deref() == Some(m.as_str())
                        }) && let Some(mean) = s_mean[i]
                        {
                            points.push((x, mean, if scatter { None } else { s_std[i] }));
                        }
                    }
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    if !points.is_empty() {
                        series.push(Series {
                            label: label.clone(),
                            color: style::color(si),
                            points,
                        });
                    }
                }
                panels.push(SweepPanel {
                    title: format!("{} — {}", metric_label(m), class_label(class)),
                    y_label: format!("{} (unitless)", metric_label(m)),
                    series,
                });
            }
        }
        if panels.is_empty() {
            return Ok(None);
        }
        let what = if scatter {
            "one point per configuration: its mean"
        } else {
            "mean ± std"
        };
        Ok(Some(Self {
            title: format!(
                "Metric vs {key} — {} ({what}, {})",
                task.name,
                aggregation.name()
            ),
            x_label: format!("{key} (value as configured)"),
            categories: (!numeric).then_some(values),
            cols: task.classes.len().max(1),
            panels,
            legend: series_order
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), style::color(i)))
                .collect(),
            scatter,
        }))
    }

    fn legend_h(&self) -> u32 {
        12 + 24 * style::legend_rows(&self.legend, self.size().0)
    }
}

impl Figure for SweepPlot {
    fn size(&self) -> (u32, u32) {
        let rows = self.panels.len().div_ceil(self.cols).max(1) as u32;
        let w = PANEL_W * self.cols as u32;
        let legend_h = 12 + 24 * style::legend_rows(&self.legend, w);
        (w, 50 + legend_h + rows * PANEL_H)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (title, rest) = area.split_vertically(50);
        title.titled(&self.title, text(TITLE)).map_err(err)?;
        let (legend, body) = rest.split_vertically(self.legend_h());
        style::legend(&legend, &self.legend)?;
        for (panel, sub) in self
            .panels
            .iter()
            .zip(style::grid(&body, self.panels.len(), self.cols))
        {
            self.draw_panel(panel, &sub)?;
        }
        Ok(())
    }
}

impl SweepPlot {
    fn draw_panel<DB: DrawingBackend>(
        &self,
        panel: &SweepPanel,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), String> {
        let Some((x0, x1, y0, y1)) = band_extent(panel.series.iter().flat_map(|s| &s.points))
        else {
            return Ok(());
        };
        let xpad = ((x1 - x0) * 0.08).max(0.5);
        let ypad = ((y1 - y0) * 0.1).max(0.005);
        let categories = self.categories.clone();
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, text(LABEL))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d((x0 - xpad)..(x1 + xpad), (y0 - ypad)..(y1 + ypad))
            .map_err(err)?;
        let fmt = move |x: &f64| -> String {
            match &categories {
                Some(c) => {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < c.len() {
                        c[i as usize].clone()
                    } else {
                        String::new()
                    }
                }
                None => style::tick(x),
            }
        };
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .axis_desc_style(text(TICK + 1.0))
            .label_style(text(TICK))
            .x_label_formatter(&fmt)
            .y_label_formatter(&style::tick)
            .x_labels(6)
            .y_labels(6)
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(err)?;
        for s in &panel.series {
            // A continuous key's points stand alone (module doc): no line, no error bars.
            if !self.scatter {
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().map(|&(x, m, _)| (x, m)),
                        s.color.stroke_width(2),
                    ))
                    .map_err(err)?;
                chart
                    .draw_series(s.points.iter().filter_map(|&(x, m, sd)| {
                        sd.map(|sd| {
                            ErrorBar::new_vertical(
                                x,
                                m - sd,
                                m,
                                m + sd,
                                s.color.stroke_width(2),
                                10,
                            )
                        })
                    }))
                    .map_err(err)?;
            }
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|&(x, m, _)| Circle::new((x, m), 4, s.color.filled())),
                )
                .map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ReportOptions, fixture};

    /// The fixture's CycleGAN trials with a Golgi weight drawn per trial, as a random search
    /// draws it.
    fn drawn_weights() -> crate::report::input::ReportInput {
        let mut input = fixture::small_sweep();
        let key = "param.loss.golgi_weight";
        let old = input.trials.column(key).unwrap().str().unwrap().clone();
        let drawn: StringChunked = old
            .iter()
            .enumerate()
            .map(|(i, v)| v.map(|_| format!("{:.3}", 1.0 + 0.37 * i as f64)))
            .collect();
        input
            .trials
            .with_column(drawn.with_name(key.into()).into_column())
            .unwrap();
        input
    }

    /// The Dice figure of the Golgi weight of `input`'s 2-class task, with its preparation.
    fn golgi_weight_plot(input: &crate::report::input::ReportInput) -> (SweepPlot, Prepared) {
        let prep = Prepared::new(input, &ReportOptions::default()).unwrap();
        let task = prep.tasks[0].clone();
        let metrics = vec!["dice".to_string()];
        let plot = SweepPlot::build(
            &prep,
            &task,
            "golgi_weight",
            &metrics,
            Aggregation::default(),
        )
        .unwrap()
        .unwrap();
        (plot, prep)
    }

    #[test]
    fn a_continuous_key_is_a_scatter_of_one_point_per_configuration() {
        let (plot, prep) = golgi_weight_plot(&drawn_weights());
        let task = &prep.tasks[0];
        assert!(plot.scatter);
        assert!(plot.categories.is_none());
        let panel = &plot.panels[0];
        assert_eq!(panel.series.len(), 1, "one series per model");
        let configs = prep
            .configs_of(&task.key)
            .into_iter()
            .filter(|c| c.model == "cyclegan")
            .count();
        assert!(configs >= CONTINUOUS_VALUES);
        let points = &panel.series[0].points;
        assert!(points.len() >= CONTINUOUS_VALUES, "{points:?}");
        assert!(points.iter().all(|p| p.2.is_none()), "no error bars");
        // The figure renders.
        let dir = tempfile::tempdir().unwrap();
        style::render(&plot, dir.path(), "scatter").unwrap();
        let svg = std::fs::read_to_string(dir.path().join("scatter.svg")).unwrap();
        assert!(svg.contains("<circle"));
    }

    #[test]
    fn a_grid_key_stays_a_line_with_error_bars() {
        let (plot, _) = golgi_weight_plot(&fixture::small_sweep());
        assert!(!plot.scatter);
        assert!(
            plot.panels[0].series[0]
                .points
                .iter()
                .any(|p| p.2.is_some())
        );
    }
}
