//! Writing ImageJ-compatible hyperstacks.
//!
//! Layout (docs/design.md §6: output is ImageJ hyperstacks): one grayscale page per
//! (z, c), channel fastest then z, the ImageJ description in the first page, X/YResolution in
//! pixels per µm. Uncompressed pixel data is one contiguous block because ImageJ reads an
//! uncompressed stack from the first page's offset alone, ignoring the other pages; compressed
//! pages are split into strips of about 64 KiB and compressed in parallel. Files are written to
//! a temporary name in the target folder and renamed, so a crash never leaves a partial file.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use rayon::prelude::*;
use tiff::encoder::compression::{CompressionAlgorithm, Deflate, DeflateLevel, Lzw, Packbits};
use tiff::encoder::{
    DirectoryEncoder, Rational, TiffEncoder, TiffKind, TiffKindBig, TiffKindStandard, TiffValue,
};
use tiff::tags::Tag;

use super::{BigTiff, Compression, TiffError, TiffWriteOptions};
use crate::volume::imagej::ImageJDescription;
use crate::volume::{AnyVolume, Volume};

/// Writes `volume` as an ImageJ hyperstack, uncompressed (BigTIFF only above 4 GiB).
pub fn write_tiff(path: &Path, volume: &AnyVolume) -> Result<(), TiffError> {
    write_tiff_with(path, volume, &TiffWriteOptions::default())
}

/// Writes `volume` as an ImageJ hyperstack with the given compression and BigTIFF choice.
/// ImageJ and tifffile read the result back with channels on C and slices on Z
/// (tifffile axes `ZCYX`, or `ZYX` for one channel) and the volume's spacing.
pub fn write_tiff_with(
    path: &Path,
    volume: &AnyVolume,
    options: &TiffWriteOptions,
) -> Result<(), TiffError> {
    match volume {
        AnyVolume::U8(v) => write_volume(path, v, options),
        AnyVolume::U16(v) => write_volume(path, v, options),
        AnyVolume::F32(v) => write_volume(path, v, options),
    }
}

/// A sample type seglab writes.
trait Sample: Copy + Send + Sync {
    const BITS: u16;
    /// TIFF SampleFormat: 1 unsigned integer, 3 IEEE float.
    const FORMAT: u16;
    /// The samples as bytes in native order (the order the encoder declares in the header).
    fn bytes(data: &[Self]) -> Cow<'_, [u8]>;
    /// The value as f64 when it can be part of a display range (finite).
    fn finite(self) -> Option<f64>;
}

impl Sample for u8 {
    const BITS: u16 = 8;
    const FORMAT: u16 = 1;
    fn bytes(data: &[Self]) -> Cow<'_, [u8]> {
        Cow::Borrowed(data)
    }
    fn finite(self) -> Option<f64> {
        Some(f64::from(self))
    }
}

impl Sample for u16 {
    const BITS: u16 = 16;
    const FORMAT: u16 = 1;
    fn bytes(data: &[Self]) -> Cow<'_, [u8]> {
        TiffValue::data(data)
    }
    fn finite(self) -> Option<f64> {
        Some(f64::from(self))
    }
}

impl Sample for f32 {
    const BITS: u16 = 32;
    const FORMAT: u16 = 3;
    fn bytes(data: &[Self]) -> Cow<'_, [u8]> {
        TiffValue::data(data)
    }
    fn finite(self) -> Option<f64> {
        self.is_finite().then_some(f64::from(self))
    }
}

/// Everything the page writer needs besides the samples.
struct Plan {
    channels: usize,
    slices: usize,
    width: u32,
    height: u32,
    description: String,
    /// (XResolution, YResolution) in pixels per µm.
    resolution: Option<(Rational, Rational)>,
    compression: Compression,
}

/// Uncompressed strips are whole pages; compressed strips hold about this many bytes.
const COMPRESSED_STRIP_BYTES: usize = 1 << 16;
/// Pages compressed in parallel before they are written out (bounds the memory held).
const PAGES_PER_BATCH: usize = 32;
/// Classic TIFF offsets are 32-bit; past this size the file must be BigTIFF.
const CLASSIC_LIMIT: u64 = u32::MAX as u64;

