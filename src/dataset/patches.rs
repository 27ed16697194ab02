//! Training and validation patches (docs/published-code.md §1.4): volumes are
//! reflect-padded at the high end up to the patch size along any axis that is shorter
//! (the published data only ever needed this for Z: 55–61 slices → 64), then patches are
//! cut on a regular grid with `patchify` semantics ([`grid_origins`]: positions 0, s, 2s, …
//! while start + size ≤ extent; the remainder strip is dropped) or at seeded random
//! positions.
//!
//! [`PatchSet`] holds the padded volumes; [`GridPatches`] and [`RandomPatches`] choose patch
//! origins; [`PatchSet::fill_batch`] copies a list of origins into one reusable
//! [`PatchBatch`] (f32 image, u8 mask, `[batch, channels, depth, height, width]`), which is
//! the one call a training loop makes per step.

use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use super::DatasetError;
use super::pad::{PadMode, pad_to};
use crate::volume::Volume;

/// One preprocessed volume to cut patches from.
#[derive(Clone, Debug)]
pub struct PatchVolume {
    pub id: String,
    /// Model-ready intensities, (C, Z, Y, X).
    pub image: Volume<f32>,
    /// 0/1 masks, (C, Z, Y, X) with the image's Z/Y/X; `None` for image-only sets.
    pub mask: Option<Volume<u8>>,
}

/// Where a patch starts: volume index in the [`PatchSet`] and (z, y, x) in the padded volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PatchOrigin {
    pub volume: usize,
    pub origin: [usize; 3],
}

/// Start positions along one axis with `patchify` semantics: 0, step, 2·step, … while
/// start + size ≤ extent (the remainder strip at the high edge is dropped). Empty when the
/// axis is shorter than the patch.
pub fn grid_origins(extent: usize, size: usize, step: usize) -> Vec<usize> {
    assert!(size > 0 && step > 0, "patch size and step must be positive");
    if extent < size {
        return Vec::new();
    }
    (0..=extent - size).step_by(step).collect()
}

/// The volumes patches are cut from, padded so that every axis holds at least one patch.
#[derive(Clone, Debug)]
pub struct PatchSet {
    volumes: Vec<PatchVolume>,
    size: [usize; 3],
    image_channels: usize,
    mask_channels: Option<usize>,
}

impl PatchSet {
    /// Checks that all volumes agree on channel counts (masks: all or none) and that each
    /// mask matches its image, then reflect-pads every axis shorter than `size` = (d, h, w)
    /// at its high end (docs/published-code.md §1.4).
    pub fn new(volumes: Vec<PatchVolume>, size: [usize; 3]) -> Result<Self, DatasetError> {
        if size.contains(&0) {
            return Err(DatasetError::Config(format!(
                "patch size must be positive along every axis, got {size:?}"
            )));
        }
        let Some(first) = volumes.first() else {
            return Err(DatasetError::Config(
                "no volumes to cut patches from".into(),
            ));
        };
        let image_channels = first.image.channels();
        let mask_channels = first.mask.as_ref().map(Volume::channels);
        let mut padded = Vec::with_capacity(volumes.len());
        for v in volumes {
            let problem = if v.image.channels() != image_channels {
                Some(format!(
                    "has {} image channels, the first volume {}",
                    v.image.channels(),
                    image_channels
                ))
            } else if v.mask.as_ref().map(Volume::channels) != mask_channels {
                Some(
                    "mask channels differ from the first volume's (all volumes need the same \
                      mask channels, or none)"
                        .to_string(),
                )
            } else if v.image.voxels() == 0 {
                Some("is empty".to_string())
            } else {
                match &v.mask {
                    Some(m) if m.spatial() != v.image.spatial() => Some(format!(
                        "mask is {:?} (Z, Y, X) but the image is {:?}",
                        m.spatial(),
                        v.image.spatial()
                    )),
                    _ => None,
                }
            };
            if let Some(p) = problem {
                return Err(DatasetError::Config(format!("patch volume `{}` {p}", v.id)));
            }
            let spatial = v.image.spatial();
            let target = [0, 1, 2].map(|a| spatial[a].max(size[a]));
            let (image, mask) = if target == spatial {
                (v.image, v.mask)
            } else {
                let (image, _) = pad_to(&v.image, target, PadMode::HighEnd);
                let mask = v.mask.map(|m| pad_to(&m, target, PadMode::HighEnd).0);
                (image, mask)
            };
            padded.push(PatchVolume {
                id: v.id,
                image,
                mask,
            });
        }
        Ok(Self {
            volumes: padded,
            size,
            image_channels,
            mask_channels,
        })
    }

    /// Patch size (d, h, w).
    pub fn size(&self) -> [usize; 3] {
        self.size
    }

