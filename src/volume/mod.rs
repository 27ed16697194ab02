//! Volumes: dense 3-D multi-channel arrays in (C, Z, Y, X) order with optional voxel spacing,
//! and their TIFF input/output.
//!
//! [`Volume`] is the one array type of seglab: images, masks, probabilities and synthetic
//! masks all travel as a `Volume<T>`. [`AnyVolume`] holds a volume whose sample type is only
//! known at run time (what a TIFF file contains). [`tiff`] reads and writes TIFF stacks and
//! ImageJ hyperstacks ([`read_tiff`], [`write_tiff`], [`write_mask`]), [`imagej`] parses and
//! formats ImageJ's metadata, [`stats`] computes per-channel statistics. This module does no
//! preprocessing and knows nothing about datasets; see `dataset/` for that.

use std::fmt;

pub mod imagej;
pub mod stats;
pub mod tiff;

pub use tiff::{
    BigTiff, Compression, TiffError, TiffWriteOptions, read_tiff, write_mask, write_rgb_stack,
    write_tiff, write_tiff_with,
};

/// Voxel spacing (z, y, x) in micrometres.
pub type Spacing = [f64; 3];

/// Errors of volume construction and access.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("shape {shape:?} needs {expected} samples, got {got}")]
    DataLength {
        shape: [usize; 4],
        expected: usize,
        got: usize,
    },
    #[error("channel {channel} out of range for a volume with {channels} channels")]
    Channel { channel: usize, channels: usize },
    #[error("shape mismatch: {a:?} vs {b:?}")]
    ShapeMismatch { a: [usize; 4], b: [usize; 4] },
}

/// A dense volume of samples `T` in (C, Z, Y, X) order (x fastest).
#[derive(Clone, PartialEq)]
pub struct Volume<T> {
    shape: [usize; 4],
    data: Vec<T>,
    /// Voxel spacing (z, y, x) in µm, when the source file declares it.
    pub spacing: Option<Spacing>,
}

impl<T> fmt::Debug for Volume<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("shape", &self.shape)
            .field("spacing", &self.spacing)
            .finish_non_exhaustive()
    }
}

impl<T: Copy + Default> Volume<T> {
    /// A volume of `shape` = [C, Z, Y, X] filled with `T::default()` (zero).
    pub fn zeros(shape: [usize; 4]) -> Self {
        Self {
            shape,
            data: vec![T::default(); shape.iter().product()],
            spacing: None,
        }
    }
}

impl<T: Copy> Volume<T> {
    /// A volume of `shape` filled with `value`.
    pub fn filled(shape: [usize; 4], value: T) -> Self {
        Self {
            shape,
            data: vec![value; shape.iter().product()],
            spacing: None,
        }
    }

    /// Wraps `data` (in C, Z, Y, X order) after checking its length against `shape`.
    pub fn from_vec(shape: [usize; 4], data: Vec<T>) -> Result<Self, VolumeError> {
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(VolumeError::DataLength {
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            shape,
            data,
            spacing: None,
        })
    }

    /// Sets the voxel spacing (builder style).
    pub fn with_spacing(mut self, spacing: Option<Spacing>) -> Self {
        self.spacing = spacing;
        self
    }

    /// [C, Z, Y, X].
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// [Z, Y, X] — the spatial extent shared by all channels.
    pub fn spatial(&self) -> [usize; 3] {
        [self.shape[1], self.shape[2], self.shape[3]]
    }

    pub fn channels(&self) -> usize {
        self.shape[0]
    }

    /// Voxels per channel (Z·Y·X).
    pub fn voxels(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    pub fn data(&self) -> &[T] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    pub fn into_vec(self) -> Vec<T> {
        self.data
    }

    /// Linear index of (c, z, y, x).
    #[inline]
    pub fn index(&self, c: usize, z: usize, y: usize, x: usize) -> usize {
        ((c * self.shape[1] + z) * self.shape[2] + y) * self.shape[3] + x
    }

    #[inline]
    pub fn get(&self, c: usize, z: usize, y: usize, x: usize) -> T {
        self.data[self.index(c, z, y, x)]
    }

    #[inline]
    pub fn set(&mut self, c: usize, z: usize, y: usize, x: usize, value: T) {
        let i = self.index(c, z, y, x);
        self.data[i] = value;
    }

    /// The samples of channel `c` (Z·Y·X values, x fastest).
    pub fn channel(&self, c: usize) -> &[T] {
        let n = self.voxels();
        &self.data[c * n..(c + 1) * n]
    }

    pub fn channel_mut(&mut self, c: usize) -> &mut [T] {
        let n = self.voxels();
        &mut self.data[c * n..(c + 1) * n]
    }

    /// Iterates over the channels as slices.
    pub fn channel_slices(&self) -> impl Iterator<Item = &[T]> {
        self.data
            .chunks_exact(self.voxels().max(1))
            .take(self.shape[0])
    }

    /// A new single- or multi-channel volume made of the listed channels, in that order.
    pub fn select_channels(&self, channels: &[usize]) -> Result<Self, VolumeError> {
        let mut data = Vec::with_capacity(channels.len() * self.voxels());
        for &c in channels {
            if c >= self.channels() {
                return Err(VolumeError::Channel {
                    channel: c,
                    channels: self.channels(),
                });
            }
            data.extend_from_slice(self.channel(c));
        }
        Ok(Self {
            shape: [channels.len(), self.shape[1], self.shape[2], self.shape[3]],
            data,
            spacing: self.spacing,
        })
    }

    /// Stacks volumes of equal spatial shape along the channel axis.
    pub fn stack_channels(parts: &[&Self]) -> Result<Self, VolumeError> {
        let first = parts
            .first()
            .expect("stack_channels needs at least one volume");
        let mut data = Vec::new();
        let mut channels = 0;
        for p in parts {
            if p.spatial() != first.spatial() {
                return Err(VolumeError::ShapeMismatch {
                    a: first.shape,
                    b: p.shape,
                });
            }
            channels += p.channels();
            data.extend_from_slice(&p.data);
        }
        let [_, z, y, x] = first.shape;
        Ok(Self {
            shape: [channels, z, y, x],
            data,
            spacing: first.spacing,
        })
    }

    /// Applies `f` to every sample.
    pub fn map<U: Copy>(&self, f: impl Fn(T) -> U) -> Volume<U> {
        Volume {
            shape: self.shape,
            data: self.data.iter().map(|&v| f(v)).collect(),
            spacing: self.spacing,
        }
    }

    /// Copies the box `[z0, z0+dz) × [y0, y0+dy) × [x0, x0+dx)` of every channel.
    /// The box must lie inside the volume.
    pub fn crop(&self, origin: [usize; 3], size: [usize; 3]) -> Self {
        let [c, z, y, x] = self.shape;
        assert!(
            origin[0] + size[0] <= z && origin[1] + size[1] <= y && origin[2] + size[2] <= x,
            "crop {origin:?}+{size:?} outside volume {:?}",
            self.shape
        );
        let mut data = Vec::with_capacity(c * size.iter().product::<usize>());
        for ci in 0..c {
            for zi in origin[0]..origin[0] + size[0] {
                for yi in origin[1]..origin[1] + size[1] {
                    let start = self.index(ci, zi, yi, origin[2]);
                    data.extend_from_slice(&self.data[start..start + size[2]]);
                }
            }
        }
        Self {
            shape: [c, size[0], size[1], size[2]],
            data,
            spacing: self.spacing,
        }
    }
}

/// The sample type of a volume as stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    U8,
    U16,
    F32,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::F32 => "float32",
        }
    }
}

