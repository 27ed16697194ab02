//! Otsu's threshold: the intensity statistic behind the `threshold` baseline and the phantom
//! calibration. Follows scikit-image's `threshold_otsu` (0.26) to the last bit, including its
//! floating-point types: integer-valued data get one histogram bin per integer value (as
//! skimage does for integer arrays), other data 256 equal bins over [min, max] built like
//! `np.histogram` on a float32 array; counts are float32 as in skimage; the threshold is the
//! centre of the first bin that maximises the between-class variance, foreground is `v > t`.
//!
//! Values travel as `f32` in seglab, so the histogram kind is chosen by the values, not by
//! a dtype: a float32 array that holds only integers (range < 65,536) is treated like an
//! integer array, where skimage would use 256 bins.

/// The range of a slice of finite values, and whether they are all whole numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ValueRange {
    pub min: f32,
    pub max: f32,
    pub integral: bool,
}

impl ValueRange {
    /// The range of `values`, or `None` for an empty slice or one holding NaN or an infinity.
    pub fn of(values: &[f32]) -> Option<ValueRange> {
        if values.is_empty() {
            return None;
        }
        let (mut min, mut max, mut integral) = (f32::INFINITY, f32::NEG_INFINITY, true);
        for &v in values {
            if !v.is_finite() {
                return None;
            }
            min = min.min(v);
            max = max.max(v);
            integral &= v.fract() == 0.0;
        }
        Some(ValueRange { min, max, integral })
    }

    /// True when a histogram gets one bin per integer value, as skimage builds it for integer
    /// arrays: whole numbers spanning less than 65,536.
    pub fn integer_bins(&self) -> bool {
        self.integral && self.max - self.min < 65536.0
    }
}

/// Otsu's threshold of `values`, or `None` for an empty slice or one holding NaN or an
/// infinity. When all values are equal the threshold is that value (nothing is foreground).
pub fn otsu_threshold(values: &[f32]) -> Option<f32> {
    let range = ValueRange::of(values)?;
    let (min, max) = (range.min, range.max);
    if min == max {
        return Some(min);
    }
    if range.integer_bins() {
        Some(otsu_integer(values, min, max))
    } else {
        Some(otsu_float(values, min, max))
    }
}

/// skimage's integer path: `np.bincount` histogram with integer bin centres; counts as
/// float32, their cumulative sums in float32, the weighted sums in float64.
fn otsu_integer(values: &[f32], min: f32, max: f32) -> f32 {
    let n = (max - min) as usize + 1;
    let mut counts = vec![0u64; n];
    for &v in values {
        counts[(v - min) as usize] += 1;
    }
    let counts: Vec<f32> = counts.into_iter().map(|c| c as f32).collect();
    let centres: Vec<f64> = (0..n).map(|i| f64::from(min) + i as f64).collect();
    let weighted: Vec<f64> = counts
        .iter()
        .zip(&centres)
        .map(|(&c, &x)| f64::from(c) * x)
        .collect();
    let (w1, w2) = (cumsum(&counts), rev_cumsum(&counts));
    let (s1, s2) = (cumsum(&weighted), rev_cumsum(&weighted));
    let mut best = (0usize, f64::NEG_INFINITY);
    for i in 0..n - 1 {
        let m1 = s1[i] / f64::from(w1[i]);
        let m2 = s2[i + 1] / f64::from(w2[i + 1]);
        let d = m1 - m2;
        let var = f64::from(w1[i] * w2[i + 1]) * (d * d);
        if var > best.1 {
            best = (i, var);
        }
    }
    centres[best.0] as f32
}

/// skimage's float path: `np.histogram(values, bins=256)` on float32 data (float32
/// `linspace` edges, NumPy's index computation and edge corrections), float32 centres and
/// float32 arithmetic throughout.
fn otsu_float(values: &[f32], min: f32, max: f32) -> f32 {
    const BINS: usize = 256;
    let delta = max - min;
    let step = delta / BINS as f32;
    let mut edges: Vec<f32> = (0..=BINS)
        .map(|i| {
            if step == 0.0 {
                (i as f32 / BINS as f32) * delta + min
            } else {
                i as f32 * step + min
            }
        })
        .collect();
    edges[BINS] = max;
    let mut counts = vec![0u64; BINS];
    for &v in values {
        let f = (v - min) / delta * BINS as f32;
        let mut i = (f as usize).min(BINS - 1);
        if v < edges[i] {
            i -= 1;
        } else if i != BINS - 1 && v >= edges[i + 1] {
            i += 1;
        }
        counts[i] += 1;
    }
    let counts: Vec<f32> = counts.into_iter().map(|c| c as f32).collect();
    let centres: Vec<f32> = (0..BINS).map(|i| (edges[i] + edges[i + 1]) / 2.0).collect();
    let weighted: Vec<f32> = counts.iter().zip(&centres).map(|(c, x)| c * x).collect();
    let (w1, w2) = (cumsum(&counts), rev_cumsum(&counts));
    let (s1, s2) = (cumsum(&weighted), rev_cumsum(&weighted));
    let mut best = (0usize, f32::NEG_INFINITY);
    for i in 0..BINS - 1 {
        let m1 = s1[i] / w1[i];
        let m2 = s2[i + 1] / w2[i + 1];
        let d = m1 - m2;
        let var = (w1[i] * w2[i + 1]) * (d * d);
        // NaN (an empty class) never wins, as skimage's inputs never produce one.
        if var > best.1 {
            best = (i, var);
        }
    }
    centres[best.0]
}

/// Running sum from the front, sequential as `np.cumsum`.
fn cumsum<T: Copy + std::ops::Add<Output = T>>(v: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    let mut acc: Option<T> = None;
    for &x in v {
        let s = acc.map_or(x, |a| a + x);
        out.push(s);
        acc = Some(s);
    }
    out
}

/// Running sum from the back (`np.cumsum(v[::-1])[::-1]`), indexed like `v`.
fn rev_cumsum<T: Copy + std::ops::Add<Output = T>>(v: &[T]) -> Vec<T> {
    let mut out = v.to_vec();
    for i in (0..v.len().saturating_sub(1)).rev() {
        out[i] = out[i + 1] + v[i];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_two_integer_modes() {
        let mut v = vec![10.0f32; 100];
        v.extend(std::iter::repeat_n(200.0, 50));
        let t = otsu_threshold(&v).unwrap();
        assert!((10.0..200.0).contains(&t), "{t}");
        assert_eq!(v.iter().filter(|&&x| x > t).count(), 50);
    }

    #[test]
    fn separates_two_float_modes() {
        let mut v: Vec<f32> = (0..100).map(|i| 0.1 + i as f32 * 1e-3).collect();
        v.extend((0..40).map(|i| 0.8 + i as f32 * 1e-3));
        let t = otsu_threshold(&v).unwrap();
        assert_eq!(v.iter().filter(|&&x| x > t).count(), 40, "{t}");
    }

    #[test]
    fn constant_empty_and_non_finite_inputs() {
        assert_eq!(otsu_threshold(&[3.0, 3.0]), Some(3.0));
        assert_eq!(otsu_threshold(&[]), None);
        assert_eq!(otsu_threshold(&[1.0, f32::NAN]), None);
        assert_eq!(otsu_threshold(&[1.0, f32::INFINITY]), None);
    }

    #[test]
    fn cumulative_sums_run_in_order() {
        assert_eq!(cumsum(&[1, 2, 3]), vec![1, 3, 6]);
        assert_eq!(rev_cumsum(&[1, 2, 3]), vec![6, 5, 3]);
    }
}