    /// The padded volumes.
    pub fn volumes(&self) -> &[PatchVolume] {
        &self.volumes
    }

    pub fn image_channels(&self) -> usize {
        self.image_channels
    }

    /// Mask channels, or `None` for an image-only set.
    pub fn mask_channels(&self) -> Option<usize> {
        self.mask_channels
    }

    /// An empty batch buffer shaped for this set; reuse it across [`PatchSet::fill_batch`].
    pub fn new_batch(&self) -> PatchBatch {
        PatchBatch {
            image: Vec::new(),
            mask: Vec::new(),
            len: 0,
            size: self.size,
            image_channels: self.image_channels,
            mask_channels: self.mask_channels,
        }
    }

    /// Copies the patches at `origins` into `batch` (resized in place; no allocation once
    /// its buffers are large enough).
    ///
    /// # Panics
    /// When an origin lies outside its volume (origins come from [`GridPatches`] or
    /// [`RandomPatches`] of this set).
    pub fn fill_batch(&self, origins: &[PatchOrigin], batch: &mut PatchBatch) {
        let [d, h, w] = self.size;
        let per_channel = d * h * w;
        batch.len = origins.len();
        batch.size = self.size;
        batch.image_channels = self.image_channels;
        batch.mask_channels = self.mask_channels;
        batch.image.clear();
        batch
            .image
            .reserve(origins.len() * self.image_channels * per_channel);
        batch.mask.clear();
        if let Some(mc) = self.mask_channels {
            batch.mask.reserve(origins.len() * mc * per_channel);
        }
        for o in origins {
            let v = &self.volumes[o.volume];
            copy_box(&v.image, o.origin, self.size, &mut batch.image);
            if let Some(m) = &v.mask {
                copy_box(m, o.origin, self.size, &mut batch.mask);
            }
        }
    }

    /// One patch as volumes (tests, previews); training uses [`PatchSet::fill_batch`].
    pub fn patch(&self, o: PatchOrigin) -> (Volume<f32>, Option<Volume<u8>>) {
        let v = &self.volumes[o.volume];
        (
            v.image.crop(o.origin, self.size),
            v.mask.as_ref().map(|m| m.crop(o.origin, self.size)),
        )
    }

    /// Number of valid patch positions in volume `i` (every voxel origin that fits).
    fn positions(&self, i: usize) -> u64 {
        let s = self.volumes[i].image.spatial();
        (0..3).map(|a| (s[a] - self.size[a] + 1) as u64).product()
    }
}

/// Appends the box at `origin` of size `size` of every channel of `v` to `out`.
fn copy_box<T: Copy>(v: &Volume<T>, origin: [usize; 3], size: [usize; 3], out: &mut Vec<T>) {
    let [c, z, y, x] = v.shape();
    assert!(
        origin[0] + size[0] <= z && origin[1] + size[1] <= y && origin[2] + size[2] <= x,
        "patch {origin:?}+{size:?} outside volume {:?}",
        v.shape()
    );
    let data = v.data();
    for ci in 0..c {
        for zi in origin[0]..origin[0] + size[0] {
            for yi in origin[1]..origin[1] + size[1] {
                let start = v.index(ci, zi, yi, origin[2]);
                out.extend_from_slice(&data[start..start + size[2]]);
            }
        }
    }
}

/// A batch of patches in `[batch, channels, depth, height, width]` order, ready for a tensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PatchBatch {
    /// `len × image_channels × d × h × w` intensities.
    pub image: Vec<f32>,
    /// `len × mask_channels × d × h × w` 0/1 labels (empty for image-only sets).
    pub mask: Vec<u8>,
    pub(crate) len: usize,
    pub(crate) size: [usize; 3],
    pub(crate) image_channels: usize,
    pub(crate) mask_channels: Option<usize>,
}

impl PatchBatch {
    /// Patches in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `[batch, channels, depth, height, width]` of [`PatchBatch::image`].
    pub fn image_shape(&self) -> [usize; 5] {
        let [d, h, w] = self.size;
        [self.len, self.image_channels, d, h, w]
    }

    /// `[batch, channels, depth, height, width]` of [`PatchBatch::mask`], if the set has masks.
    pub fn mask_shape(&self) -> Option<[usize; 5]> {
        let [d, h, w] = self.size;
        self.mask_channels.map(|c| [self.len, c, d, h, w])
    }
}

/// Grid patches of a [`PatchSet`] in the published order: volume by volume, X-major, then
/// Y, then Z (patchify on the (X, Y, Z) arrays of the published code, §1.4).
#[derive(Clone, Debug, PartialEq)]
pub struct GridPatches {
    origins: Vec<PatchOrigin>,
}