fn write_volume<T: Sample>(
    path: &Path,
    volume: &Volume<T>,
    options: &TiffWriteOptions,
) -> Result<(), TiffError> {
    let [c, z, y, x] = volume.shape();
    if c == 0 || z == 0 || y == 0 || x == 0 {
        return Err(TiffError::new(
            path,
            format!("cannot write an empty volume of shape {:?}", volume.shape()),
        ));
    }
    let (Ok(width), Ok(height)) = (u32::try_from(x), u32::try_from(y)) else {
        return Err(TiffError::new(
            path,
            format!("image planes of {y} × {x} pixels exceed the TIFF limit of 2^32 - 1"),
        ));
    };
    let (spacing_z, resolution) = match volume.spacing {
        None => (None, None),
        Some(s) => {
            for (axis, v) in ["z", "y", "x"].iter().zip(s) {
                if !(v.is_finite() && v > 0.0) {
                    return Err(TiffError::new(
                        path,
                        format!("spacing {axis} must be a positive number of µm, got {v}"),
                    ));
                }
            }
            let per_um = |v: f64| {
                let (n, d) = rational_approximation(1.0 / v);
                Rational { n, d }
            };
            (Some(s[0]), Some((per_um(s[2]), per_um(s[1]))))
        }
    };
    let range = display_range(volume.data());
    let plan = Plan {
        channels: c,
        slices: z,
        width,
        height,
        description: ImageJDescription::hyperstack(c, z, spacing_z, range).to_text(),
        resolution,
        compression: options.compression,
    };
    let bigtiff = match options.bigtiff {
        BigTiff::Always => true,
        BigTiff::Never => false,
        BigTiff::Auto => worst_case_file_size::<T>(&plan) > CLASSIC_LIMIT,
    };
    write_atomically(path, |w| {
        let result = if bigtiff {
            write_pages::<T, TiffKindBig>(w, volume, &plan)
        } else {
            write_pages::<T, TiffKindStandard>(w, volume, &plan)
        };
        result.map_err(|e| match e {
            tiff::TiffError::IoError(io) => io,
            tiff::TiffError::IntSizeError => io::Error::other(
                "the file exceeds 4 GiB; write it as BigTIFF (BigTiff::Auto or Always)",
            ),
            other => io::Error::other(other.to_string()),
        })
    })
}

/// An upper bound of the file size, used to choose BigTIFF before anything is written:
/// LZW can expand incompressible data by half, the other codecs by a few bytes per strip.
fn worst_case_file_size<T: Sample>(plan: &Plan) -> u64 {
    let pages = (plan.channels * plan.slices) as u64;
    let raw = pages * u64::from(plan.width) * u64::from(plan.height) * u64::from(T::BITS / 8);
    let data = match plan.compression {
        Compression::None => raw,
        Compression::Lzw => raw + raw / 2,
        Compression::Deflate | Compression::PackBits => raw + raw / 64,
    };
    let rows = pages * u64::from(plan.height);
    // Per page: the IFD (~20 entries) and strip tables (at most one strip per row).
    data + pages * 512 + rows * 16 + plan.description.len() as u64 + 64
}

/// The display range ImageJ shows: the finite minimum and maximum of all samples.
fn display_range<T: Sample>(data: &[T]) -> Option<(f64, f64)> {
    data.par_chunks(1 << 20)
        .filter_map(|chunk| {
            chunk
                .iter()
                .filter_map(|v| v.finite())
                .fold(None, |acc, v| {
                    Some(match acc {
                        None => (v, v),
                        Some((lo, hi)) => (f64::min(lo, v), f64::max(hi, v)),
                    })
                })
        })
        .reduce_with(|a, b| (a.0.min(b.0), a.1.max(b.1)))
}

/// The samples of page `p` (channel fastest, then z).
fn page<T: Copy>(volume: &Volume<T>, p: usize) -> &[T] {
    let [c, _, y, x] = volume.shape();
    let plane = y * x;
    let (zi, ci) = (p / c, p % c);
    &volume.channel(ci)[zi * plane..(zi + 1) * plane]
}

