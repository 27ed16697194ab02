//! Helpers shared by the tests of the CPU kernels: tensors to host vectors and an elementwise
//! comparison with a relative tolerance.

use burn::tensor::Tensor;

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
