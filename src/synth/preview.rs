//! A PNG to look at generated data: mid-depth z-slices of each volume, one row per volume, with
//! every image channel in grey, a colour composite, the ground truth and an overlay of mask
//! outlines on the image. Colours are the same everywhere: red = Golgi, green = nuclei, blue =
//! pair (the real crops store Golgi in red and nuclei in green).
//!
//! Rendering into a pixel buffer ([`render_preview`]) is separate from writing the PNG
//! ([`write_preview`], which adds the text with plotters), so the layout can be tested in memory.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::SynthError;
use crate::dataset::{DATASET_FILE, DatasetSpec};
use crate::volume::{AnyVolume, Volume, read_tiff};

/// One row of the preview: a volume's image and/or mask with channel names.
#[derive(Clone, Debug)]
pub struct PreviewRow {
    pub label: String,
    pub image: Option<(Volume<f32>, Vec<String>)>,
    pub mask: Option<(Volume<u8>, Vec<String>)>,
}

/// A text label to draw at a pixel position (top-left corner).
#[derive(Clone, Debug, PartialEq)]
pub struct TextLabel {
    pub text: String,
    pub x: i32,
    pub y: i32,
    /// Font size in pixels.
    pub size: u32,
}

/// An RGB image (row-major, 3 bytes per pixel) plus the labels to draw on it.
#[derive(Clone, Debug)]
pub struct PreviewImage {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub labels: Vec<TextLabel>,
}

const PAD: u32 = 8;
const ROW_TITLE: u32 = 22;
const PANEL_TITLE: u32 = 18;
const BACKGROUND: [u8; 3] = [250, 250, 250];
const GOLGI: [u8; 3] = [255, 40, 40];
const NUCLEI: [u8; 3] = [40, 230, 40];
const PAIR: [u8; 3] = [60, 120, 255];

/// The display colour of a channel by name (unknown names: grey).
fn channel_colour(name: &str) -> [u8; 3] {
    match name {
        "golgi" => GOLGI,
        "nuclei" => NUCLEI,
        "pair" => PAIR,
        _ => [200, 200, 200],
    }
}

/// One panel: an RGB slice of `w` × `h` pixels (before scaling) and its title.
struct Panel {
    title: String,
    w: usize,
    h: usize,
    rgb: Vec<[u8; 3]>,
}

/// Display range (1st and 99.9th percentile) of a channel over the whole volume, so deep and
/// shallow slices are comparable.
fn display_range(values: &[f32]) -> (f32, f32) {
    let mut v: Vec<f32> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    let pick = |v: &mut Vec<f32>, q: f64| {
        let k = ((v.len() - 1) as f64 * q).round() as usize;
        *v.select_nth_unstable_by(k, |a, b| a.total_cmp(b)).1
    };
    let lo = pick(&mut v, 0.01);
    let hi = pick(&mut v, 0.999);
    if hi > lo { (lo, hi) } else { (lo, lo + 1.0) }
}

fn slice<T: Copy>(vol: &Volume<T>, c: usize, z: usize) -> &[T] {
    let [_, _, h, w] = vol.shape();
    &vol.channel(c)[z * h * w..(z + 1) * h * w]
}

/// Whether pixel i of a binary slice is on its outline (4-neighbourhood).
fn on_outline(m: &[u8], w: usize, h: usize, i: usize) -> bool {
    if m[i] == 0 {
        return false;
    }
    let (x, y) = (i % w, i / w);
    x == 0
        || y == 0
        || x + 1 == w
        || y + 1 == h
        || m[i - 1] == 0
        || m[i + 1] == 0
        || m[i - w] == 0
        || m[i + w] == 0
}

