//! Per-channel summary statistics of a volume (min, max, mean, sum), as `seglab inspect`
//! prints them and as tests compare them with NumPy.
//!
//! Integer sums are exact (u64 per block, u128 in total). Float sums are compensated
//! (Neumaier) in f64, so they agree with an exact sum (`math.fsum`) to about 1e-15 relative.
//! NaN handling: NaN voxels are ignored by `min` and `max` and propagate into `sum` and
//! `mean` (both become NaN), so a NaN in the data is never hidden; `nan_count` says how many
//! there are. The blocks are reduced in a fixed order, so the results are deterministic.

use rayon::prelude::*;
use serde::{Serialize, Serializer};

use super::{AnyVolume, Volume};

/// A statistic that is an exact integer for integer data and a float for float data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    Int(u128),
    Float(f64),
}

impl Scalar {
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Int(v) => v as f64,
            Scalar::Float(v) => v,
        }
    }
}

/// JSON: integers as integers, finite floats as numbers, NaN and ±inf as `null` (JSON has no
/// literal for them).
impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Scalar::Int(v) => s.serialize_u128(v),
            Scalar::Float(v) => serialize_f64(&v, s),
        }
    }
}

fn serialize_f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

/// Statistics of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ChannelStats {
    /// Smallest value, ignoring NaN; `None` when the channel holds no other value.
    pub min: Option<Scalar>,
    /// Largest value, ignoring NaN.
    pub max: Option<Scalar>,
    /// sum / voxel count; NaN when the channel is empty or holds a NaN.
    #[serde(serialize_with = "serialize_f64")]
    pub mean: f64,
    /// Exact for integer data; NaN when a float channel holds a NaN.
    pub sum: Scalar,
    /// How many voxels are NaN (always 0 for integer data).
    #[serde(skip)]
    pub nan_count: u64,
}

/// The statistics of every channel of `volume`, in channel order.
pub fn channel_stats(volume: &AnyVolume) -> Vec<ChannelStats> {
    match volume {
        AnyVolume::U8(v) => per_channel(v, int_stats),
        AnyVolume::U16(v) => per_channel(v, int_stats),
        AnyVolume::F32(v) => per_channel(v, float_stats),
    }
}

fn per_channel<T: Copy>(v: &Volume<T>, f: fn(&[T]) -> ChannelStats) -> Vec<ChannelStats> {
    (0..v.channels()).map(|c| f(v.channel(c))).collect()
}

/// Block size of the parallel reduction; u64 block sums of u16 cannot overflow.
const BLOCK: usize = 1 << 20;

fn int_stats<T: Copy + Into<u64> + Ord + Send + Sync>(data: &[T]) -> ChannelStats {
    let blocks: Vec<(T, T, u64)> = data
        .par_chunks(BLOCK)
        .map(|block| {
            let mut lo = block[0];
            let mut hi = block[0];
            let mut sum = 0u64;
            for &v in block {
                lo = lo.min(v);
                hi = hi.max(v);
                sum += v.into();
            }
            (lo, hi, sum)
        })
        .collect();
    let sum: u128 = blocks.iter().map(|b| u128::from(b.2)).sum();
    let lo = blocks.iter().map(|b| b.0).min();
    let hi = blocks.iter().map(|b| b.1).max();
    let int = |v: T| Scalar::Int(u128::from(v.into()));
    ChannelStats {
        min: lo.map(int),
        max: hi.map(int),
        mean: if data.is_empty() {
            f64::NAN
        } else {
            sum as f64 / data.len() as f64
        },
        sum: Scalar::Int(sum),
        nan_count: 0,
    }
}

/// Neumaier's compensated sum: `sum + compensation` carries the bits plain addition loses.
#[derive(Clone, Copy, Default)]
struct Neumaier {
    sum: f64,
    compensation: f64,
}

