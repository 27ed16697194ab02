//! Reading TIFF stacks into (C, Z, Y, X) volumes, with the voxel values tifffile returns.
//!
//! Axis rules (docs/volumes.md):
//! - ImageJ files: `channels=` → C, `slices=` → Z, pages channel-fastest then z; `frames` > 1
//!   is refused (time series are not volumes).
//! - Multi-sample pages (RGB chunky, planar): the samples per pixel → C, pages → Z.
//! - Any other multi-page file: C = 1, Z = pages.
//!
//! Reading happens in two passes: every page directory is checked first (sizes, sample types,
//! layouts, that the data lies inside the file), so that bad input fails before a large
//! allocation; then the pages are decoded in parallel, each worker with its own file handle,
//! straight into the planes of the volume.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use rayon::prelude::*;
use tiff::decoder::{ChunkType, Decoder, Limits, ifd::Value};
use tiff::tags::Tag;

use super::TiffError;
use crate::volume::imagej::{ImageJDescription, micrometres_per_unit};
use crate::volume::{AnyVolume, DType, Spacing, Volume};

/// Reads a TIFF z-stack, ImageJ hyperstack, RGB stack or planar multi-sample stack into a
/// (C, Z, Y, X) volume of the file's sample type (uint8, uint16 or float32). Spacing is
/// filled only when the file declares all three steps in a known length unit.
pub fn read_tiff(path: &Path) -> Result<AnyVolume, TiffError> {
    let err = |message: String| TiffError::new(path, message);
    let file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let file_len = file
        .metadata()
        .map_err(|e| err(format!("cannot read: {e}")))?
        .len();
    let scan = scan(file, file_len).map_err(err)?;
    match scan.dtype {
        DType::U8 => decode::<u8>(path, &scan).map(AnyVolume::U8),
        DType::U16 => decode::<u16>(path, &scan).map(AnyVolume::U16),
        DType::F32 => decode::<f32>(path, &scan).map(AnyVolume::F32),
    }
}

/// The directory entries of one page that decide how it is read.
#[derive(Clone, Debug)]
struct Page {
    /// Position in the file's chain of directories.
    ifd: usize,
    width: u32,
    height: u32,
    samples: u16,
    bits: u16,
    /// SampleFormat: 1 unsigned, 2 signed, 3 float.
    format: u16,
    photometric: u16,
    planar: bool,
    compression: u16,
    predictor: u16,
    /// (offset, byte count) of every strip or tile.
    chunks: Vec<(u64, u64)>,
}

/// What the first pass learns: the geometry, the sample type and where each page goes.
#[derive(Debug)]
struct Scan {
    dtype: DType,
    /// [C, Z, Y, X].
    shape: [usize; 4],
    spacing: Option<Spacing>,
    /// Samples per pixel: each sample of a page becomes a channel.
    samples: usize,
    /// ImageJ channels stored as separate pages (page = z · channel_pages + c).
    channel_pages: usize,
    /// Pages to decode, in storage order.
    pages: Vec<Page>,
    /// ImageJ's contiguous layout: one directory, all planes back to back from its first
    /// strip (ImageJ's files over 4 GiB, tifffile's `truncate=True`).
    raw: Option<RawLayout>,
}

#[derive(Clone, Copy, Debug)]
struct RawLayout {
    offset: u64,
    page_bytes: u64,
    big_endian: bool,
}

/// Decoder limits. The planes are allocated by seglab (after the checks in `scan`) and decoded
/// with `read_image_bytes`, so the decoder's buffer limit only bounds tag value arrays: a
/// damaged count must give an error, not a multi-gigabyte allocation.
fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.decoding_buffer_size = 64 << 20;
    limits.intermediate_buffer_size = usize::MAX;
    limits.ifd_value_size = 64 << 20;
    limits
}

/// Checks the 8-byte header (byte order, 42 or BigTIFF's 43) and rewinds; returns whether
/// the file is big-endian.
fn check_header(mut file: &File) -> Result<bool, String> {
    let not_tiff = || "not a TIFF file (no TIFF header)".to_owned();
    let mut head = [0u8; 4];
    file.read_exact(&mut head).map_err(|_| not_tiff())?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| format!("cannot read: {e}"))?;
    let big_endian = match &head[..2] {
        b"II" => false,
        b"MM" => true,
        _ => return Err(not_tiff()),
    };
    let version = if big_endian {
        u16::from_be_bytes([head[2], head[3]])
    } else {
        u16::from_le_bytes([head[2], head[3]])
    };
    if version != 42 && version != 43 {
        return Err(not_tiff());
    }
    Ok(big_endian)
}

