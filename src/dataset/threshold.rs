//! Otsu's threshold: the intensity statistic behind the `threshold` baseline and the phantom
//! calibration. Follows scikit-image's `threshold_otsu`: integer-valued data get one histogram
//! bin per integer value, other data 256 equal bins over [min, max]; the threshold is the
//! centre of the bin that maximises the between-class variance, and foreground is `v > t`.

/// Otsu's threshold of `values`, or `None` for an empty slice. When all values are equal the
/// threshold is that value (nothing is foreground).
pub fn otsu_threshold(values: &[f32]) -> Option<f32> {
    let (min, max) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if values.is_empty() || !min.is_finite() || !max.is_finite() {
        return None;
    }
    if min == max {
        return Some(min);
    }
    let integral = values.iter().all(|v| v.fract() == 0.0) && max - min < 65536.0;
    let (counts, centres) = if integral {
        let n = (max - min) as usize + 1;
        let mut counts = vec![0f64; n];
        for &v in values {
            counts[(v - min) as usize] += 1.0;
        }
        let centres = (0..n)
            .map(|i| f64::from(min) + i as f64)
            .collect::<Vec<_>>();
        (counts, centres)
    } else {
        const BINS: usize = 256;
        let (lo, hi) = (f64::from(min), f64::from(max));
        let width = (hi - lo) / BINS as f64;
        let mut counts = vec![0f64; BINS];
        for &v in values {
            let b = (((f64::from(v) - lo) / width) as usize).min(BINS - 1);
            counts[b] += 1.0;
        }
        let centres = (0..BINS)
            .map(|i| lo + (i as f64 + 0.5) * width)
            .collect::<Vec<_>>();
        (counts, centres)
    };
    Some(best_split(&counts, &centres) as f32)
}

/// The bin centre maximising w1·w2·(μ1 − μ2)² over the splits "bins ≤ i" vs "bins > i".
fn best_split(counts: &[f64], centres: &[f64]) -> f64 {
    let total: f64 = counts.iter().sum();
    let total_mass: f64 = counts.iter().zip(centres).map(|(c, x)| c * x).sum();
    let (mut w1, mut m1) = (0.0, 0.0);
    let (mut best, mut best_var) = (centres[0], f64::NEG_INFINITY);
    for i in 0..counts.len() - 1 {
        w1 += counts[i];
        m1 += counts[i] * centres[i];
        let w2 = total - w1;
        if w1 == 0.0 || w2 == 0.0 {
            continue;
        }
        let diff = m1 / w1 - (total_mass - m1) / w2;
        let var = w1 * w2 * diff * diff;
        if var > best_var {
            best_var = var;
            best = centres[i];
        }
    }
    best
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
    fn constant_and_empty_inputs() {
        assert_eq!(otsu_threshold(&[3.0, 3.0]), Some(3.0));
        assert_eq!(otsu_threshold(&[]), None);
    }
}