fn row_panels(row: &PreviewRow, z: Option<usize>) -> Result<(Vec<Panel>, usize, usize), String> {
    let spatial = match (&row.image, &row.mask) {
        (Some((img, _)), Some((mask, _))) => {
            if img.spatial() != mask.spatial() {
                return Err(format!(
                    "image {:?} and mask {:?} differ in size",
                    img.spatial(),
                    mask.spatial()
                ));
            }
            img.spatial()
        }
        (Some((img, _)), None) => img.spatial(),
        (None, Some((mask, _))) => mask.spatial(),
        (None, None) => return Err("nothing to show".into()),
    };
    let [depth, h, w] = spatial;
    let z = z.unwrap_or(depth / 2);
    if z >= depth {
        return Err(format!("z = {z} is outside the volume's {depth} slices"));
    }
    let mut panels = Vec::new();
    // Image channels normalised to [0, 1].
    let mut norm: Vec<(String, Vec<f32>)> = Vec::new();
    if let Some((img, names)) = &row.image {
        for c in 0..img.channels() {
            let (lo, hi) = display_range(img.channel(c));
            let s: Vec<f32> = slice(img, c, z)
                .iter()
                .map(|&v| ((v - lo) / (hi - lo)).clamp(0.0, 1.0))
                .collect();
            let name = names
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("channel {c}"));
            panels.push(Panel {
                title: format!("{name} image"),
                w,
                h,
                rgb: s.iter().map(|&v| [(v * 255.0) as u8; 3]).collect(),
            });
            norm.push((name, s));
        }
        if norm.len() >= 2 {
            let mut rgb = vec![[0u8; 3]; w * h];
            for (name, s) in &norm {
                let col = channel_colour(name);
                for (p, &v) in rgb.iter_mut().zip(s) {
                    for k in 0..3 {
                        p[k] = p[k].saturating_add((f32::from(col[k]) * v) as u8);
                    }
                }
            }
            panels.push(Panel {
                title: "composite".into(),
                w,
                h,
                rgb,
            });
        }
    }
    if let Some((mask, names)) = &row.mask {
        let planes: Vec<(String, &[u8])> = (0..mask.channels())
            .map(|c| {
                let name = names
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| format!("class {c}"));
                (name, slice(mask, c, z))
            })
            .collect();
        // Ground truth: filled golgi/nuclei, outlined pair.
        let mut fill = vec![[0u8; 3]; w * h];
        for (name, m) in &planes {
            let col = channel_colour(name);
            for i in 0..w * h {
                if name == "pair" {
                    if on_outline(m, w, h, i) {
                        fill[i] = col;
                    }
                } else if m[i] != 0 {
                    for k in 0..3 {
                        fill[i][k] = fill[i][k].saturating_add(col[k]);
                    }
                }
            }
        }
        let title = format!(
            "ground truth ({})",
            planes
                .iter()
                .map(|p| p.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        panels.push(Panel {
            title,
            w,
            h,
            rgb: fill,
        });
        // Overlay: outlines on the grey image (mean of the channels).
        if !norm.is_empty() {
            let mut rgb: Vec<[u8; 3]> = (0..w * h)
                .map(|i| {
                    let v = norm.iter().map(|(_, s)| s[i]).fold(0.0f32, f32::max);
                    [(v * 200.0) as u8; 3]
                })
                .collect();
            // Pair outlines coincide with their members'; the ground-truth panel shows them.
            for (name, m) in planes.iter().filter(|(n, _)| n != "pair") {
                let col = channel_colour(name);
                for (i, p) in rgb.iter_mut().enumerate() {
                    if on_outline(m, w, h, i) {
                        *p = col;
                    }
                }
            }
            panels.push(Panel {
                title: "overlay (outlines)".into(),
                w,
                h,
                rgb,
            });
        }
    }
    Ok((panels, z, depth))
}