fn open_decoder(file: File) -> Result<Decoder<BufReader<File>>, String> {
    Decoder::new(BufReader::with_capacity(1 << 16, file))
        .map(|d| d.with_limits(limits()))
        .map_err(|e| describe(0, e))
}

/// A decoder error as one line naming the page.
fn describe(page: usize, e: tiff::TiffError) -> String {
    match e {
        tiff::TiffError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            format!("page {page}: unexpected end of file (the file is truncated)")
        }
        tiff::TiffError::IoError(e) => format!("page {page}: read error: {e}"),
        tiff::TiffError::FormatError(e) => format!("page {page}: corrupt TIFF: {e}"),
        tiff::TiffError::UnsupportedError(e) => format!("page {page}: unsupported TIFF: {e}"),
        tiff::TiffError::LimitsExceeded => {
            format!("page {page}: a tag or chunk is too large to be plausible (corrupt file?)")
        }
        other => format!("page {page}: {other}"),
    }
}

fn tag_u64(dec: &mut Decoder<BufReader<File>>, tag: Tag, default: u64) -> tiff::TiffResult<u64> {
    match dec.find_tag(tag)? {
        None => Ok(default),
        Some(v) => v
            .into_u64_vec()?
            .first()
            .copied()
            .ok_or(tiff::TiffError::FormatError(
                tiff::TiffFormatError::InvalidCountForTag(tag, 0),
            )),
    }
}

fn read_page(dec: &mut Decoder<BufReader<File>>, ifd: usize) -> tiff::TiffResult<Page> {
    let (width, height) = dec.dimensions()?;
    let (offsets_tag, counts_tag) = match dec.get_chunk_type() {
        ChunkType::Strip => (Tag::StripOffsets, Tag::StripByteCounts),
        ChunkType::Tile => (Tag::TileOffsets, Tag::TileByteCounts),
    };
    let offsets = dec.get_tag_u64_vec(offsets_tag)?;
    let counts = dec.get_tag_u64_vec(counts_tag)?;
    let small = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
    Ok(Page {
        ifd,
        width,
        height,
        samples: small(tag_u64(dec, Tag::SamplesPerPixel, 1)?),
        bits: small(tag_u64(dec, Tag::BitsPerSample, 1)?),
        format: small(tag_u64(dec, Tag::SampleFormat, 1)?),
        photometric: small(tag_u64(dec, Tag::PhotometricInterpretation, u64::MAX)?),
        planar: tag_u64(dec, Tag::PlanarConfiguration, 1)? == 2,
        compression: small(tag_u64(dec, Tag::Compression, 1)?),
        predictor: small(tag_u64(dec, Tag::Predictor, 1)?),
        chunks: offsets.into_iter().zip(counts).collect(),
    })
}

/// The first page's metadata that is not per page.
#[derive(Default)]
struct FileMetadata {
    description: Option<String>,
    /// Pixels per unit.
    x_resolution: Option<f64>,
    y_resolution: Option<f64>,
    resolution_unit: u64,
}

fn rational(v: Option<Value>) -> Option<f64> {
    match v? {
        Value::Rational(n, d) if n > 0 && d > 0 => Some(f64::from(n) / f64::from(d)),
        Value::Float(f) if f > 0.0 && f.is_finite() => Some(f64::from(f)),
        Value::Double(f) if f > 0.0 && f.is_finite() => Some(f),
        _ => None,
    }
}

fn read_metadata(dec: &mut Decoder<BufReader<File>>) -> tiff::TiffResult<FileMetadata> {
    let description = {
        let mut ifd = dec.image_ifd();
        match ifd.find_entry(Tag::ImageDescription) {
            None => None,
            Some(entry) => {
                // Raw bytes: ImageJ descriptions may hold Latin-1 text, which the crate's
                // strict ASCII reader would reject.
                let len = usize::try_from(entry.count())
                    .unwrap_or(usize::MAX)
                    .min(1 << 24);
                let mut buf = vec![0u8; len];
                ifd.find_tag_bytes(Tag::ImageDescription, &mut buf, 0)?;
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                buf.truncate(end);
                Some(match String::from_utf8(buf) {
                    Ok(s) => s,
                    Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
                })
            }
        }
    };
    Ok(FileMetadata {
        description,
        x_resolution: rational(dec.find_tag(Tag::XResolution).ok().flatten()),
        y_resolution: rational(dec.find_tag(Tag::YResolution).ok().flatten()),
        resolution_unit: tag_u64(dec, Tag::ResolutionUnit, 2).unwrap_or(2),
    })
}

