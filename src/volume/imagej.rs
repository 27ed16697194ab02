//! ImageJ hyperstack metadata: parsing and formatting the `ImageDescription` text that ImageJ
//! (and tifffile with `imagej=True`) writes into the first page of a TIFF file.
//!
//! No maintained crate reads this format (docs/design.md §4), so it is hand-written here.
//! The text is a list of `key=value` lines that starts with `ImageJ=<version>`; the keys that
//! matter for volumes are `images`, `channels`, `slices`, `frames`, `spacing` and `unit`. Pages
//! are stored channel-fastest, then slice, then frame (ImageJ's XYCZT order). Values that
//! ImageJ escapes (`unit=\u00B5m`) are unescaped.

use std::fmt::Write as _;

/// The ImageJ version seglab writes; tifffile writes the same string, and ImageJ accepts it.
pub const IMAGEJ_VERSION: &str = "1.11a";

/// A malformed ImageJ description; names the key and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageJError {
    #[error("ImageJ description: {key}={value:?} is not {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(
        "ImageJ description: images={images} does not equal \
         channels={channels} × slices={slices} × frames={frames}"
    )]
    Inconsistent {
        images: usize,
        channels: usize,
        slices: usize,
        frames: usize,
    },
}

/// What an ImageJ `ImageDescription` declares. Keys absent from the text are `None`; keys
/// seglab has no use for (Labels, Ranges, xorigin, ...) are not kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageJDescription {
    /// The `ImageJ=` version string.
    pub version: String,
    /// Total number of 2-D planes (`images=`).
    pub images: Option<usize>,
    pub channels: Option<usize>,
    pub slices: Option<usize>,
    /// Time points; seglab reads only `frames` ≤ 1.
    pub frames: Option<usize>,
    pub hyperstack: Option<bool>,
    /// Display mode: `composite`, `color` or `grayscale`.
    pub mode: Option<String>,
    /// Length unit of `spacing` and of the X/YResolution tags, unescaped (`µm`, `micron`, ...).
    pub unit: Option<String>,
    /// Distance between slices, in `unit`.
    pub spacing: Option<f64>,
    pub loop_: Option<bool>,
    /// Display range.
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// The stack layout an ImageJ description resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageJLayout {
    pub images: usize,
    pub channels: usize,
    pub slices: usize,
    pub frames: usize,
}