fn write_pages<T: Sample, K: TiffKind>(
    w: &mut BufWriter<File>,
    volume: &Volume<T>,
    plan: &Plan,
) -> tiff::TiffResult<()> {
    let mut encoder = TiffEncoder::<_, K>::new_generic(w)?;
    let pages = plan.channels * plan.slices;
    let row_bytes = plan.width as usize * usize::from(T::BITS / 8);
    let page_bytes = row_bytes * plan.height as usize;

    if plan.compression == Compression::None {
        // All pixel data first, as one block, then one IFD per page pointing into it.
        let mut dir = encoder.image_directory()?;
        dir.write_tag(Tag::ImageDescription, plan.description.as_str())?;
        let mut offsets = Vec::with_capacity(pages);
        for p in 0..pages {
            offsets.push(dir.write_data(&*T::bytes(page(volume, p)))?);
        }
        let counts = [page_bytes as u64];
        write_page_tags::<T, K>(&mut dir, plan, plan.height, &offsets[..1], &counts)?;
        dir.finish()?;
        for &offset in &offsets[1..] {
            let mut dir = encoder.image_directory()?;
            write_page_tags::<T, K>(&mut dir, plan, plan.height, &[offset], &counts)?;
            dir.finish()?;
        }
        return Ok(());
    }

    let rows_per_strip = (COMPRESSED_STRIP_BYTES / row_bytes).clamp(1, plan.height as usize);
    for first in (0..pages).step_by(PAGES_PER_BATCH) {
        let batch = first..(first + PAGES_PER_BATCH).min(pages);
        let compressed: Vec<(Vec<u8>, Vec<u64>)> = batch
            .clone()
            .into_par_iter()
            .map(|p| {
                compress_page(
                    &T::bytes(page(volume, p)),
                    row_bytes,
                    rows_per_strip,
                    plan.compression,
                )
            })
            .collect::<io::Result<_>>()?;
        for (p, (data, counts)) in batch.zip(compressed) {
            let mut dir = encoder.image_directory()?;
            if p == 0 {
                dir.write_tag(Tag::ImageDescription, plan.description.as_str())?;
            }
            let base = dir.write_data(data.as_slice())?;
            let offsets: Vec<u64> = counts
                .iter()
                .scan(base, |next, &n| {
                    let at = *next;
                    *next += n;
                    Some(at)
                })
                .collect();
            write_page_tags::<T, K>(&mut dir, plan, rows_per_strip as u32, &offsets, &counts)?;
            dir.finish()?;
        }
    }
    Ok(())
}

/// The tags of one grayscale page. The IFD encoder sorts them by tag number.
fn write_page_tags<T: Sample, K: TiffKind>(
    dir: &mut DirectoryEncoder<'_, &mut BufWriter<File>, K>,
    plan: &Plan,
    rows_per_strip: u32,
    offsets: &[u64],
    counts: &[u64],
) -> tiff::TiffResult<()> {
    let compression: u16 = match plan.compression {
        Compression::None => 1,
        Compression::Lzw => 5,
        Compression::Deflate => 8,
        Compression::PackBits => 32773,
    };
    dir.write_tag(Tag::NewSubfileType, 0u32)?;
    dir.write_tag(Tag::ImageWidth, plan.width)?;
    dir.write_tag(Tag::ImageLength, plan.height)?;
    dir.write_tag(Tag::BitsPerSample, T::BITS)?;
    dir.write_tag(Tag::Compression, compression)?;
    dir.write_tag(Tag::PhotometricInterpretation, 1u16)?; // MinIsBlack
    dir.write_tag(Tag::SamplesPerPixel, 1u16)?;
    dir.write_tag(Tag::RowsPerStrip, rows_per_strip)?;
    dir.write_tag(Tag::PlanarConfiguration, 1u16)?;
    dir.write_tag(Tag::SampleFormat, T::FORMAT)?;
    if let Some((xres, yres)) = &plan.resolution {
        dir.write_tag(Tag::XResolution, xres.clone())?;
        dir.write_tag(Tag::YResolution, yres.clone())?;
        // "None": the unit is the description's `unit=micron`, as ImageJ writes it.
        dir.write_tag(Tag::ResolutionUnit, 1u16)?;
    }
    let offsets = offsets
        .iter()
        .map(|&o| K::convert_offset(o))
        .collect::<Result<Vec<_>, _>>()?;
    let counts = counts
        .iter()
        .map(|&n| K::convert_offset(n))
        .collect::<Result<Vec<_>, _>>()?;
    dir.write_tag(Tag::StripOffsets, K::convert_slice(&offsets))?;
    dir.write_tag(Tag::StripByteCounts, K::convert_slice(&counts))?;
    Ok(())
}