fn scan(file: File, file_len: u64) -> Result<Scan, String> {
    if file_len == 0 {
        return Err("not a TIFF file (the file is empty)".to_owned());
    }
    let big_endian = check_header(&file)?;
    // From here on the header is valid: running out of data means the file is truncated.
    let mut dec = open_decoder(file)?;
    let meta = read_metadata(&mut dec).map_err(|e| describe(0, e))?;
    let mut all = Vec::new();
    loop {
        let ifd = all.len();
        all.push(read_page(&mut dec, ifd).map_err(|e| describe(ifd, e))?);
        if !dec.more_images() {
            break;
        }
        dec.next_image().map_err(|e| describe(ifd + 1, e))?;
    }

    let first = all[0].clone();
    let dtype = sample_type(&first)?;
    check_layout(&first)?;
    let samples = usize::from(first.samples);
    let imagej = match &meta.description {
        Some(text) => ImageJDescription::parse(text).map_err(|e| e.to_string())?,
        None => None,
    };
    let (channel_pages, slices, pages, raw) = match &imagej {
        None => (1, all.len(), all, None),
        Some(ij) => {
            let layout = ij.layout().map_err(|e| e.to_string())?;
            if layout.frames > 1 {
                return Err(format!(
                    "ImageJ frames={}: time series are not supported",
                    layout.frames
                ));
            }
            if samples > 1 && layout.channels > 1 {
                return Err(format!(
                    "ImageJ channels={} with {samples} samples per pixel is not supported",
                    layout.channels
                ));
            }
            let mut pages = all;
            let mut raw = None;
            if pages.len() == 1 && layout.images > 1 {
                raw = Some(raw_layout(
                    &pages[0],
                    dtype,
                    layout.images,
                    file_len,
                    big_endian,
                )?);
            } else if pages.len() < layout.images {
                return Err(format!(
                    "ImageJ images={} but the file has only {} pages",
                    layout.images,
                    pages.len()
                ));
            } else if pages.len() > layout.images {
                // ImageJ itself ignores directories past `images`.
                tracing::debug!(
                    "ImageJ images={}: ignoring {} extra pages",
                    layout.images,
                    pages.len() - layout.images
                );
                pages.truncate(layout.images);
            }
            (layout.channels, layout.slices, pages, raw)
        }
    };
    for page in &pages[1..] {
        check_same(&first, page)?;
    }
    if raw.is_none() {
        for page in &pages {
            check_chunks(page, dtype, file_len)?;
        }
    }
    let shape = [
        channel_pages * samples,
        slices,
        first.height as usize,
        first.width as usize,
    ];
    let spacing = spacing(imagej.as_ref(), &meta);
    Ok(Scan {
        dtype,
        shape,
        spacing,
        samples,
        channel_pages,
        pages,
        raw,
    })
}

fn sample_type(p: &Page) -> Result<DType, String> {
    match (p.format, p.bits) {
        (1, 8) => Ok(DType::U8),
        (1, 16) => Ok(DType::U16),
        (3, 32) => Ok(DType::F32),
        (format, bits) => {
            let kind = match format {
                1 => "uint",
                2 => "int",
                3 => "float",
                4 => "untyped",
                5 => "complex int",
                6 => "complex float",
                _ => "unknown",
            };
            Err(format!(
                "sample type {kind}{bits} is not supported (supported: uint8, uint16, float32)"
            ))
        }
    }
}