impl GridPatches {
    /// All grid positions with `step` = (z, y, x) (the published grids: 64 without overlap
    /// for 2-class data, 48 for 3-class; Z always yields one window there).
    pub fn new(set: &PatchSet, step: [usize; 3]) -> Result<Self, DatasetError> {
        if step.contains(&0) {
            return Err(DatasetError::Config(format!(
                "patch step must be positive along every axis, got {step:?}"
            )));
        }
        let size = set.size();
        let mut origins = Vec::new();
        for (vi, v) in set.volumes().iter().enumerate() {
            let [z, y, x] = v.image.spatial();
            let zs = grid_origins(z, size[0], step[0]);
            let ys = grid_origins(y, size[1], step[1]);
            for &xo in &grid_origins(x, size[2], step[2]) {
                for &yo in &ys {
                    for &zo in &zs {
                        origins.push(PatchOrigin {
                            volume: vi,
                            origin: [zo, yo, xo],
                        });
                    }
                }
            }
        }
        Ok(Self { origins })
    }

    pub fn origins(&self) -> &[PatchOrigin] {
        &self.origins
    }

    pub fn len(&self) -> usize {
        self.origins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// The grid in a random order that depends only on (`seed`, `epoch`), for shuffled epochs.
    pub fn shuffled(&self, seed: u64, epoch: u64) -> Vec<PatchOrigin> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch);
        let mut order = self.origins.clone();
        order.shuffle(&mut rng);
        order
    }
}

/// Seeded random patch origins (ChaCha8: the same seed gives the same patches on every
/// platform).
#[derive(Debug)]
pub struct RandomPatches {
    rng: ChaCha8Rng,
}

impl RandomPatches {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// `n` origins drawn uniformly over every valid position of every volume (so larger
    /// volumes give proportionally more patches).
    pub fn sample(&mut self, set: &PatchSet, n: usize) -> Vec<PatchOrigin> {
        let counts: Vec<u64> = (0..set.volumes().len()).map(|i| set.positions(i)).collect();
        let total: u64 = counts.iter().sum();
        let size = set.size();
        (0..n)
            .map(|_| {
                let mut k = self.rng.random_range(0..total);
                let mut volume = 0;
                while k >= counts[volume] {
                    k -= counts[volume];
                    volume += 1;
                }
                let s = set.volumes()[volume].image.spatial();
                let free = [0, 1, 2].map(|a| (s[a] - size[a] + 1) as u64);
                let x = k % free[2];
                let y = (k / free[2]) % free[1];
                let z = k / (free[2] * free[1]);
                PatchOrigin {
                    volume,
                    origin: [z as usize, y as usize, x as usize],
                }
            })
            .collect()
    }