/// Compresses one page strip by strip; returns the strips back to back and their lengths.
fn compress_page(
    bytes: &[u8],
    row_bytes: usize,
    rows_per_strip: usize,
    compression: Compression,
) -> io::Result<(Vec<u8>, Vec<u64>)> {
    let mut out = Vec::with_capacity(bytes.len() / 2);
    let mut counts = Vec::new();
    for strip in bytes.chunks(row_bytes * rows_per_strip) {
        let before = out.len();
        match compression {
            Compression::None => out.extend_from_slice(strip),
            Compression::Lzw => {
                Lzw.write_to(&mut out, strip)?;
            }
            Compression::Deflate => {
                Deflate::with_level(DeflateLevel::Balanced).write_to(&mut out, strip)?;
            }
            Compression::PackBits => {
                // PackBits runs must not cross rows (TIFF 6.0, section 9).
                for row in strip.chunks(row_bytes) {
                    Packbits.write_to(&mut out, row)?;
                }
            }
        }
        counts.push((out.len() - before) as u64);
    }
    Ok((out, counts))
}

/// Writes a 3-channel uint8 volume as a stack of RGB pages, one per z slice, channels 0, 1, 2
/// interleaved as red, green, blue (chunky), uncompressed: the layout of the published crops and
/// masks (thesis §4.1: red = Golgi, green = nuclei, blue = nucleus–Golgi pairs), which tifffile
/// reads as (Z, Y, X, 3). No ImageJ description is written.
pub fn write_rgb_stack(path: &Path, volume: &Volume<u8>) -> Result<(), TiffError> {
    let [c, z, y, x] = volume.shape();
    if c != 3 || z == 0 || y == 0 || x == 0 {
        return Err(TiffError::new(
            path,
            format!(
                "an RGB stack needs 3 channels and a non-empty volume, got shape {:?}",
                volume.shape()
            ),
        ));
    }
    let (Ok(width), Ok(height)) = (u32::try_from(x), u32::try_from(y)) else {
        return Err(TiffError::new(
            path,
            format!("image planes of {y} × {x} pixels exceed the TIFF limit of 2^32 - 1"),
        ));
    };
    let plane = y * x;
    write_atomically(path, |w| {
        let mut encoder = TiffEncoder::new(w).map_err(io::Error::other)?;
        let mut rgb = vec![0u8; plane * 3];
        for zi in 0..z {
            for (ci, channel) in volume.channel_slices().enumerate() {
                let slice = &channel[zi * plane..(zi + 1) * plane];
                for (dst, &v) in rgb[ci..].iter_mut().step_by(3).zip(slice) {
                    *dst = v;
                }
            }
            encoder
                .write_image::<tiff::encoder::colortype::RGB8>(width, height, &rgb)
                .map_err(io::Error::other)?;
        }
        Ok(())
    })
}

/// The closest fraction n/d to `v` with n and d within u32 (continued fractions), so that a
/// resolution of 1/spacing survives the TIFF RATIONAL type with ~1e-15 relative error.
fn rational_approximation(v: f64) -> (u32, u32) {
    let max = f64::from(u32::MAX);
    if v >= max {
        return (u32::MAX, 1);
    }
    if v <= 1.0 / max {
        return (1, u32::MAX);
    }
    // Convergents h/k of the continued fraction of v.
    let (mut h0, mut h1) = (0.0_f64, 1.0_f64);
    let (mut k0, mut k1) = (1.0_f64, 0.0_f64);
    let mut x = v;
    let mut best = (v.round().max(1.0), 1.0);
    for _ in 0..64 {
        let a = x.floor();
        let (h2, k2) = (a * h1 + h0, a * k1 + k0);
        if h2 > max || k2 > max {
            break;
        }
        best = (h2, k2);
        (h0, h1, k0, k1) = (h1, h2, k1, k2);
        let frac = x - a;
        if frac < 1e-12 || (h2 / k2 - v).abs() <= v * 1e-16 {
            break;
        }
        x = 1.0 / frac;
    }
    (best.0 as u32, best.1 as u32)
}