impl ImageJDescription {
    /// Parses `text`; `Ok(None)` when it is not an ImageJ description (does not start with
    /// `ImageJ=`), which is how tifffile and ImageJ tell the two apart.
    pub fn parse(text: &str) -> Result<Option<Self>, ImageJError> {
        let text = text.trim_end_matches('\0');
        if !text.starts_with("ImageJ=") {
            return Ok(None);
        }
        let mut d = ImageJDescription::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "ImageJ" => d.version = value.to_owned(),
                "images" => d.images = Some(parse_count("images", value)?),
                "channels" => d.channels = Some(parse_count("channels", value)?),
                "slices" => d.slices = Some(parse_count("slices", value)?),
                "frames" => d.frames = Some(parse_count("frames", value)?),
                "hyperstack" => d.hyperstack = Some(parse_bool("hyperstack", value)?),
                "loop" => d.loop_ = Some(parse_bool("loop", value)?),
                "mode" => d.mode = Some(value.to_owned()),
                "unit" => d.unit = Some(unescape(value)),
                "spacing" => d.spacing = Some(parse_float("spacing", value)?),
                "min" => d.min = Some(parse_float("min", value)?),
                "max" => d.max = Some(parse_float("max", value)?),
                _ => {}
            }
        }
        Ok(Some(d))
    }

    /// Resolves channels × slices × frames the way ImageJ does: absent counts are 1, except
    /// that a missing `slices` takes what `images` leaves over. `images` must equal the product.
    pub fn layout(&self) -> Result<ImageJLayout, ImageJError> {
        let channels = self.channels.unwrap_or(1);
        let frames = self.frames.unwrap_or(1);
        // Without `images=`, the counts that are given define the stack.
        let images = self
            .images
            .unwrap_or(channels * self.slices.unwrap_or(1) * frames);
        let slices = match self.slices {
            Some(s) => s,
            None if images.is_multiple_of(channels * frames) => {
                (images / (channels * frames)).max(1)
            }
            None => 1,
        };
        if channels * slices * frames != images {
            return Err(ImageJError::Inconsistent {
                images,
                channels,
                slices,
                frames,
            });
        }
        Ok(ImageJLayout {
            images,
            channels,
            slices,
            frames,
        })
    }

    /// The description seglab writes for a hyperstack of `channels` × `slices` planes: ImageJ
    /// shows it with the right C and Z axes, and tifffile reads it as axes `ZCYX` (or `ZYX`
    /// for one channel). `spacing_um` is the z step in µm (written with `unit=micron`).
    pub fn hyperstack(
        channels: usize,
        slices: usize,
        spacing_um: Option<f64>,
        range: Option<(f64, f64)>,
    ) -> Self {
        ImageJDescription {
            version: IMAGEJ_VERSION.to_owned(),
            images: Some(channels * slices),
            channels: (channels > 1).then_some(channels),
            slices: (slices > 1).then_some(slices),
            frames: None,
            hyperstack: Some(true),
            mode: Some(
                if channels > 1 {
                    "composite"
                } else {
                    "grayscale"
                }
                .to_owned(),
            ),
            unit: spacing_um.map(|_| "micron".to_owned()),
            spacing: spacing_um,
            loop_: Some(false),
            min: range.map(|r| r.0),
            max: range.map(|r| r.1),
        }
    }

    /// The description text, in ImageJ's key order, newline-terminated, without the trailing
    /// NUL (the TIFF ASCII encoder adds it).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let version = if self.version.is_empty() {
            IMAGEJ_VERSION
        } else {
            &self.version
        };
        let _ = writeln!(s, "ImageJ={version}");
        let counts = [
            ("images", self.images),
            ("channels", self.channels),
            ("slices", self.slices),
            ("frames", self.frames),
        ];
        for (key, value) in counts {
            if let Some(v) = value {
                let _ = writeln!(s, "{key}={v}");
            }
        }
        if let Some(h) = self.hyperstack {
            let _ = writeln!(s, "hyperstack={h}");
        }
        if let Some(mode) = &self.mode {
            let _ = writeln!(s, "mode={mode}");
        }
        if let Some(unit) = &self.unit {
            let _ = writeln!(s, "unit={}", escape(unit));
        }
        if let Some(spacing) = self.spacing {
            let _ = writeln!(s, "spacing={}", format_float(spacing));
        }
        if let Some(l) = self.loop_ {
            let _ = writeln!(s, "loop={l}");
        }
        if let Some(min) = self.min {
            let _ = writeln!(s, "min={}", format_float(min));
        }
        if let Some(max) = self.max {
            let _ = writeln!(s, "max={}", format_float(max));
        }
        s
    }
}

/// Micrometres per `unit`, for the length units ImageJ writes; `None` for units that are not
/// lengths or not known (`pixel`, `inch`, ...), in which case seglab leaves spacing unknown.
pub fn micrometres_per_unit(unit: &str) -> Option<f64> {
    let u = unit.trim();
    match u.to_lowercase().as_str() {
        "micron" | "microns" | "um" | "µm" | "μm" | "micrometer" | "micrometre" | "micrometers"
        | "micrometres" => Some(1.0),
        "nm" | "nanometer" | "nanometre" | "nanometers" | "nanometres" => Some(1e-3),
        "mm" | "millimeter" | "millimetre" | "millimeters" | "millimetres" => Some(1e3),
        "cm" | "centimeter" | "centimetre" | "centimeters" | "centimetres" => Some(1e4),
        _ => None,
    }
}

