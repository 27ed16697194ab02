//! Reflection padding with NumPy's `np.pad(mode="reflect")` semantics: the edge sample is not
//! repeated (`[a b c]` → `… c b | a b c | b a …`), and pads longer than the axis keep
//! reflecting back and forth, exactly as NumPy does (a single-sample axis repeats it).
//!
//! PyTorch's `ReflectionPad3d`, used by the published code for the Z padding
//! (docs/published-code.md §1.4, §6), gives the same values where it is defined (pads
//! shorter than the axis).

use crate::volume::Volume;

/// Where the padding goes along each axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PadMode {
    /// Everything at the high end of the axis, as the published code pads
    /// (docs/published-code.md §1.4 and §6).
    #[default]
    HighEnd,
    /// Split between both ends; the high end gets the odd voxel.
    Symmetric,
}

impl PadMode {
    /// How `extra` voxels of padding split into (before, after).
    pub fn split(self, extra: usize) -> (usize, usize) {
        match self {
            PadMode::HighEnd => (0, extra),
            PadMode::Symmetric => (extra / 2, extra - extra / 2),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PadMode::HighEnd => "high-end",
            PadMode::Symmetric => "symmetric",
        }
    }
}

/// The source index that position `i` of a reflect-padded axis of length `n` reads, where
/// `i` counts from the first original sample (negative: inside the low pad). NumPy's
/// iterative reflection is periodic with period 2(n − 1); this is that closed form.
#[inline]
pub fn reflect_index(i: isize, n: usize) -> usize {
    assert!(n > 0, "cannot reflect an empty axis");
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let j = i.rem_euclid(period) as usize;
    if j >= n { period as usize - j } else { j }
}

/// For an output axis of `before + n + after` samples, the source index of every output
/// position.
pub fn reflect_map(n: usize, before: usize, after: usize) -> Vec<usize> {
    (0..before + n + after)
        .map(|o| reflect_index(o as isize - before as isize, n))
        .collect()
}

/// Reflect-pads every channel of `volume` by `before` and `after` voxels along (Z, Y, X).
///
/// # Shapes
/// `[C, Z, Y, X]` → `[C, Z + bz + az, Y + by + ay, X + bx + ax]`.
pub fn reflect_pad<T: Copy>(
    volume: &Volume<T>,
    before: [usize; 3],
    after: [usize; 3],
) -> Volume<T> {
    let [c, z, y, x] = volume.shape();
    assert!(
        z * y * x > 0,
        "cannot pad an empty volume {:?}",
        volume.shape()
    );
    let zmap = reflect_map(z, before[0], after[0]);
    let ymap = reflect_map(y, before[1], after[1]);
    let xmap = reflect_map(x, before[2], after[2]);
    let out_x = xmap.len();
    let mut data = Vec::with_capacity(c * zmap.len() * ymap.len() * out_x);
    for ci in 0..c {
        for &sz in &zmap {
            for &sy in &ymap {
                let row = &volume.data()[volume.index(ci, sz, sy, 0)..][..x];
                data.extend(xmap[..before[2]].iter().map(|&s| row[s]));
                data.extend_from_slice(row);
                data.extend(xmap[before[2] + x..].iter().map(|&s| row[s]));
            }
        }
    }
    Volume::from_vec([c, zmap.len(), ymap.len(), out_x], data)
        .expect("padded data length matches its shape")
        .with_spacing(volume.spacing)
}

/// Reflect-pads `volume` up to `target` (Z, Y, X), placing the padding as `mode` says.
/// Axes already at least as long as the target are left alone. Returns the padded volume
/// and the low-end offsets (where the original starts inside it).
pub fn pad_to<T: Copy>(
    volume: &Volume<T>,
    target: [usize; 3],
    mode: PadMode,
) -> (Volume<T>, [usize; 3]) {
    let spatial = volume.spatial();
    let mut before = [0; 3];
    let mut after = [0; 3];
    for a in 0..3 {
        let (b, e) = mode.split(target[a].saturating_sub(spatial[a]));
        before[a] = b;
        after[a] = e;
    }
    (reflect_pad(volume, before, after), before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_does_not_repeat_the_edge() {
        // np.pad([1, 2, 3], (2, 5), mode="reflect") == [3, 2, 1, 2, 3, 2, 1, 2, 3, 2]
        let map = reflect_map(3, 2, 5);
        let values: Vec<i32> = map.iter().map(|&i| [1, 2, 3][i]).collect();
        assert_eq!(values, [3, 2, 1, 2, 3, 2, 1, 2, 3, 2]);
    }

    #[test]
    fn single_sample_axis_repeats_it() {
        assert_eq!(reflect_map(1, 2, 3), vec![0; 6]);
    }

    #[test]
    fn z_pad_of_the_published_code() {
        // §1.4: Z = 56 padded to 64 at the high end: slices 56..63 mirror 54, 53, …, 47.
        let map = reflect_map(56, 0, 8);
        assert_eq!(&map[56..], &[54, 53, 52, 51, 50, 49, 48, 47]);
    }

    #[test]
    fn pad_volume_high_end_and_symmetric() {
        let v = Volume::from_vec([2, 1, 2, 3], (0..12u8).collect()).unwrap();
        let (p, before) = pad_to(&v, [1, 3, 5], PadMode::HighEnd);
        assert_eq!(before, [0, 0, 0]);
        assert_eq!(p.shape(), [2, 1, 3, 5]);
        // channel 0 rows: [0 1 2 | 1 0], [3 4 5 | 4 3], then row 1 mirrored → row 0 again
        assert_eq!(
            &p.channel(0),
            &[0, 1, 2, 1, 0, 3, 4, 5, 4, 3, 0, 1, 2, 1, 0]
        );
        assert_eq!(p.get(1, 0, 1, 4), 9);
        let (s, before) = pad_to(&v, [1, 2, 6], PadMode::Symmetric);
        assert_eq!(before, [0, 0, 1]);
        assert_eq!(&s.channel(0)[..6], &[1, 0, 1, 2, 1, 0]);
    }

    #[test]
    fn padding_keeps_spacing_and_target_smaller_is_no_op() {
        let v = Volume::<f32>::zeros([1, 4, 4, 4]).with_spacing(Some([2.0, 1.0, 1.0]));
        let (p, before) = pad_to(&v, [2, 2, 2], PadMode::Symmetric);
        assert_eq!(p.shape(), v.shape());
        assert_eq!(before, [0; 3]);
        assert_eq!(p.spacing, v.spacing);
    }
}