    /// `n` draws with replacement from `origins` — the published CycleGAN sampling, which
    /// picks random patch files uniformly with replacement (docs/published-code.md §1.7).
    pub fn sample_from(&mut self, origins: &[PatchOrigin], n: usize) -> Vec<PatchOrigin> {
        assert!(
            !origins.is_empty(),
            "cannot sample from an empty patch list"
        );
        (0..n)
            .map(|_| origins[self.rng.random_range(0..origins.len())])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(id: &str, z: usize, y: usize, x: usize, masked: bool) -> PatchVolume {
        let n = z * y * x;
        let image = Volume::from_vec([2, z, y, x], (0..2 * n).map(|i| i as f32).collect()).unwrap();
        let mask = masked.then(|| {
            Volume::from_vec([1, z, y, x], (0..n).map(|i| (i % 2) as u8).collect()).unwrap()
        });
        PatchVolume {
            id: id.into(),
            image,
            mask,
        }
    }

    #[test]
    fn patchify_drops_the_remainder() {
        assert_eq!(grid_origins(10, 4, 4), vec![0, 4]);
        assert_eq!(grid_origins(12, 4, 4), vec![0, 4, 8]);
        assert_eq!(grid_origins(3, 4, 4), Vec::<usize>::new());
        assert_eq!(grid_origins(4, 4, 4), vec![0]);
        // The published 3-class grid: 64-wide windows with step 48 on X = 647 → 13 windows.
        assert_eq!(grid_origins(647, 64, 48).len(), 13);
    }

    #[test]
    fn published_patch_counts() {
        // §1.4: 2-class step 64 → 63 + 80 + 80 + 72 training patches for Crop1..4 (X × Y).
        let count = |x: usize, y: usize, s: usize| {
            grid_origins(x, 64, s).len() * grid_origins(y, 64, s).len()
        };
        assert_eq!(count(505, 618, 64), 63);
        assert_eq!(count(703, 553, 64), 80);
        assert_eq!(count(668, 553, 64), 80);
        assert_eq!(count(818, 257, 64), 48);
        assert_eq!(count(586, 519, 64), 72);
        // 3-class, step 48: 120 + 154 + 143 + 110 training patches.
        assert_eq!(count(505, 618, 48), 120);
        assert_eq!(count(703, 553, 48), 154);
        assert_eq!(count(668, 553, 48), 143);
        assert_eq!(count(586, 519, 48), 110);
    }

    #[test]
    fn z_is_reflect_padded_to_the_patch_depth() {
        let set = PatchSet::new(vec![volume("a", 3, 4, 4, true)], [5, 4, 4]).unwrap();
        let v = &set.volumes()[0];
        assert_eq!(v.image.spatial(), [5, 4, 4]);
        // slices 3, 4 mirror slices 1, 0
        assert_eq!(v.image.get(0, 3, 1, 2), v.image.get(0, 1, 1, 2));
        assert_eq!(v.image.get(1, 4, 0, 0), v.image.get(1, 0, 0, 0));
        assert_eq!(v.mask.as_ref().unwrap().spatial(), [5, 4, 4]);
    }

    #[test]
    fn grid_order_is_x_major_then_y_then_z() {
        let set = PatchSet::new(vec![volume("a", 2, 4, 6, false)], [2, 2, 3]).unwrap();
        let grid = GridPatches::new(&set, [2, 2, 3]).unwrap();
        let o: Vec<[usize; 3]> = grid.origins().iter().map(|p| p.origin).collect();
        assert_eq!(o, vec![[0, 0, 0], [0, 2, 0], [0, 0, 3], [0, 2, 3]]);
    }

    #[test]
    fn batch_matches_single_patches_and_reuses_buffers() {
        let set = PatchSet::new(
            vec![volume("a", 4, 6, 6, true), volume("b", 4, 5, 7, true)],
            [4, 3, 3],
        )
        .unwrap();
        let grid = GridPatches::new(&set, [4, 3, 3]).unwrap();
        assert_eq!(grid.len(), 4 + 2);
        let mut batch = set.new_batch();
        let picks = [grid.origins()[5], grid.origins()[0], grid.origins()[3]];
        set.fill_batch(&picks, &mut batch);
        assert_eq!(batch.image_shape(), [3, 2, 4, 3, 3]);
        assert_eq!(batch.mask_shape(), Some([3, 1, 4, 3, 3]));
        let per = 2 * 36;
        for (i, &o) in picks.iter().enumerate() {
            let (img, mask) = set.patch(o);
            assert_eq!(&batch.image[i * per..(i + 1) * per], img.data());
            assert_eq!(&batch.mask[i * 36..(i + 1) * 36], mask.unwrap().data());
        }
        let cap = batch.image.capacity();
        set.fill_batch(&picks[..2], &mut batch);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.image.capacity(), cap);
    }

    #[test]
    fn random_patches_are_seeded_and_inside() {
        let set = PatchSet::new(
            vec![volume("a", 4, 6, 6, false), volume("b", 5, 9, 7, false)],
            [4, 3, 3],
        )
        .unwrap();
        let a = RandomPatches::new(7).sample(&set, 200);
        assert_eq!(a, RandomPatches::new(7).sample(&set, 200));
        assert_ne!(a, RandomPatches::new(8).sample(&set, 200));
        assert!(a.iter().any(|o| o.volume == 0) && a.iter().any(|o| o.volume == 1));
        for o in &a {
            let s = set.volumes()[o.volume].image.spatial();
            assert!((0..3).all(|k| o.origin[k] + set.size()[k] <= s[k]), "{o:?}");
        }
        let grid = GridPatches::new(&set, [1, 3, 3]).unwrap();
        let drawn = RandomPatches::new(1).sample_from(grid.origins(), 50);
        assert!(drawn.iter().all(|o| grid.origins().contains(o)));
        assert_eq!(grid.shuffled(3, 1), grid.shuffled(3, 1));
        assert_ne!(grid.shuffled(3, 1), grid.shuffled(3, 2));
        let mut sorted = grid.shuffled(3, 1);
        sorted.sort();
        let mut want = grid.origins().to_vec();
        want.sort();
        assert_eq!(sorted, want);
    }

    #[test]
    fn inconsistent_volumes_are_rejected() {
        let mut b = volume("b", 4, 4, 4, true);
        b.mask = Some(Volume::zeros([1, 4, 4, 5]));
        let err = PatchSet::new(vec![volume("a", 4, 4, 4, true), b], [2, 2, 2]).unwrap_err();
        assert!(
            err.to_string().contains("patch volume `b` mask is"),
            "{err}"
        );
        let err = PatchSet::new(
            vec![volume("a", 4, 4, 4, true), volume("c", 4, 4, 4, false)],
            [2, 2, 2],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`c` mask channels differ"),
            "{err}"
        );
        assert!(PatchSet::new(vec![volume("a", 4, 4, 4, true)], [0, 2, 2]).is_err());
    }
}