/// A float as ImageJ reads it back exactly: integers keep a `.0` (`255.0`), others use the
/// shortest text that round-trips.
fn format_float(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn parse_count(key: &'static str, value: &str) -> Result<usize, ImageJError> {
    // ImageJ itself parses counts as doubles ("images=51.0" is read as 51).
    let bad = || ImageJError::BadValue {
        key,
        value: value.to_owned(),
        expected: "a positive whole number",
    };
    if let Ok(n) = value.parse::<usize>() {
        return if n > 0 { Ok(n) } else { Err(bad()) };
    }
    match value.parse::<f64>() {
        Ok(f) if f >= 1.0 && f == f.trunc() && f < 1e15 => Ok(f as usize),
        _ => Err(bad()),
    }
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, ImageJError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ImageJError::BadValue {
            key,
            value: value.to_owned(),
            expected: "true or false",
        }),
    }
}

fn parse_float(key: &'static str, value: &str) -> Result<f64, ImageJError> {
    value.parse::<f64>().map_err(|_| ImageJError::BadValue {
        key,
        value: value.to_owned(),
        expected: "a number",
    })
}

/// Decodes ImageJ's `\uXXXX` escapes (ImageJ escapes every non-ASCII character it writes).
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find("\\u") {
        out.push_str(&rest[..pos]);
        let hex = rest.get(pos + 2..pos + 6);
        match hex
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32)
        {
            Some(c) => {
                out.push(c);
                rest = &rest[pos + 6..];
            }
            None => {
                out.push_str("\\u");
                rest = &rest[pos + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The inverse of [`unescape`]: non-ASCII characters become `\uXXXX`, as ImageJ writes them.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                let _ = write!(out, "\\u{unit:04X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_hyperstack_description_as_imagej_writes_it() {
        let text = "ImageJ=1.54f\nimages=112\nchannels=2\nslices=56\nhyperstack=true\n\
                    mode=composite\nunit=\\u00B5m\nspacing=0.5\nloop=false\nmin=0.0\nmax=255.0\n\0";
        let d = ImageJDescription::parse(text).unwrap().unwrap();
        assert_eq!(d.version, "1.54f");
        assert_eq!(d.images, Some(112));
        assert_eq!(d.channels, Some(2));
        assert_eq!(d.slices, Some(56));
        assert_eq!(d.frames, None);
        assert_eq!(d.hyperstack, Some(true));
        assert_eq!(d.mode.as_deref(), Some("composite"));
        assert_eq!(d.unit.as_deref(), Some("\u{00B5}m"));
        assert_eq!(d.spacing, Some(0.5));
        assert_eq!(d.loop_, Some(false));
        assert_eq!((d.min, d.max), (Some(0.0), Some(255.0)));
        assert_eq!(
            d.layout().unwrap(),
            ImageJLayout {
                images: 112,
                channels: 2,
                slices: 56,
                frames: 1
            }
        );
    }

    #[test]
    fn other_descriptions_are_not_imagej() {
        assert_eq!(ImageJDescription::parse("{\"shape\": [3, 4, 5]}"), Ok(None));
        assert_eq!(ImageJDescription::parse(""), Ok(None));
        assert_eq!(ImageJDescription::parse("<?xml version"), Ok(None));
    }

    #[test]
    fn missing_slices_take_what_images_leave_over() {
        let d = ImageJDescription::parse("ImageJ=1.49p\nimages=51\nslices=51\nloop=false\n")
            .unwrap()
            .unwrap();
        assert_eq!(d.layout().unwrap().slices, 51);
        let d = ImageJDescription::parse("ImageJ=1.11a\nimages=6\nchannels=2\n")
            .unwrap()
            .unwrap();
        let l = d.layout().unwrap();
        assert_eq!((l.channels, l.slices, l.frames), (2, 3, 1));
        let d = ImageJDescription::parse("ImageJ=1.11a\n").unwrap().unwrap();
        assert_eq!(d.layout().unwrap().images, 1);
        let d = ImageJDescription::parse("ImageJ=1.11a\nchannels=2\nslices=4\n")
            .unwrap()
            .unwrap();
        assert_eq!(d.layout().unwrap().images, 8);
    }

    #[test]
    fn inconsistent_counts_are_an_error_naming_them() {
        let d = ImageJDescription::parse("ImageJ=1.11a\nimages=7\nchannels=2\nslices=3\n")
            .unwrap()
            .unwrap();
        let err = d.layout().unwrap_err().to_string();
        assert!(
            err.contains("images=7") && err.contains("channels=2"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = ImageJDescription::parse("ImageJ=1.11a\nchannels=two\n").unwrap_err();
        assert!(err.to_string().contains("channels=\"two\""), "{err}");
        let err = ImageJDescription::parse("ImageJ=1.11a\nslices=0\n").unwrap_err();
        assert!(err.to_string().contains("positive whole number"), "{err}");
        let err = ImageJDescription::parse("ImageJ=1.11a\nspacing=abc\n").unwrap_err();
        assert!(err.to_string().contains("spacing"), "{err}");
        // ImageJ reads counts as doubles.
        let d = ImageJDescription::parse("ImageJ=1.11a\nimages=4.0\n")
            .unwrap()
            .unwrap();
        assert_eq!(d.images, Some(4));
    }

    #[test]
    fn formats_the_hyperstack_seglab_writes() {
        let d = ImageJDescription::hyperstack(2, 56, Some(0.5), Some((0.0, 4171.0)));
        assert_eq!(
            d.to_text(),
            "ImageJ=1.11a\nimages=112\nchannels=2\nslices=56\nhyperstack=true\n\
             mode=composite\nunit=micron\nspacing=0.5\nloop=false\nmin=0.0\nmax=4171.0\n"
        );
        let d = ImageJDescription::hyperstack(1, 3, None, None);
        assert_eq!(
            d.to_text(),
            "ImageJ=1.11a\nimages=3\nslices=3\nhyperstack=true\nmode=grayscale\nloop=false\n"
        );
    }

    #[test]
    fn formatted_text_parses_back_to_the_same_description() {
        let d = ImageJDescription::hyperstack(3, 7, Some(2.0 / 3.0), Some((-1.5, 1e-7)));
        let back = ImageJDescription::parse(&d.to_text()).unwrap().unwrap();
        assert_eq!(back, d);
        let mut d = d;
        d.unit = Some("\u{00B5}m".into());
        assert!(d.to_text().contains("unit=\\u00B5m\n"));
        assert_eq!(ImageJDescription::parse(&d.to_text()).unwrap().unwrap(), d);
    }

    #[test]
    fn units_convert_to_micrometres() {
        for u in ["micron", "um", "µm", "\u{03BC}m", "Micron"] {
            assert_eq!(micrometres_per_unit(u), Some(1.0), "{u}");
        }
        assert_eq!(micrometres_per_unit("nm"), Some(1e-3));
        assert_eq!(micrometres_per_unit("mm"), Some(1e3));
        assert_eq!(micrometres_per_unit("cm"), Some(1e4));
        assert_eq!(micrometres_per_unit("inch"), None);
        assert_eq!(micrometres_per_unit("pixel"), None);
        assert_eq!(micrometres_per_unit(""), None);
    }

    #[test]
    fn unescape_leaves_broken_escapes_alone() {
        assert_eq!(unescape("\\u00B5m"), "\u{00B5}m");
        assert_eq!(unescape("a\\uZZZZb"), "a\\uZZZZb");
        assert_eq!(unescape("end\\u00"), "end\\u00");
        assert_eq!(escape("\u{00B5}m"), "\\u00B5m");
    }
}
