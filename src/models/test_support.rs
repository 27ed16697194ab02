//! Helpers shared by the tests of the CPU kernels and the optimizer: deterministic
//! pseudo-random tensors, tensors to host vectors and an elementwise comparison with a
//! relative tolerance.

use burn::tensor::{Device, Tensor, TensorData};

/// Deterministic pseudo-random values in [−1, 1).
pub fn random_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A tensor of `shape` holding [`random_values`] of `seed`.
pub fn random_tensor<const D: usize>(shape: [usize; D], seed: u64, dev: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(random_values(n, seed), shape), dev)
}

/// The values of `t` as float32, in row-major order.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Asserts `|a − b| ≤ tol·(1 + |b|)` element by element, naming `what` and the index.
pub fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}