fn check_layout(p: &Page) -> Result<(), String> {
    match p.compression {
        1 | 5 | 8 | 32946 | 32773 => {}
        code => {
            let name = match code {
                2..=4 => "CCITT fax",
                6 | 7 => "JPEG",
                34712 | 33003 | 33004 | 33005 => "JPEG 2000",
                34887 => "LERC",
                34925 => "LZMA",
                50000 | 34926 => "Zstandard",
                50001 | 34927 => "WebP",
                50002 => "JPEG XL",
                _ => "unknown",
            };
            return Err(format!(
                "compression {name} ({code}) is not supported \
                 (supported: none, LZW, Deflate, PackBits)"
            ));
        }
    }
    match (p.photometric, p.samples) {
        (1, _) => {}
        // RGB, optionally with one extra sample (alpha): every sample is kept.
        (2, 3 | 4) => {}
        (2, samples) => {
            return Err(format!(
                "RGB pages with {samples} samples per pixel are not supported (3 or 4 are)"
            ));
        }
        (code, _) => {
            let name = match code {
                0 => "MinIsWhite (inverted grayscale)",
                3 => "palette",
                4 => "transparency mask",
                5 => "CMYK",
                6 => "YCbCr",
                8..=10 => "CIELab",
                u16::MAX => return Err("the PhotometricInterpretation tag is missing".into()),
                _ => "unknown",
            };
            return Err(format!(
                "photometric interpretation {name} ({code}) is not supported \
                 (supported: grayscale MinIsBlack, RGB)"
            ));
        }
    }
    if !matches!(p.predictor, 1..=3) {
        return Err(format!("predictor {} is not supported", p.predictor));
    }
    Ok(())
}

fn check_same(first: &Page, p: &Page) -> Result<(), String> {
    if (p.width, p.height) != (first.width, first.height) {
        return Err(format!(
            "page {} is {} × {} pixels but page 0 is {} × {}: \
             pages of different sizes are not supported",
            p.ifd, p.width, p.height, first.width, first.height
        ));
    }
    if (p.format, p.bits, p.samples) != (first.format, first.bits, first.samples) {
        let name = |q: &Page| {
            let kind = match sample_type(q) {
                Ok(t) => t.to_string(),
                Err(_) => format!("{}-bit (format {})", q.bits, q.format),
            };
            match q.samples {
                1 => format!("{kind} samples"),
                n => format!("{n} {kind} samples per pixel"),
            }
        };
        return Err(format!(
            "page {} holds {} but page 0 holds {}: \
             pages of different sample types are not supported",
            p.ifd,
            name(p),
            name(first)
        ));
    }
    check_layout(p).map_err(|e| format!("page {}: {e}", p.ifd))?;
    if p.planar != first.planar {
        return Err(format!(
            "page {} and page 0 differ in planar configuration (not supported)",
            p.ifd
        ));
    }
    Ok(())
}

fn page_bytes(p: &Page, dtype: DType) -> u64 {
    u64::from(p.width) * u64::from(p.height) * u64::from(p.samples) * dtype_size(dtype) as u64
}

fn dtype_size(dtype: DType) -> usize {
    match dtype {
        DType::U8 => 1,
        DType::U16 => 2,
        DType::F32 => 4,
    }
}

/// Every strip or tile must lie inside the file, and hold enough data for the pixels it
/// claims (compressed data cannot expand beyond 4096:1 with LZW, Deflate or PackBits).
fn check_chunks(p: &Page, dtype: DType, file_len: u64) -> Result<(), String> {
    let mut total: u64 = 0;
    for (i, &(offset, count)) in p.chunks.iter().enumerate() {
        let end = offset.saturating_add(count);
        if end > file_len {
            return Err(format!(
                "page {}: data block {i} ends at byte {end}, past the end of the file \
                 ({file_len} bytes): the file is truncated",
                p.ifd
            ));
        }
        total = total.saturating_add(count);
    }
    let need = page_bytes(p, dtype);
    let plausible = if p.compression == 1 {
        // Tiles are padded to whole tiles, strips may be padded too: at least the pixels.
        total >= need
    } else {
        total.saturating_mul(4096) >= need
    };
    if !plausible {
        return Err(format!(
            "page {}: its data blocks hold {total} bytes, too few for {} × {} pixels \
             (the file is corrupt)",
            p.ifd, p.width, p.height
        ));
    }
    Ok(())
}

