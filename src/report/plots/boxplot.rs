//! Box plots of a per-case metric (Dice by default) per configuration, one panel per class.
//! Horizontal boxes so that long configuration names stay readable.
//!
//! Boxes are the quartiles (linear interpolation); whiskers reach the most extreme case
//! within 1.5 · IQR of the box (Tukey), and every case beyond them is drawn as a point. The
//! numbers come from [`distribution`](crate::report::aggregate::distribution); plotters'
//! `Quartiles` is not used because its whiskers are not clipped to the data
//! (docs/design.md §4).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use polars::prelude::*;

use super::style::{self, Figure, LABEL, TICK, TITLE, err, text};
use crate::report::ReportError;
use crate::report::aggregate::{distribution, polars_error};
use crate::report::input::{f64_column, string_column, u64_column};
use crate::report::prepare::{Prepared, Task, class_label, metric_label};

/// One box.
#[derive(Clone, Debug, PartialEq)]
pub struct BoxData {
    pub label: String,
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub whisker_lo: f64,
    pub whisker_hi: f64,
    pub outliers: Vec<f64>,
    pub n: u32,
    pub n_nan: u32,
}

#[derive(Clone, Debug)]
pub struct BoxPanel {
    pub title: String,
    pub boxes: Vec<BoxData>,
}

/// The box-plot figure of one task and metric.
#[derive(Clone, Debug)]
pub struct BoxPlot {
    pub title: String,
    pub x_label: String,
    pub panels: Vec<BoxPanel>,
}

const WIDTH: u32 = 1100;
const ROW_H: u32 = 34;

impl BoxPlot {
    /// Per-case `metric` values of every configuration of `task`, one panel per class.
    pub(crate) fn build(
        prep: &Prepared,
        task: &Task,
        metric: &str,
    ) -> Result<Option<Self>, ReportError> {
        let rows = prep.task_cases(&task.key, col("metric").eq(lit(metric.to_string())))?;
        if rows.height() == 0 {
            return Ok(None);
        }
        let d = distribution(&rows, &["class", "config"])?;
        let e = polars_error("distribution");
        let s = &d.stats;
        let classes = string_column(s, "class").map_err(&e)?;
        let configs = string_column(s, "config").map_err(&e)?;
        let get = |name: &str| f64_column(s, name).map_err(&e);
        let (q1, med, q3, lo, hi) = (
            get("q1")?,
            get("median")?,
            get("q3")?,
            get("whisker_lo")?,
            get("whisker_hi")?,
        );
        let n = u64_column(s, "n").map_err(&e)?;
        let n_nan = u64_column(s, "n_nan").map_err(&e)?;
        let o_class = string_column(&d.outliers, "class").map_err(&e)?;
        let o_config = string_column(&d.outliers, "config").map_err(&e)?;
        let o_value = f64_column(&d.outliers, "value").map_err(&e)?;

        let order: Vec<String> = prep
            .configs_of(&task.key)
            .into_iter()
            .map(|c| c.label.clone())
            .collect();
        let mut panels = Vec::new();
        for class in &task.classes {
            let mut boxes = Vec::new();
            for label in &order {
                let Some(i) = (0..s.height()).find(|&i| {
                    classes[i].as_deref() == Some(class.as_str())
                        && configs[i].as_deref() == Some(label.as_str())
                }) else {
                    continue;
                };
                let (Some(q1), Some(median), Some(q3), Some(lo), Some(hi)) =
                    (q1[i], med[i], q3[i], lo[i], hi[i])
                else {
                    continue; // only NaN cases
                };
                let outliers = (0..d.outliers.height())
                    .filter(|&j| {
                        o_class[j].as_deref() == Some(class.as_str())
                            && o_config[j].as_deref() == Some(label.as_str())
                    })
                    .filter_map(|j| o_value[j])
                    .collect();
                boxes.push(BoxData {
                    label: label.clone(),
                    q1,
                    median,
                    q3,
                    whisker_lo: lo,
                    whisker_hi: hi,
                    outliers,
                    n: n[i].unwrap_or(0) as u32,
                    n_nan: n_nan[i].unwrap_or(0) as u32,
                });
            }
            if !boxes.is_empty() {
                panels.push(BoxPanel {
                    title: class_label(class),
                    boxes,
                });
            }
        }
        if panels.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            title: format!("{} per test case — {}", metric_label(metric), task.name),
            x_label: format!(
                "{} per (trial, test volume) (unitless)",
                metric_label(metric)
            ),
            panels,
        }))
    }

    fn panel_height(p: &BoxPanel) -> u32 {
        90 + ROW_H * p.boxes.len() as u32
    }
}