impl Neumaier {
    #[inline]
    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.compensation += (self.sum - t) + v;
        } else {
            self.compensation += (v - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(self) -> f64 {
        let v = self.sum + self.compensation;
        // With infinities the compensation is NaN; the plain sum is then the answer.
        if v.is_finite() { v } else { self.sum }
    }
}

struct FloatBlock {
    lo: f32,
    hi: f32,
    sum: Neumaier,
    nans: u64,
}

fn float_stats(data: &[f32]) -> ChannelStats {
    let blocks: Vec<FloatBlock> = data
        .par_chunks(BLOCK)
        .map(|block| {
            let mut b = FloatBlock {
                lo: f32::INFINITY,
                hi: f32::NEG_INFINITY,
                sum: Neumaier::default(),
                nans: 0,
            };
            for &v in block {
                if v.is_nan() {
                    b.nans += 1;
                } else {
                    b.lo = b.lo.min(v);
                    b.hi = b.hi.max(v);
                }
                b.sum.add(f64::from(v));
            }
            b
        })
        .collect();
    let nan_count: u64 = blocks.iter().map(|b| b.nans).sum();
    let mut total = Neumaier::default();
    for b in &blocks {
        total.add(b.sum.sum);
        // NaN when the block met an infinity; its plain sum then carries the result.
        if b.sum.compensation.is_finite() {
            total.add(b.sum.compensation);
        }
    }
    let sum = if nan_count > 0 {
        f64::NAN
    } else {
        total.value()
    };
    let has_values = (data.len() as u64) > nan_count;
    let lo = blocks.iter().map(|b| b.lo).fold(f32::INFINITY, f32::min);
    let hi = blocks
        .iter()
        .map(|b| b.hi)
        .fold(f32::NEG_INFINITY, f32::max);
    ChannelStats {
        min: has_values.then_some(Scalar::Float(f64::from(lo))),
        max: has_values.then_some(Scalar::Float(f64::from(hi))),
        mean: if data.is_empty() {
            f64::NAN
        } else {
            sum / data.len() as f64
        },
        sum: Scalar::Float(sum),
        nan_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(v: AnyVolume) -> Vec<ChannelStats> {
        channel_stats(&v)
    }

    #[test]
    fn integer_statistics_are_exact_per_channel() {
        let v = Volume::from_vec([2, 1, 2, 2], vec![1u16, 2, 3, 4, 65535, 0, 65535, 65535]);
        let s = stats(v.unwrap().into());
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].min, Some(Scalar::Int(1)));
        assert_eq!(s[0].max, Some(Scalar::Int(4)));
        assert_eq!(s[0].sum, Scalar::Int(10));
        assert_eq!(s[0].mean, 2.5);
        assert_eq!(s[1].min, Some(Scalar::Int(0)));
        assert_eq!(s[1].sum, Scalar::Int(3 * 65535));
    }

    #[test]
    fn integer_sums_do_not_overflow_across_blocks() {
        // 3 blocks of u16::MAX: the total exceeds what one block sum could hold in u32.
        let n = 3 * BLOCK + 17;
        let v = Volume::filled([1, 1, 1, n], u16::MAX);
        let s = &stats(v.into())[0];
        assert_eq!(s.sum, Scalar::Int(n as u128 * 65535));
        assert_eq!(s.mean, 65535.0);
    }

    #[test]
    fn float_sums_are_compensated() {
        // 1e16, a million ones, then -1e16: a plain f64 running sum loses every one of them
        // (the spacing of f64 at 1e16 is 2), the compensated sum keeps them.
        let mut data = vec![1.0f32; 2 * BLOCK + 5];
        let last = data.len() - 1;
        data[0] = 1e16;
        data[last] = -1e16;
        data.push(0.1);
        let exact = (2 * BLOCK + 3) as f64 + f64::from(0.1f32);
        let naive: f64 = data.iter().map(|&v| f64::from(v)).fold(0.0, |a, v| a + v);
        assert_ne!(naive, exact);
        let v = Volume::from_vec([1, 1, 1, data.len()], data).unwrap();
        let s = &stats(v.into())[0];
        assert_eq!(s.sum, Scalar::Float(exact));
    }

    #[test]
    fn nan_is_ignored_by_min_max_and_propagates_into_sum_and_mean() {
        let v = Volume::from_vec([2, 1, 1, 3], vec![1.0f32, f32::NAN, -2.0, 5.0, 6.0, 7.0]);
        let s = stats(v.unwrap().into());
        assert_eq!(s[0].min, Some(Scalar::Float(-2.0)));
        assert_eq!(s[0].max, Some(Scalar::Float(1.0)));
        assert!(s[0].mean.is_nan());
        assert!(matches!(s[0].sum, Scalar::Float(x) if x.is_nan()));
        assert_eq!(s[0].nan_count, 1);
        assert_eq!(s[1].sum, Scalar::Float(18.0));
        assert_eq!(s[1].nan_count, 0);
        let json = serde_json::to_string(&s[0]).unwrap();
        assert_eq!(json, r#"{"min":-2.0,"max":1.0,"mean":null,"sum":null}"#);
    }

    #[test]
    fn all_nan_channels_have_no_min_or_max() {
        let v = Volume::filled([1, 1, 1, 4], f32::NAN);
        let s = &stats(v.into())[0];
        assert_eq!((s.min, s.max), (None, None));
        assert_eq!(s.nan_count, 4);
    }

    #[test]
    fn infinities_are_values() {
        let v = Volume::from_vec([1, 1, 1, 3], vec![1.0f32, f32::INFINITY, 2.0]).unwrap();
        let s = &stats(v.into())[0];
        assert_eq!(s.max, Some(Scalar::Float(f64::INFINITY)));
        assert_eq!(s.sum, Scalar::Float(f64::INFINITY));
        let v = Volume::from_vec([1, 1, 1, 2], vec![f32::NEG_INFINITY, f32::INFINITY]).unwrap();
        assert!(stats(v.into())[0].sum.as_f64().is_nan());
    }

    #[test]
    fn json_keeps_integers_exact() {
        let v = Volume::from_vec([1, 1, 1, 2], vec![0u8, 255]).unwrap();
        let json = serde_json::to_string(&stats(v.into())[0]).unwrap();
        assert_eq!(json, r#"{"min":0,"max":255,"mean":127.5,"sum":255}"#);
    }
}
