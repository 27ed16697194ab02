//! The look shared by every figure: the bundled font, the palette, sizes, and the one function
//! that renders a figure to PNG and SVG.
//!
//! Text is drawn with DejaVu Sans compiled into the binary (`assets/fonts/`, Bitstream Vera
//! licence) through plotters' `ab_glyph` feature, so PNGs look the same on every machine and
//! no system font library is needed (docs/design.md §4). SVGs name the same family with
//! a `sans-serif` fallback.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::report::ReportError;

/// The font family name used in every text style (and written into SVGs).
pub const FONT: &str = "DejaVu Sans, sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// Registers the bundled font with plotters (once per process).
pub fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font compiled into the binary.
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if register_font(FONT, style, FONT_BYTES).is_err() {
                panic!("the bundled DejaVu Sans font does not parse");
            }
        }
    });
}

/// A text style of the bundled font.
pub fn text(size: f64) -> TextStyle<'static> {
    ensure_font();
    TextStyle::from((FONT, size).into_font())
}

/// Title size, axis-description size, tick-label size.
pub const TITLE: f64 = 22.0;
pub const LABEL: f64 = 17.0;
pub const TICK: f64 = 14.0;

/// The Okabe–Ito palette: distinguishable with the common colour-vision deficiencies.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(120, 120, 120), // grey (instead of yellow: readable on white)
    RGBColor(0, 0, 0),       // black
];

/// The colour of series `i`.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Colours of the segmentation classes in overlays (as the RGB mask files: Golgi red,
/// nuclei green; pair yellow).
pub fn class_color(class: &str, i: usize) -> RGBColor {
    match class {
        "golgi" => RGBColor(255, 60, 60),
        "nuclei" => RGBColor(40, 220, 80),
        "pair" => RGBColor(255, 215, 0),
        _ => color(i),
    }
}

/// A tick label: integers without decimals, others with up to 4 decimals, trailing zeros
/// removed ("20", "0.775").
pub fn tick(v: &f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// A figure that can draw itself on any plotters backend.
pub trait Figure {
    /// Pixel size of the figure.
    fn size(&self) -> (u32, u32);
    /// Draws the figure on `area` (already filled white).
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// The extent of points `(x, mean, std)` with their ±std band: `(x0, x1, y0, y1)`, or `None`
/// without points. A missing std counts as 0.
pub fn band_extent<'a>(
    points: impl Iterator<Item = &'a (f64, f64, Option<f64>)>,
) -> Option<(f64, f64, f64, f64)> {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, m, s) in points {
        let s = s.unwrap_or(0.0);
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(m - s);
        y1 = y1.max(m + s);
    }
    (x0 <= x1).then_some((x0, x1, y0, y1))
}

/// The width of a label column: the widest of `labels` in tick text, plus a margin (80 plus the
/// margin without labels).
pub fn label_column_width<'a, DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    labels: impl Iterator<Item = &'a str>,
) -> Result<u32, String> {
    let widest = labels
        .map(|l| area.estimate_text_size(l, &text(TICK)).map(|s| s.0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?
        .into_iter()
        .max()
        .unwrap_or(80);
    Ok(widest + 24)
}

/// Formats a drawing error.
pub fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Renders `figure` to `dir/<name>.png` and `dir/<name>.svg`; returns the file names.
pub fn render(figure: &impl Figure, dir: &Path, name: &str) -> Result<Vec<String>, ReportError> {
    ensure_font();
    let size = figure.size();
    let plot_err = |message: String| ReportError::Plot {
        figure: name.to_string(),
        message,
    };
    let png = dir.join(format!("{name}.png"));
    {
        let area = BitMapBackend::new(&png, size).into_drawing_area();
        area.fill(&WHITE).map_err(|e| plot_err(err(e)))?;
        figure.draw(&area).map_err(plot_err)?;
        area.present().map_err(|e| plot_err(err(e)))?;
    }
    let svg = dir.join(format!("{name}.svg"));
    {
        let area = SVGBackend::new(&svg, size).into_drawing_area();
        area.fill(&WHITE).map_err(|e| plot_err(err(e)))?;
        figure.draw(&area).map_err(plot_err)?;
        area.present().map_err(|e| plot_err(err(e)))?;
    }
    Ok(vec![format!("{name}.png"), format!("{name}.svg")])
}

/// Renders `figure` to `dir/<name>.png` only (raster content such as slice overlays, where
/// an SVG would hold one rectangle per pixel); returns the file name.
pub fn render_png(figure: &impl Figure, dir: &Path, name: &str) -> Result<String, ReportError> {
    ensure_font();
    let png = dir.join(format!("{name}.png"));
    let plot_err = |message: String| ReportError::Plot {
        figure: name.to_string(),
        message,
    };
    let area = BitMapBackend::new(&png, figure.size()).into_drawing_area();
    area.fill(&WHITE).map_err(|e| plot_err(err(e)))?;
    figure.draw(&area).map_err(plot_err)?;
    area.present().map_err(|e| plot_err(err(e)))?;
    Ok(format!("{name}.png"))
}

/// Splits `area` into a grid of `n` panels with at most `cols` columns (row-major).
pub fn grid<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    n: usize,
    cols: usize,
) -> Vec<DrawingArea<DB, Shift>> {
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols).max(1);
    area.split_evenly((rows, cols))
        .into_iter()
        .take(n)
        .collect()
}

/// Draws a legend (coloured swatch + label per entry) in one or more rows across `area`.
pub fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, RGBColor)],
) -> Result<(), String> {
    let (w, _) = area.dim_in_pixel();
    let style = text(TICK);
    let mut x = 10i32;
    let mut y = 6i32;
    for (label, c) in entries {
        let (tw, _) = area.estimate_text_size(label, &style).map_err(err)?;
        let width = 26 + tw as i32 + 22;
        if x + width > w as i32 && x > 10 {
            x = 10;
            y += 24;
        }
        area.draw(&Rectangle::new([(x, y + 3), (x + 18, y + 15)], c.filled()))
            .map_err(err)?;
        area.draw(&Text::new(label.clone(), (x + 24, y + 1), style.clone()))
            .map_err(err)?;
        x += width;
    }
    Ok(())
}

/// Rows a legend of `entries` needs at width `w` (an estimate for layout).
pub fn legend_rows(entries: &[(String, RGBColor)], w: u32) -> u32 {
    let mut rows = 1;
    let mut x = 10u32;
    for (label, _) in entries {
        let width = 26 + (label.chars().count() as u32 * 8) + 22;
        if x + width > w && x > 10 {
            rows += 1;
            x = 10;
        }
        x += width;
    }
    rows
}