/// Lays out one row per volume of mid-depth (or `z`) slices into an RGB buffer and lists the
/// labels to draw. Panels are scaled (nearest neighbour) to about 256 pixels.
pub fn render_preview(rows: &[PreviewRow], z: Option<usize>) -> Result<PreviewImage, String> {
    if rows.is_empty() {
        return Err("no volumes to show".into());
    }
    let mut laid = Vec::new();
    for row in rows {
        let (panels, zi, depth) = row_panels(row, z).map_err(|e| format!("{}: {e}", row.label))?;
        laid.push((row, panels, zi, depth));
    }
    let largest = laid
        .iter()
        .flat_map(|(_, p, _, _)| p.iter().map(|p| p.w.max(p.h)))
        .max()
        .unwrap_or(1);
    let scale = (256.0 / largest as f64).min(3.0);
    let px = |n: usize| ((n as f64 * scale).round() as u32).max(1);
    let width = laid
        .iter()
        .map(|(_, p, _, _)| p.iter().map(|p| px(p.w) + PAD).sum::<u32>() + PAD)
        .max()
        .unwrap_or(PAD)
        .max(360);
    let height: u32 = laid
        .iter()
        .map(|(_, p, _, _)| {
            ROW_TITLE + PANEL_TITLE + p.iter().map(|p| px(p.h)).max().unwrap_or(0) + PAD
        })
        .sum::<u32>()
        + PAD;
    let mut rgb = vec![0u8; (width * height * 3) as usize];
    for p in rgb.chunks_exact_mut(3) {
        p.copy_from_slice(&BACKGROUND);
    }
    let mut labels = Vec::new();
    let mut y0 = PAD;
    for (row, panels, zi, depth) in &laid {
        labels.push(TextLabel {
            text: format!("{}   z = {} of {}", row.label, zi, depth),
            x: PAD as i32,
            y: y0 as i32,
            size: 16,
        });
        let top = y0 + ROW_TITLE + PANEL_TITLE;
        let mut x0 = PAD;
        let mut row_h = 0;
        for panel in panels {
            let (pw, ph) = (px(panel.w), px(panel.h));
            labels.push(TextLabel {
                text: panel.title.clone(),
                x: x0 as i32,
                y: (y0 + ROW_TITLE) as i32,
                size: 13,
            });
            for v in 0..ph {
                let sy = ((f64::from(v) / scale) as usize).min(panel.h - 1);
                for u in 0..pw {
                    let sx = ((f64::from(u) / scale) as usize).min(panel.w - 1);
                    let o = (((top + v) * width + x0 + u) * 3) as usize;
                    rgb[o..o + 3].copy_from_slice(&panel.rgb[sy * panel.w + sx]);
                }
            }
            x0 += pw + PAD;
            row_h = row_h.max(ph);
        }
        y0 = top + row_h + PAD;
    }
    Ok(PreviewImage {
        width,
        height,
        rgb,
        labels,
    })
}

/// Registers the bundled DejaVu Sans as plotters' "sans-serif" (once per process), so PNG text
/// renders the same on every machine without system fonts.
pub fn register_fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        // The bundled font is valid; a failure would only lose the labels.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// Renders `rows` (see [`render_preview`]) and writes the PNG to `path` atomically.
pub fn write_preview(rows: &[PreviewRow], z: Option<usize>, path: &Path) -> Result<(), SynthError> {
    let err = |message: String| SynthError::Preview {
        path: path.to_owned(),
        message,
    };
    let image = render_preview(rows, z).map_err(err)?;
    if path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        != Some("png".into())
    {
        return Err(err("the output file must end in .png".into()));
    }
    register_fonts();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}.png", std::process::id()));
    let draw = || -> Result<(), String> {
        let root = BitMapBackend::new(&tmp, (image.width, image.height)).into_drawing_area();
        let element = BitMapElement::with_owned_buffer(
            (0, 0),
            (image.width, image.height),
            image.rgb.clone(),
        )
        .ok_or("pixel buffer size mismatch")?;
        root.draw(&element).map_err(|e| e.to_string())?;
        for l in &image.labels {
            let style = ("sans-serif", l.size).into_font().color(&BLACK);
            root.draw_text(&l.text, &style, (l.x, l.y))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    };
    if let Err(e) = draw() {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SynthError::io(path, e)
    })
}

/// Default channel names of a file with `n` channels: masks follow the project's order
/// (golgi, nuclei, pair; a single channel is nuclei), images the real crops' (red = Golgi,
/// green = nuclei).
fn default_names(n: usize, mask: bool) -> Vec<String> {
    let names: &[&str] = match (n, mask) {
        (1, true) => &["nuclei"],
        (1, false) => &["image"],
        _ => &["golgi", "nuclei", "pair"],
    };
    (0..n)
        .map(|c| {
            names
                .get(c)
                .map(|s| (*s).to_owned())
                .unwrap_or_else(|| format!("channel {c}"))
        })
        .collect()
}

/// Whether a volume read from a file looks like a mask: integer values that are only 0 and one
/// other value (0/1, 0/255).
fn looks_like_mask(v: &AnyVolume) -> bool {
    let data = v.to_f32();
    let mut other = None;
    for &x in data.data() {
        if x == 0.0 {
            continue;
        }
        match other {
            None => other = Some(x),
            Some(o) if o == x => {}
            Some(_) => return false,
        }
    }
    true
}

