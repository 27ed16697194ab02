//! Forest plot of paired differences: one row per comparison (a − b), the mean difference as
//! a point and its 95 % bootstrap interval as a horizontal bar, a vertical line at zero. The
//! numbers are those of the comparisons table (`report::paired`); nothing here computes a
//! statistic.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::style::{self, Figure, LABEL, TICK, TITLE, err, text};
use crate::report::paired::ComparisonRow;

/// A forest plot of comparisons.
#[derive(Clone, Debug)]
pub struct ForestPlot {
    pub title: String,
    /// Axis description, e.g. "Dice difference (a − b)".
    pub x_label: String,
    /// (row label, comparison) in drawing order, top to bottom.
    pub rows: Vec<(String, ComparisonRow)>,
}

const WIDTH: u32 = 1100;
const ROW_H: u32 = 34;

impl ForestPlot {
    /// The x range: every interval end and zero, with a margin.
    fn x_range(&self) -> (f64, f64) {
        let ends = self
            .rows
            .iter()
            .flat_map(|(_, r)| [r.ci_low, r.ci_high, r.mean_diff])
            .filter(|v| v.is_finite());
        let (lo, hi) = ends.fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
        let pad = ((hi - lo) * 0.08).max(1e-3);
        (lo - pad, hi + pad)
    }
}

impl Figure for ForestPlot {
    fn size(&self) -> (u32, u32) {
        (WIDTH, 50 + 100 + ROW_H * self.rows.len().max(1) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (title, body) = area.split_vertically(50);
        title.titled(&self.title, text(TITLE)).map_err(err)?;
        let k = self.rows.len();
        let label_w = style::label_column_width(area, self.rows.iter().map(|(l, _)| l.as_str()))?;
        let (lo, hi) = self.x_range();
        let mut chart = ChartBuilder::on(&body)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(label_w)
            .build_cartesian_2d(lo..hi, -0.5f64..(k as f64 - 0.5))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(self.x_label.as_str())
            .x_label_formatter(&style::tick)
            .axis_desc_style(text(LABEL))
            .label_style(text(TICK))
            .draw()
            .map_err(err)?;
        let zero = style::color(6);
        chart
            .draw_series(LineSeries::new(
                [(0.0, -0.5), (0.0, k as f64 - 0.5)],
                zero.stroke_width(2),
            ))
            .map_err(err)?;
        let base = body.get_base_pixel();
        let right = text(TICK).pos(Pos::new(HPos::Right, VPos::Center));
        let ink = style::color(0);
        for (i, (label, r)) in self.rows.iter().enumerate() {
            let y = (k - 1 - i) as f64;
            if r.ci_low.is_finite() && r.ci_high.is_finite() {
                chart
                    .draw_series(LineSeries::new(
                        [(r.ci_low, y), (r.ci_high, y)],
                        ink.stroke_width(3),
                    ))
                    .map_err(err)?;
            }
            if r.mean_diff.is_finite() {
                chart
                    .draw_series([Circle::new((r.mean_diff, y), 6, ink.filled())])
                    .map_err(err)?;
            }
            let (px, py) = chart.backend_coord(&(lo, y));
            body.draw(&Text::new(
                label.clone(),
                (px - base.0 - 8, py - base.1),
                right.clone(),
            ))
            .map_err(err)?;
        }
        Ok(())
    }
}