display_by_name!(DType);

/// A volume whose sample type is decided by the file it came from.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyVolume {
    U8(Volume<u8>),
    U16(Volume<u16>),
    F32(Volume<f32>),
}

macro_rules! any_volume_dispatch {
    ($self:expr, $v:ident => $body:expr) => {
        match $self {
            AnyVolume::U8($v) => $body,
            AnyVolume::U16($v) => $body,
            AnyVolume::F32($v) => $body,
        }
    };
}

impl AnyVolume {
    pub fn dtype(&self) -> DType {
        match self {
            AnyVolume::U8(_) => DType::U8,
            AnyVolume::U16(_) => DType::U16,
            AnyVolume::F32(_) => DType::F32,
        }
    }

    pub fn shape(&self) -> [usize; 4] {
        any_volume_dispatch!(self, v => v.shape())
    }

    pub fn spacing(&self) -> Option<Spacing> {
        any_volume_dispatch!(self, v => v.spacing)
    }

    pub fn set_spacing(&mut self, spacing: Option<Spacing>) {
        any_volume_dispatch!(self, v => v.spacing = spacing)
    }

    /// Converts every sample to `f32` (exact for u8 and u16).
    pub fn to_f32(&self) -> Volume<f32> {
        match self {
            AnyVolume::U8(v) => v.map(f32::from),
            AnyVolume::U16(v) => v.map(f32::from),
            AnyVolume::F32(v) => v.clone(),
        }
    }

    /// Binarises every channel: a voxel is foreground when its value is non-zero.
    /// This is how masks are read (0/255, 0/1 and label images all work).
    pub fn to_binary(&self) -> Volume<u8> {
        match self {
            AnyVolume::U8(v) => v.map(|s| u8::from(s != 0)),
            AnyVolume::U16(v) => v.map(|s| u8::from(s != 0)),
            AnyVolume::F32(v) => v.map(|s| u8::from(s != 0.0)),
        }
    }
}

impl From<Volume<u8>> for AnyVolume {
    fn from(v: Volume<u8>) -> Self {
        AnyVolume::U8(v)
    }
}
impl From<Volume<u16>> for AnyVolume {
    fn from(v: Volume<u16>) -> Self {
        AnyVolume::U16(v)
    }
}
impl From<Volume<f32>> for AnyVolume {
    fn from(v: Volume<f32>) -> Self {
        AnyVolume::F32(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_x_fastest_then_y_z_c() {
        let v = Volume::from_vec([2, 2, 3, 4], (0..48u16).collect()).unwrap();
        assert_eq!(v.get(0, 0, 0, 1), 1);
        assert_eq!(v.get(0, 0, 1, 0), 4);
        assert_eq!(v.get(0, 1, 0, 0), 12);
        assert_eq!(v.get(1, 0, 0, 0), 24);
        assert_eq!(v.channel(1)[0], 24);
    }

    #[test]
    fn from_vec_rejects_wrong_length() {
        let err = Volume::from_vec([1, 2, 2, 2], vec![0u8; 7]).unwrap_err();
        assert!(err.to_string().contains("needs 8 samples, got 7"), "{err}");
    }

    #[test]
    fn crop_and_select_channels() {
        let v = Volume::from_vec([2, 2, 3, 4], (0..48u16).collect()).unwrap();
        let c = v.crop([1, 1, 2], [1, 2, 2]);
        assert_eq!(c.shape(), [2, 1, 2, 2]);
        assert_eq!(c.data(), &[18, 19, 22, 23, 42, 43, 46, 47]);
        let s = v.select_channels(&[1]).unwrap();
        assert_eq!(s.data()[0], 24);
        assert!(v.select_channels(&[2]).is_err());
    }
}