fn raw_layout(
    p: &Page,
    dtype: DType,
    images: usize,
    file_len: u64,
    big_endian: bool,
) -> Result<RawLayout, String> {
    if p.compression != 1 || p.predictor != 1 {
        return Err(format!(
            "ImageJ images={images} in a single compressed page is not a layout ImageJ writes"
        ));
    }
    let Some(&(offset, _)) = p.chunks.first() else {
        return Err("page 0 has no data".to_owned());
    };
    // The planes follow the first strip back to back; the strips of the first page must be
    // contiguous for that to hold.
    let mut next = offset;
    for &(o, n) in &p.chunks {
        if o != next {
            return Err(format!(
                "ImageJ images={images} in one page needs contiguous strips, \
                 but a strip starts at byte {o} instead of {next}"
            ));
        }
        next = o.saturating_add(n);
    }
    let page_bytes = page_bytes(p, dtype);
    let end = (images as u64)
        .checked_mul(page_bytes)
        .and_then(|n| n.checked_add(offset))
        .unwrap_or(u64::MAX);
    if end > file_len {
        return Err(format!(
            "ImageJ images={images} stored contiguously need {end} bytes but the file has \
             {file_len}: the file is truncated"
        ));
    }
    Ok(RawLayout {
        offset,
        page_bytes,
        big_endian,
    })
}

/// (z, y, x) in µm when all three are declared: x and y from X/YResolution (pixels per unit),
/// z from ImageJ's `spacing=`, the unit from ImageJ's `unit=` (or the ResolutionUnit tag when
/// it says centimetre). Anything less leaves the spacing unknown.
fn spacing(imagej: Option<&ImageJDescription>, meta: &FileMetadata) -> Option<Spacing> {
    let unit = match imagej.and_then(|ij| ij.unit.as_deref()) {
        Some(u) => u.to_owned(),
        None if meta.resolution_unit == 3 => "cm".to_owned(),
        None => {
            tracing::debug!("no length unit declared: spacing unknown");
            return None;
        }
    };
    let Some(um) = micrometres_per_unit(&unit) else {
        tracing::debug!("unit {unit:?} is not a known length unit: spacing unknown");
        return None;
    };
    let (Some(xres), Some(yres)) = (meta.x_resolution, meta.y_resolution) else {
        tracing::debug!("no X/YResolution: spacing unknown");
        return None;
    };
    let Some(z) = imagej
        .and_then(|ij| ij.spacing)
        .filter(|z| *z > 0.0 && z.is_finite())
    else {
        tracing::debug!("no ImageJ spacing= (z step): spacing unknown");
        return None;
    };
    Some([z * um, um / yres, um / xres])
}

/// A sample type the reader produces.
trait Sample: Copy + Default + Send + Sync {
    const SIZE: usize;
    fn from_bytes(b: &[u8], big_endian: bool) -> Self;
}

impl Sample for u8 {
    const SIZE: usize = 1;
    fn from_bytes(b: &[u8], _: bool) -> Self {
        b[0]
    }
}

impl Sample for u16 {
    const SIZE: usize = 2;
    fn from_bytes(b: &[u8], big_endian: bool) -> Self {
        let b = [b[0], b[1]];
        if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }
}

impl Sample for f32 {
    const SIZE: usize = 4;
    fn from_bytes(b: &[u8], big_endian: bool) -> Self {
        let b = [b[0], b[1], b[2], b[3]];
        if big_endian {
            f32::from_be_bytes(b)
        } else {
            f32::from_le_bytes(b)
        }
    }
}

/// One page to decode and the planes of the volume it fills (one per sample).
struct Job<'a, T> {
    page: usize,
    planes: Vec<&'a mut [T]>,
}