/// Picks the listed channels of a file volume, or all of them.
fn pick(
    v: Volume<f32>,
    channels: Option<&[usize]>,
    path: &Path,
) -> Result<Volume<f32>, SynthError> {
    match channels {
        None => Ok(v),
        Some(ch) => v.select_channels(ch).map_err(|e| SynthError::Input {
            path: path.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// The preview rows of a dataset folder (its first `max_volumes` volumes) or of a TIFF file
/// (an image, or a mask when its values are binary), with an optional mask file for the
/// latter.
pub fn preview_rows(
    input: &Path,
    mask: Option<&Path>,
    max_volumes: usize,
) -> Result<Vec<PreviewRow>, SynthError> {
    if input.is_dir() {
        if mask.is_some() {
            return Err(SynthError::Input {
                path: input.to_owned(),
                message: "--mask goes with a TIFF image, not a dataset folder".into(),
            });
        }
        let file = input.join(DATASET_FILE);
        let spec = DatasetSpec::read_file(&file)?;
        let mut rows = Vec::new();
        for entry in spec.volumes.iter().take(max_volumes.max(1)) {
            let image_path = input.join(&entry.image);
            let image = pick(
                read_tiff(&image_path)?.to_f32(),
                spec.files.image_channels.as_deref(),
                &image_path,
            )?;
            let mask = match &entry.mask {
                Some(m) => {
                    let path = input.join(m);
                    let binary = pick(
                        read_tiff(&path)?.to_binary().map(f32::from),
                        spec.files.mask_channels.as_deref(),
                        &path,
                    )?
                    .map(|v| v as u8);
                    Some((binary, spec.mask_channels.clone()))
                }
                None => None,
            };
            rows.push(PreviewRow {
                label: format!("{} / {}", spec.name, entry.id),
                image: Some((image, spec.image_channels.clone())),
                mask,
            });
        }
        return Ok(rows);
    }
    let volume = read_tiff(input)?;
    let label = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = volume.shape()[0];
    let mut row = if mask.is_none() && looks_like_mask(&volume) {
        PreviewRow {
            label,
            image: None,
            mask: Some((volume.to_binary(), default_names(n, true))),
        }
    } else {
        PreviewRow {
            label,
            image: Some((volume.to_f32(), default_names(n, false))),
            mask: None,
        }
    };
    if let Some(m) = mask {
        let mv = read_tiff(m)?;
        let n = mv.shape()[0];
        row.mask = Some((mv.to_binary(), default_names(n, true)));
    }
    Ok(vec![row])
}

/// Reads `input` (see [`preview_rows`]) and writes the preview PNG `out`.
pub fn preview_path(
    input: &Path,
    mask: Option<&Path>,
    z: Option<usize>,
    max_volumes: usize,
    out: &Path,
) -> Result<(), SynthError> {
    let rows = preview_rows(input, mask, max_volumes)?;
    write_preview(&rows, z, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> PreviewRow {
        let mut img = Volume::<f32>::zeros([2, 4, 10, 12]);
        let mut mask = Volume::<u8>::zeros([2, 4, 10, 12]);
        for y in 3..6 {
            for x in 4..8 {
                img.set(1, 2, y, x, 100.0);
                mask.set(1, 2, y, x, 1);
            }
        }
        PreviewRow {
            label: "vol01".into(),
            image: Some((img, vec!["golgi".into(), "nuclei".into()])),
            mask: Some((mask, vec!["golgi".into(), "nuclei".into()])),
        }
    }

    #[test]
    fn layout_has_all_panels_and_mask_colours() {
        let p = render_preview(&[row()], None).unwrap();
        let titles: Vec<&str> = p.labels.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(titles[0], "vol01   z = 2 of 4");
        assert!(titles.contains(&"golgi image"));
        assert!(titles.contains(&"composite"));
        assert!(titles.contains(&"overlay (outlines)"));
        assert_eq!(p.rgb.len(), (p.width * p.height * 3) as usize);
        // The nuclei ground truth is drawn in green somewhere.
        assert!(p.rgb.chunks_exact(3).any(|c| c == NUCLEI));
    }

    #[test]
    fn errors_name_the_row() {
        let err = render_preview(&[row()], Some(9)).unwrap_err();
        assert!(err.starts_with("vol01: z = 9 is outside"), "{err}");
    }

    #[test]
    fn writes_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.png");
        write_preview(&[row()], None, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let err = write_preview(&[row()], None, &dir.path().join("p.jpg")).unwrap_err();
        assert!(err.to_string().contains(".png"), "{err}");
    }
}
