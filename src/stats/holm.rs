//! Holm's step-down adjustment of p-values for multiple comparisons (Holm 1979, Scandinavian
//! Journal of Statistics 6(2), 65–70): with the m raw p-values sorted ascending,
//! p̃₍ᵢ₎ = max_{j ≤ i} min(1, (m − j + 1)·p₍ⱼ₎). It controls the family-wise error rate under
//! any dependence. NaN p-values are not part of the family: they stay NaN and do not count
//! in m.

/// The Holm-adjusted p-values, in the order of `p`.
pub fn holm_adjust(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let m = order.len();
    let mut adjusted = vec![f64::NAN; p.len()];
    let mut running = 0.0f64;
    for (j, &i) in order.iter().enumerate() {
        running = running.max(((m - j) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_multiplies_by_the_remaining_count_and_keeps_order() {
        // Sorted 0.01, 0.02, 0.04 → 3·0.01, max(0.03, 2·0.02), max(0.04, 1·0.04).
        let adj = holm_adjust(&[0.04, 0.01, 0.02]);
        let expected = [0.04, 0.03, 0.04];
        for (a, e) in adj.iter().zip(expected) {
            assert!((a - e).abs() < 1e-15, "{adj:?}");
        }
    }

    #[test]
    fn holm_caps_at_one_and_skips_nan() {
        let adj = holm_adjust(&[0.6, f64::NAN, 0.5]);
        assert_eq!(adj[0], 1.0);
        assert!(adj[1].is_nan());
        assert_eq!(adj[2], 1.0);
    }
}