fn decode<T: Sample>(path: &Path, scan: &Scan) -> Result<Volume<T>, TiffError> {
    let err = |message: String| TiffError::new(path, message);
    let [c, z, y, x] = scan.shape;
    let plane = y * x;
    let total = [c, z, y, x]
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .filter(|n| n.checked_mul(T::SIZE).is_some())
        .ok_or_else(|| err(format!("a volume of shape {:?} is too large", scan.shape)))?;
    let mut data: Vec<T> = Vec::new();
    data.try_reserve_exact(total).map_err(|_| {
        err(format!(
            "not enough memory for a volume of shape {:?} ({} MiB)",
            scan.shape,
            (total * T::SIZE) >> 20
        ))
    })?;
    data.resize(total, T::default());

    {
        // Plane (channel, z) of the volume, handed to the page that stores it.
        let mut planes: Vec<Option<&mut [T]>> = data.chunks_mut(plane).map(Some).collect();
        let pages = scan.raw.map_or(scan.pages.len(), |_| c / scan.samples * z);
        let mut jobs: Vec<Job<'_, T>> = Vec::with_capacity(pages);
        for page in 0..pages {
            let (zi, ci) = (page / scan.channel_pages, page % scan.channel_pages);
            let targets = (0..scan.samples)
                .map(|s| {
                    let channel = ci * scan.samples + s;
                    planes[channel * z + zi]
                        .take()
                        .expect("every plane belongs to exactly one page")
                })
                .collect();
            jobs.push(Job {
                page,
                planes: targets,
            });
        }
        match scan.raw {
            Some(raw) => read_raw(path, scan, raw, &mut jobs).map_err(err)?,
            None => {
                // Contiguous runs of pages, a few per thread so that uneven pages balance.
                let runs = (rayon::current_num_threads() * 2).max(1);
                let run_len = jobs.len().div_ceil(runs).max(1);
                jobs.par_chunks_mut(run_len)
                    .try_for_each(|run| decode_run(path, scan, run))
                    .map_err(err)?;
            }
        }
    }
    Ok(Volume::from_vec(scan.shape, data)
        .expect("the buffer was sized from the shape")
        .with_spacing(scan.spacing))
}

fn decode_run<T: Sample>(path: &Path, scan: &Scan, run: &mut [Job<'_, T>]) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut dec = open_decoder(file)?;
    let mut buf = Vec::new();
    for job in run {
        let page = &scan.pages[job.page];
        dec.seek_to_image(page.ifd)
            .map_err(|e| describe(page.ifd, e))?;
        buf.resize(page_bytes(page, scan.dtype) as usize, 0);
        dec.read_image_bytes(&mut buf)
            .map_err(|e| describe(page.ifd, e))?;
        // The decoder returns samples in native byte order.
        scatter(
            &buf,
            page.planar,
            &mut job.planes,
            cfg!(target_endian = "big"),
        );
    }
    Ok(())
}

fn read_raw<T: Sample>(
    path: &Path,
    scan: &Scan,
    raw: RawLayout,
    jobs: &mut [Job<'_, T>],
) -> Result<(), String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut buf = vec![0u8; raw.page_bytes as usize];
    let planar = scan.pages[0].planar;
    for job in jobs {
        let at = raw.offset + job.page as u64 * raw.page_bytes;
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| format!("image {}: read error at byte {at}: {e}", job.page))?;
        scatter(&buf, planar, &mut job.planes, raw.big_endian);
    }
    Ok(())
}

