//! TIFF input and output (interim: the reader and writer land with the foundation work).

use std::path::{Path, PathBuf};

use super::{AnyVolume, Volume};

/// A TIFF problem, always naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TiffError {
    pub path: PathBuf,
    pub message: String,
}

/// Reads a TIFF z-stack or ImageJ hyperstack into a (C, Z, Y, X) volume.
pub fn read_tiff(path: &Path) -> Result<AnyVolume, TiffError> {
    Err(TiffError {
        path: path.to_owned(),
        message: "TIFF reading is not available yet".into(),
    })
}

/// Writes an ImageJ-compatible hyperstack (uint8, uint16 or float32).
pub fn write_tiff(path: &Path, _volume: &AnyVolume) -> Result<(), TiffError> {
    Err(TiffError {
        path: path.to_owned(),
        message: "TIFF writing is not available yet".into(),
    })
}

/// Writes a binary mask (0/1 in memory) as uint8 0/255, the convention of mask files.
pub fn write_mask(path: &Path, mask: &Volume<u8>) -> Result<(), TiffError> {
    write_tiff(
        path,
        &AnyVolume::U8(mask.map(|v| if v != 0 { 255 } else { 0 })),
    )
}
