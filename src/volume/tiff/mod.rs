//! TIFF input and output for volumes: [`read_tiff`] turns z-stacks, ImageJ hyperstacks, RGB
//! and planar multi-sample stacks into a (C, Z, Y, X) [`AnyVolume`]; [`write_tiff`] and
//! [`write_tiff_with`] write ImageJ-compatible hyperstacks; [`write_mask`] writes binary masks
//! as uint8 0/255.
//!
//! Pixel decoding and encoding use the `tiff` crate; the page-to-axis mapping, ImageJ metadata
//! ([`super::imagej`]), file layout and every validation are seglab's own. Errors are
//! [`TiffError`]s whose text starts with the file path and then names the problem.

use std::path::{Path, PathBuf};

use super::{AnyVolume, Volume};

mod read;
mod write;

pub use read::read_tiff;
pub use write::{write_rgb_stack, write_tiff, write_tiff_with};

/// A TIFF problem, always naming the file: `<path>: <problem>`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TiffError {
    pub path: PathBuf,
    pub message: String,
}

impl TiffError {
    pub(crate) fn new(path: &Path, message: impl Into<String>) -> Self {
        TiffError {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

impl From<crate::atomic::WriteError> for TiffError {
    fn from(e: crate::atomic::WriteError) -> Self {
        TiffError {
            path: e.path,
            message: e.message,
        }
    }
}

/// Compression of written pages. All four are read back by ImageJ and tifffile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed: the fastest to read and write, and the layout ImageJ opens directly.
    #[default]
    None,
    Lzw,
    /// zlib/Deflate (TIFF compression 8), at a balanced level.
    Deflate,
    PackBits,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lzw => "LZW",
            Compression::Deflate => "Deflate",
            Compression::PackBits => "PackBits",
        }
    }
}

/// Whether to write classic TIFF or BigTIFF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BigTiff {
    /// BigTIFF only when the file could exceed classic TIFF's 4 GiB offsets.
    #[default]
    Auto,
    Always,
    Never,
}

/// Options of [`write_tiff_with`]; the default is what [`write_tiff`] does (uncompressed,
/// BigTIFF only above 4 GiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TiffWriteOptions {
    pub compression: Compression,
    pub bigtiff: BigTiff,
}

/// Writes a binary mask (0/1 in memory) as uint8 0/255, the convention of mask files
/// (docs/published-code.md §1.2: masks are 0/255 on disk). Any non-zero voxel is
/// foreground.
pub fn write_mask(path: &Path, mask: &Volume<u8>) -> Result<(), TiffError> {
    write_tiff(
        path,
        &AnyVolume::U8(mask.map(|v| if v != 0 { 255 } else { 0 })),
    )
}