/// Runs `write` on a buffered temporary file next to `path`, flushes and syncs it, then
/// renames it to `path` ([`crate::atomic::write_file_with`]). On any error the temporary file
/// is removed and `path` is untouched.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), TiffError> {
    crate::atomic::write_file_with(path, |tmp| {
        let written = (|| {
            let file = OpenOptions::new().write(true).create_new(true).open(tmp)?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            write(&mut w)?;
            w.flush()?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        written.map_err(|e| TiffError::new(path, format!("cannot write: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn rational_approximation_is_exact_for_simple_and_close_for_others() {
        assert_eq!(rational_approximation(2.0), (2, 1));
        assert_eq!(rational_approximation(0.5), (1, 2));
        assert_eq!(rational_approximation(1.0 / 0.3), (10, 3));
        for v in [1.0 / 0.1135, 8.81057268722467, 1e-6, 12345.678, 4e8] {
            let (n, d) = rational_approximation(v);
            let back = f64::from(n) / f64::from(d);
            assert!((back - v).abs() <= v * 1e-12, "{v}: {n}/{d} = {back}");
        }
        assert_eq!(rational_approximation(1e12), (u32::MAX, 1));
    }

    #[test]
    fn pages_are_channel_fastest_then_z() {
        let v = Volume::from_vec([2, 3, 1, 2], (0..12u8).collect()).unwrap();
        // page 0 = (z0, c0), page 1 = (z0, c1), page 2 = (z1, c0), ...
        assert_eq!(page(&v, 0), &[0, 1]);
        assert_eq!(page(&v, 1), &[6, 7]);
        assert_eq!(page(&v, 2), &[2, 3]);
        assert_eq!(page(&v, 5), &[10, 11]);
    }

    #[test]
    fn display_range_ignores_non_finite_values() {
        assert_eq!(
            display_range(&[f32::NAN, 2.0, -1.0, f32::INFINITY]),
            Some((-1.0, 2.0))
        );
        assert_eq!(display_range(&[f32::NAN]), None);
        assert_eq!(display_range(&[7u16, 3, 9]), Some((3.0, 9.0)));
    }

    #[test]
    fn failed_writes_leave_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.tif");
        let err = write_atomically(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn bad_spacing_is_rejected_naming_the_axis() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.tif");
        let v = Volume::<u8>::zeros([1, 2, 2, 2]).with_spacing(Some([1.0, 0.0, 1.0]));
        let err = write_tiff(&path, &v.into()).unwrap_err().to_string();
        assert!(err.contains("spacing y") && err.contains("got 0"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn bigtiff_is_chosen_only_when_offsets_could_overflow() {
        let plan = |slices, compression| Plan {
            channels: 2,
            slices,
            width: 1024,
            height: 1024,
            description: String::new(),
            resolution: None,
            compression,
        };
        assert!(worst_case_file_size::<u16>(&plan(56, Compression::None)) < CLASSIC_LIMIT);
        assert!(worst_case_file_size::<u16>(&plan(2048, Compression::None)) > CLASSIC_LIMIT);
        // 3 GiB of samples fit uncompressed, but LZW's worst case (+50 %) could not.
        assert!(worst_case_file_size::<u16>(&plan(768, Compression::None)) < CLASSIC_LIMIT);
        assert!(worst_case_file_size::<u16>(&plan(768, Compression::Lzw)) > CLASSIC_LIMIT);
        assert!(worst_case_file_size::<u16>(&plan(640, Compression::Lzw)) < CLASSIC_LIMIT);
    }
}
