//! Slice overlays: one z slice of a test volume — the image channels as a colour composite,
//! then the ground truth and each model's prediction drawn over a grey version of the image
//! (filled translucent, outlined opaque, one colour per class), with a legend. PNG only: an
//! SVG of a raster image would hold one rectangle per pixel.
//!
//! Takes volumes in memory ([`SliceSet`]) so it does not depend on where predictions are
//! stored; the caller reads them (`crate::volume::read_tiff`).

use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{self, Figure, LABEL, TICK, TITLE, err, text};
use crate::report::ReportError;
use crate::report::input::SliceSet;
use crate::report::prepare::{class_label, model_label};

/// A slice-overlay figure, validated and with its slice chosen.
#[derive(Clone, Debug)]
pub struct SliceFigure<'a> {
    set: &'a SliceSet,
    z: usize,
    /// Display pixels per voxel.
    scale: f64,
}

const PANEL_IMAGE: f64 = 320.0;
const Y_LABELS: u32 = 56;
const X_LABELS: u32 = 44;
const PANEL_TITLE: u32 = 30;
const MARGIN: u32 = 14;
const COLS: usize = 4;

impl<'a> SliceFigure<'a> {
    /// Checks shapes (every mask has the image's spatial shape and one channel per class)
    /// and picks the slice: `set.z` or the one with the most ground-truth foreground.
    pub fn new(set: &'a SliceSet) -> Result<Self, ReportError> {
        let spatial = set.image.spatial();
        let bad = |what: &str, detail: String| {
            ReportError::Input(format!("slice overlay `{}`: {what} {detail}", set.name))
        };
        if set.image.channels() == 0 || spatial.contains(&0) {
            return Err(bad("image", "is empty".into()));
        }
        if set.image_channels.len() != set.image.channels() {
            return Err(bad(
                "image_channels",
                format!(
                    "names {} channels, the image has {}",
                    set.image_channels.len(),
                    set.image.channels()
                ),
            ));
        }
        let check = |label: &str, v: &crate::volume::Volume<u8>| {
            if v.spatial() != spatial {
                return Err(bad(
                    label,
                    format!(
                        "has shape {:?}, the image {:?} (z, y, x)",
                        v.spatial(),
                        spatial
                    ),
                ));
            }
            if v.channels() != set.classes.len() {
                return Err(bad(
                    label,
                    format!(
                        "has {} channels, expected one per class ({})",
                        v.channels(),
                        set.classes.join(", ")
                    ),
                ));
            }
            Ok(())
        };
        check("ground truth", &set.truth)?;
        for (label, p) in &set.predictions {
            check(&format!("prediction of {label}"), p)?;
        }
        let [nz, ny, nx] = spatial;
        let z = match set.z {
            Some(z) if z < nz => z,
            Some(z) => return Err(bad("z", format!("{z} is outside 0..{nz}"))),
            None => (0..nz)
                .max_by_key(|&z| {
                    let n = ny * nx;
                    (0..set.truth.channels())
                        .map(|c| {
                            set.truth.channel(c)[z * n..(z + 1) * n]
                                .iter()
                                .filter(|&&v| v != 0)
                                .count()
                        })
                        .sum::<usize>()
                })
                .unwrap_or(0),
        };
        let scale = PANEL_IMAGE / nx.max(ny) as f64;
        let scale = if scale >= 1.0 { scale.floor() } else { scale };
        Ok(Self { set, z, scale })
    }

    /// The chosen slice.
    pub fn z(&self) -> usize {
        self.z
    }

    fn image_px(&self) -> (u32, u32) {
        let [_, ny, nx] = self.set.image.spatial();
        (
            ((nx as f64 * self.scale).round() as u32).max(1),
            ((ny as f64 * self.scale).round() as u32).max(1),
        )
    }

    fn panel_px(&self) -> (u32, u32) {
        let (w, h) = self.image_px();
        (Y_LABELS + w + MARGIN, PANEL_TITLE + MARGIN + h + X_LABELS)
    }

    fn panels(&self) -> usize {
        2 + self.set.predictions.len()
    }