impl Figure for BoxPlot {
    fn size(&self) -> (u32, u32) {
        (
            WIDTH,
            50 + self.panels.iter().map(Self::panel_height).sum::<u32>(),
        )
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (title, mut rest) = area.split_vertically(50);
        title.titled(&self.title, text(TITLE)).map_err(err)?;
        // one x range for all panels, so boxes compare across classes
        let (mut x0, mut x1) = (f64::MAX, f64::MIN);
        for b in self.panels.iter().flat_map(|p| &p.boxes) {
            x0 = x0.min(b.whisker_lo);
            x1 = x1.max(b.whisker_hi);
            for &o in &b.outliers {
                x0 = x0.min(o);
                x1 = x1.max(o);
            }
        }
        let pad = ((x1 - x0) * 0.05).max(0.01);
        let (x0, x1) = (x0 - pad, x1 + pad);
        let label_w = self
            .panels
            .iter()
            .flat_map(|p| &p.boxes)
            .map(|b| {
                area.estimate_text_size(&tick_label(b), &text(TICK))
                    .map(|s| s.0)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?
            .into_iter()
            .max()
            .unwrap_or(100)
            + 20;
        for panel in &self.panels {
            let (sub, below) = rest.split_vertically(Self::panel_height(panel));
            rest = below;
            draw_panel(self, panel, &sub, (x0, x1), label_w)?;
        }
        Ok(())
    }
}

fn tick_label(b: &BoxData) -> String {
    if b.n_nan > 0 {
        format!("{} (n={}, {} NaN)", b.label, b.n, b.n_nan)
    } else {
        format!("{} (n={})", b.label, b.n)
    }
}

fn draw_panel<DB: DrawingBackend>(
    fig: &BoxPlot,
    panel: &BoxPanel,
    area: &DrawingArea<DB, Shift>,
    (x0, x1): (f64, f64),
    label_w: u32,
) -> Result<(), String> {
    let k = panel.boxes.len();
    let labels: Vec<String> = panel.boxes.iter().map(tick_label).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, text(LABEL))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(label_w)
        .build_cartesian_2d(x0..x1, -0.5f64..(k as f64 - 0.5))
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(fig.x_label.as_str())
        .axis_desc_style(text(TICK + 1.0))
        .label_style(text(TICK))
        .y_labels(0)
        .x_label_formatter(&style::tick)
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(err)?;
    // category labels, right-aligned left of the plotting area (top to bottom in table order)
    let base = area.get_base_pixel();
    let label_style = text(TICK).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, label) in labels.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(x0, (k - 1 - i) as f64));
        area.draw(&Text::new(
            label.clone(),
            (px - base.0 - 8, py - base.1),
            label_style.clone(),
        ))
        .map_err(err)?;
    }
    for (i, b) in panel.boxes.iter().enumerate() {
        let y = (k - 1 - i) as f64;
        let c = style::color(i);
        let h = 0.32;
        chart
            .draw_series([
                Rectangle::new([(b.q1, y - h), (b.q3, y + h)], c.mix(0.25).filled()),
                Rectangle::new([(b.q1, y - h), (b.q3, y + h)], c.stroke_width(2)),
            ])
            .map_err(err)?;
        chart
            .draw_series([
                PathElement::new(
                    vec![(b.median, y - h), (b.median, y + h)],
                    BLACK.stroke_width(3),
                ),
                PathElement::new(vec![(b.whisker_lo, y), (b.q1, y)], c.stroke_width(2)),
                PathElement::new(vec![(b.q3, y), (b.whisker_hi, y)], c.stroke_width(2)),
                PathElement::new(
                    vec![(b.whisker_lo, y - h / 2.0), (b.whisker_lo, y + h / 2.0)],
                    c.stroke_width(2),
                ),
                PathElement::new(
                    vec![(b.whisker_hi, y - h / 2.0), (b.whisker_hi, y + h / 2.0)],
                    c.stroke_width(2),
                ),
            ])
            .map_err(err)?;
        chart
            .draw_series(
                b.outliers
                    .iter()
                    .map(|&o| Circle::new((o, y), 4, c.stroke_width(2))),
            )
            .map_err(err)?;
    }
    Ok(())
}
