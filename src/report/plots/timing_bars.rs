//! Stacked horizontal bars of the timing breakdown: where each model's hours go (annotation
//! of training volumes, synthetic masks, training, annotation of test volumes, testing), with
//! the total at the end of each bar. The numbers are those of the timing table.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::style::{self, Figure, LABEL, TICK, TITLE, err, text};
use crate::report::timing::{TimingRow, TimingTable};

/// One stacked segment: legend label, colour, and its hours in a row.
type Segment = (&'static str, RGBColor, fn(&TimingRow) -> f64);

/// The stacked-bar figure of a timing table.
#[derive(Clone, Debug)]
pub struct TimingBars {
    pub title: String,
    pub rows: Vec<TimingRow>,
    pub include_testing: bool,
}

const WIDTH: u32 = 1100;
const BAR_H: u32 = 56;

impl TimingBars {
    pub fn new(title: String, table: &TimingTable) -> Self {
        Self {
            title,
            rows: table.rows.clone(),
            include_testing: table.include_testing,
        }
    }

    /// (label, colour, hours of a row) of each stacked segment, in drawing order.
    fn segments(&self) -> Vec<Segment> {
        let mut s: Vec<Segment> = vec![
            (
                "Annotation of training volumes",
                style::color(1),
                TimingRow::train_annotation_hours,
            ),
            ("Synthetic masks", style::color(4), |r| r.synth_hours),
            ("Training compute", style::color(0), |r| r.train_hours),
        ];
        if self.include_testing {
            s.push((
                "Annotation of test volumes",
                style::color(3),
                TimingRow::test_annotation_hours,
            ));
            s.push(("Testing compute", style::color(2), |r| r.test_hours));
        }
        s
    }

    fn total(&self, r: &TimingRow) -> f64 {
        if self.include_testing {
            r.total_time()
        } else {
            r.training_time()
        }
    }
}

impl Figure for TimingBars {
    fn size(&self) -> (u32, u32) {
        (WIDTH, 50 + 40 + 110 + BAR_H * self.rows.len() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (title, rest) = area.split_vertically(50);
        title.titled(&self.title, text(TITLE)).map_err(err)?;
        let segments = self.segments();
        let entries: Vec<(String, RGBColor)> = segments
            .iter()
            .map(|(l, c, _)| (l.to_string(), *c))
            .collect();
        let (legend, body) = rest.split_vertically(40);
        style::legend(&legend, &entries)?;
        let k = self.rows.len();
        let max = self
            .rows
            .iter()
            .map(|r| self.total(r))
            .fold(0.0f64, f64::max)
            .max(1e-6);
        let label_w = style::label_column_width(area, self.rows.iter().map(|r| r.model.as_str()))?;
        let mut chart = ChartBuilder::on(&body)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(label_w)
            .build_cartesian_2d(0.0..max * 1.18, -0.5f64..(k as f64 - 0.5))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("Time (h)")
            .x_label_formatter(&style::tick)
            .axis_desc_style(text(LABEL))
            .label_style(text(TICK))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(err)?;
        let base = body.get_base_pixel();
        let right = text(TICK).pos(Pos::new(HPos::Right, VPos::Center));
        let left = text(TICK).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, r) in self.rows.iter().enumerate() {
            let y = (k - 1 - i) as f64;
            let mut x = 0.0;
            for (_, c, hours) in &segments {
                let h = hours(r);
                if h > 0.0 {
                    chart
                        .draw_series([Rectangle::new([(x, y - 0.3), (x + h, y + 0.3)], c.filled())])
                        .map_err(err)?;
                    x += h;
                }
            }
            let (px, py) = chart.backend_coord(&(0.0, y));
            body.draw(&Text::new(
                r.model.clone(),
                (px - base.0 - 8, py - base.1),
                right.clone(),
            ))
            .map_err(err)?;
            let (ex, ey) = chart.backend_coord(&(x, y));
            body.draw(&Text::new(
                format!("{:.2} h", self.total(r)),
                (ex - base.0 + 8, ey - base.1),
                left.clone(),
            ))
            .map_err(err)?;
        }
        Ok(())
    }
}