/// Distributes one decoded page into its planes: chunky samples are interleaved per pixel,
/// planar samples follow each other plane by plane.
fn scatter<T: Sample>(buf: &[u8], planar: bool, planes: &mut [&mut [T]], big_endian: bool) {
    let samples = planes.len();
    if samples == 1 || planar {
        let plane_bytes = buf.len() / samples;
        for (s, dst) in planes.iter_mut().enumerate() {
            let src = &buf[s * plane_bytes..(s + 1) * plane_bytes];
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(T::SIZE)) {
                *d = T::from_bytes(b, big_endian);
            }
        }
    } else {
        for (i, pixel) in buf.chunks_exact(T::SIZE * samples).enumerate() {
            for (s, dst) in planes.iter_mut().enumerate() {
                dst[i] = T::from_bytes(&pixel[s * T::SIZE..], big_endian);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::tiff::{BigTiff, Compression, TiffWriteOptions, write_tiff_with};
    use crate::volume::{AnyVolume, Volume};

    /// A small written stack: mostly directories, so that damage hits the metadata.
    fn small_file(dir: &Path, compression: Compression, bigtiff: BigTiff) -> Vec<u8> {
        let path = dir.join("small.tif");
        let v = Volume::from_vec([2, 3, 5, 4], (0..120u16).map(|i| i * 500).collect())
            .unwrap()
            .with_spacing(Some([1.0, 0.5, 0.5]));
        let options = TiffWriteOptions {
            compression,
            bigtiff,
        };
        write_tiff_with(&path, &AnyVolume::U16(v), &options).unwrap();
        std::fs::read(&path).unwrap()
    }

    fn check_one_line_error(path: &Path) -> String {
        match read_tiff(path) {
            Ok(_) => String::new(),
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with(&path.display().to_string()), "{text}");
                assert!(!text.contains('\n'), "{text:?}");
                text
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error_that_says_truncated() {
        let dir = tempfile::tempdir().unwrap();
        for (compression, bigtiff) in [
            (Compression::None, BigTiff::Never),
            (Compression::Lzw, BigTiff::Always),
        ] {
            let bytes = small_file(dir.path(), compression, bigtiff);
            let cut = dir.path().join("cut.tif");
            for len in 0..bytes.len() {
                std::fs::write(&cut, &bytes[..len]).unwrap();
                let text = check_one_line_error(&cut);
                assert!(!text.is_empty(), "{compression:?}: {len} bytes were read");
                assert!(
                    text.contains("truncated")
                        || text.contains("empty")
                        || text.contains("not a TIFF"),
                    "{len} bytes: {text}"
                );
            }
        }
    }

    #[test]
    fn damaged_files_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let damaged = dir.path().join("damaged.tif");
        for (compression, bigtiff) in [
            (Compression::None, BigTiff::Never),
            (Compression::Deflate, BigTiff::Never),
            (Compression::PackBits, BigTiff::Always),
        ] {
            let bytes = small_file(dir.path(), compression, bigtiff);
            for _ in 0..700 {
                let mut b = bytes.clone();
                for _ in 0..1 + next() % 3 {
                    let at = (next() % b.len() as u64) as usize;
                    b[at] = match next() % 4 {
                        0 => 0,
                        1 => 0xff,
                        _ => next() as u8,
                    };
                }
                std::fs::write(&damaged, &b).unwrap();
                let result = std::panic::catch_unwind(|| check_one_line_error(&damaged));
                assert!(result.is_ok(), "panic on damaged file: {:?}", b);
            }
        }
    }

    #[test]
    fn scatter_deinterleaves_chunky_and_splits_planar_pages() {
        let buf: Vec<u8> = (0..12).collect();
        let (mut r, mut g, mut b) = ([0u8; 4], [0u8; 4], [0u8; 4]);
        scatter(
            &buf,
            false,
            &mut [&mut r[..], &mut g[..], &mut b[..]],
            false,
        );
        assert_eq!((r, g, b), ([0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]));
        scatter(&buf, true, &mut [&mut r[..], &mut g[..], &mut b[..]], false);
        assert_eq!((r, g, b), ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]));
    }

    #[test]
    fn samples_decode_in_either_byte_order() {
        assert_eq!(u16::from_bytes(&[1, 2], false), 0x0201);
        assert_eq!(u16::from_bytes(&[1, 2], true), 0x0102);
        assert_eq!(f32::from_bytes(&1.5f32.to_be_bytes(), true), 1.5);
        assert_eq!(f32::from_bytes(&1.5f32.to_le_bytes(), false), 1.5);
    }

    #[test]
    fn spacing_needs_unit_resolution_and_z_step() {
        let ij = |text: &str| ImageJDescription::parse(text).unwrap().unwrap();
        let meta = FileMetadata {
            description: None,
            x_resolution: Some(4.0),
            y_resolution: Some(2.0),
            resolution_unit: 1,
        };
        let d = ij("ImageJ=1.11a\nunit=nm\nspacing=500\n");
        assert_eq!(spacing(Some(&d), &meta), Some([0.5, 0.0005, 0.00025]));
        let d = ij("ImageJ=1.11a\nunit=\\u00B5m\nspacing=2.0\n");
        assert_eq!(spacing(Some(&d), &meta), Some([2.0, 0.5, 0.25]));
        // No z step, unknown unit, inch, or no resolution: unknown.
        assert_eq!(spacing(Some(&ij("ImageJ=1.11a\nunit=um\n")), &meta), None);
        assert_eq!(
            spacing(Some(&ij("ImageJ=1\nunit=pixel\nspacing=1\n")), &meta),
            None
        );
        assert_eq!(
            spacing(Some(&ij("ImageJ=1\nunit=inch\nspacing=1\n")), &meta),
            None
        );
        let no_res = FileMetadata {
            x_resolution: None,
            ..meta
        };
        assert_eq!(
            spacing(Some(&ij("ImageJ=1\nunit=um\nspacing=1\n")), &no_res),
            None
        );
        assert_eq!(spacing(None, &FileMetadata::default()), None);
    }
}