    fn legend(&self) -> Vec<(String, RGBColor)> {
        self.set
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| (class_label(c), style::class_color(c, i)))
            .collect()
    }

    /// Display channel `c` of slice z normalised to [0, 1] by its 0.5–99.5 percentiles.
    fn normalised(&self, c: usize) -> Vec<f32> {
        let [_, ny, nx] = self.set.image.spatial();
        let n = ny * nx;
        let slice = &self.set.image.channel(c)[self.z * n..(self.z + 1) * n];
        let mut sorted: Vec<f32> = slice.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f32::total_cmp);
        if sorted.is_empty() {
            return vec![0.0; n];
        }
        let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
        let (lo, hi) = (at(0.005), at(0.995));
        let range = if hi > lo { hi - lo } else { 1.0 };
        slice
            .iter()
            .map(|&v| ((v - lo) / range).clamp(0.0, 1.0))
            .collect()
    }

    /// RGB buffers (row-major, `image_px` size) of every panel.
    fn buffers(&self) -> Vec<Vec<u8>> {
        let [_, ny, nx] = self.set.image.spatial();
        let channels: Vec<Vec<f32>> = (0..self.set.image.channels())
            .map(|c| self.normalised(c))
            .collect();
        let colors: Vec<[f32; 3]> = self
            .set
            .image_channels
            .iter()
            .enumerate()
            .map(|(i, name)| match name.as_str() {
                "golgi" => [1.0, 0.0, 0.0],
                "nuclei" => [0.0, 1.0, 0.0],
                _ => [[0.0, 0.4, 1.0], [0.7, 0.7, 0.7]][i % 2],
            })
            .collect();
        let mut composite = vec![[0f32; 3]; nx * ny];
        let mut grey = vec![0f32; nx * ny];
        for (ch, col) in channels.iter().zip(&colors) {
            for (i, &v) in ch.iter().enumerate() {
                for k in 0..3 {
                    composite[i][k] += v * col[k];
                }
                grey[i] += v / channels.len() as f32;
            }
        }
        let class_rgb: Vec<[f32; 3]> = self
            .legend()
            .iter()
            .map(|(_, c)| [c.0 as f32, c.1 as f32, c.2 as f32])
            .collect();
        let overlay = |mask: &crate::volume::Volume<u8>| -> Vec<[f32; 3]> {
            let n = nx * ny;
            let mut px: Vec<[f32; 3]> = grey.iter().map(|&g| [g * 200.0; 3]).collect();
            for (c, rgb) in class_rgb.iter().enumerate() {
                let m = &mask.channel(c)[self.z * n..(self.z + 1) * n];
                let inside = |y: isize, x: isize| {
                    y >= 0
                        && x >= 0
                        && (y as usize) < ny
                        && (x as usize) < nx
                        && m[y as usize * nx + x as usize] != 0
                };
                for y in 0..ny as isize {
                    for x in 0..nx as isize {
                        if !inside(y, x) {
                            continue;
                        }
                        let i = y as usize * nx + x as usize;
                        let edge = !(inside(y - 1, x)
                            && inside(y + 1, x)
                            && inside(y, x - 1)
                            && inside(y, x + 1));
                        let a = if edge { 1.0 } else { 0.4 };
                        for k in 0..3 {
                            px[i][k] = px[i][k] * (1.0 - a) + rgb[k] * a;
                        }
                    }
                }
            }
            px
        };
        let mut images: Vec<Vec<[f32; 3]>> = vec![
            composite
                .iter()
                .map(|p| [p[0] * 255.0, p[1] * 255.0, p[2] * 255.0])
                .collect(),
            overlay(&self.set.truth),
        ];
        for (_, p) in &self.set.predictions {
            images.push(overlay(p));
        }
        let (w, h) = self.image_px();
        images
            .into_iter()
            .map(|img| {
                let mut buf = Vec::with_capacity((w * h * 3) as usize);
                for py in 0..h {
                    let y = ((py as f64 / self.scale) as usize).min(ny - 1);
                    for px in 0..w {
                        let x = ((px as f64 / self.scale) as usize).min(nx - 1);
                        let p = img[y * nx + x];
                        buf.extend(p.map(|v| v.round().clamp(0.0, 255.0) as u8));
                    }
                }
                buf
            })
            .collect()
    }

    fn titles(&self) -> Vec<String> {
        let mut t = vec![
            format!("Image ({})", self.set.image_channels.join(", ")),
            "Ground truth".to_string(),
        ];
        t.extend(self.set.predictions.iter().map(|(l, _)| model_label(l)));
        t
    }

    fn legend_h(&self) -> u32 {
        12 + 24 * style::legend_rows(&self.legend(), self.size().0)
    }
}

impl Figure for SliceFigure<'_> {
    fn size(&self) -> (u32, u32) {
        let (pw, ph) = self.panel_px();
        let cols = self.panels().min(COLS) as u32;
        let rows = self.panels().div_ceil(COLS) as u32;
        let legend_h = 12 + 24 * style::legend_rows(&self.legend(), pw * cols);
        (pw * cols, 50 + legend_h + ph * rows)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let [nz, ny, nx] = self.set.image.spatial();
        let (title, rest) = area.split_vertically(50);
        title
            .titled(
                &format!("{} — slice z = {} of {nz}", self.set.name, self.z),
                text(TITLE),
            )
            .map_err(err)?;
        let (legend, body) = rest.split_vertically(self.legend_h());
        let mut entries = self.legend();
        entries.push(("(filled: mask, outline: its boundary)".into(), WHITE));
        style::legend(&legend, &entries)?;
        let (w, h) = self.image_px();
        let cols = self.panels().min(COLS);
        let rows = self.panels().div_ceil(COLS);
        let cells = body.split_evenly((rows, cols));
        for ((buf, name), cell) in self.buffers().into_iter().zip(self.titles()).zip(cells) {
            let (head, chart_area) = cell.split_vertically(PANEL_TITLE);
            head.titled(&name, text(LABEL)).map_err(err)?;
            let mut chart = ChartBuilder::on(&chart_area)
                .margin_top(MARGIN)
                .margin_right(MARGIN)
                .x_label_area_size(X_LABELS)
                .y_label_area_size(Y_LABELS)
                // y runs downwards like image rows: data y = -row
                .build_cartesian_2d(0f64..nx as f64, -(ny as f64)..0f64)
                .map_err(err)?;
            let fy = |y: &f64| style::tick(&-y);
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("x (voxels)")
                .y_desc("y (voxels)")
                .axis_desc_style(text(TICK))
                .label_style(text(TICK - 2.0))
                .x_labels(5)
                .y_labels(5)
                .x_label_formatter(&style::tick)
                .y_label_formatter(&fy)
                .draw()
                .map_err(err)?;
            let element: BitMapElement<(f64, f64)> =
                BitMapElement::with_owned_buffer((0.0, 0.0), (w, h), buf)
                    .ok_or("slice buffer size does not match the panel")?;
            chart.draw_series(std::iter::once(element)).map_err(err)?;
        }
        Ok(())
    }
}
