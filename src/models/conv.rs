//! The one 3D convolution every network of seglab calls ([`conv3d`], [`conv3d_bias_relu`],
//! and [`conv_transpose3d`] for upsampling), with two implementations of the same function,
//! chosen per call by a [`ComputePath`]:
//!
//! - [`ComputePath::Kernels`], the default on the CPU: the GEMM convolution of
//!   [`crate::kernels`] with its handwritten backward pass, for every stride and for
//!   transposed convolutions;
//! - [`ComputePath::Burn`]: burn's `conv3d` and `conv_transpose3d`, the path of every other
//!   backend (wgpu, CUDA), of convolutions the kernels do not take, and the reference the
//!   tests below compare the kernels with (values and gradients, and finite differences). In
//!   training on lavapipe it runs in slabs ([`conv_split`]: llvmpipe's loop limit cuts burn's
//!   weight gradients short).
//!
//! [`conv_transpose3d_blocks`] is the U-Net's 2³ stride-2 upsampling on every backend: its
//! blocks do not overlap, so it is one matrix product.

use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::module::{conv_transpose3d as burn_conv_transpose3d, conv3d as burn_conv3d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, PadMode};

use super::conv_split;
use crate::kernels;
pub use crate::kernels::ComputePath;

/// A 3D convolution with a cubic kernel, stride `stride` and explicit zero padding
/// `(before, after)` per spatial axis (asymmetric allowed, as TensorFlow's 'same' needs), on
/// `path` where the kernels take it and on burn's convolution otherwise.
///
/// # Shapes
///
/// - x: `[batch, in, depth, height, width]`
/// - weight: `[out, in, k, k, k]`, bias: `[out]`
/// - output: `[batch, out, d', h', w']`, n' = (n + before + after − k) / stride + 1
pub fn conv3d(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    stride: usize,
    pads: [(usize, usize); 3],
    path: ComputePath,
) -> Tensor<5> {
    let k = weight.dims()[2];
    if path == ComputePath::Kernels && kernels::conv::conv3d_supported(&x, k, stride, pads) {
        kernels::conv3d(x, weight, bias, stride, pads)
    } else {
        burn_conv(x, weight, bias, stride, pads)
    }
}

/// `relu(conv3d(x, weight, bias))`. At inference (no autodiff) on the kernels' path with
/// stride 1 the bias and the ReLU are applied as the output leaves the kernel
/// ([`kernels::conv3d_bias_relu`]), one pass over the activation instead of three; otherwise
/// the separate operations.
pub fn conv3d_bias_relu(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Tensor<1>,
    stride: usize,
    pads: [(usize, usize); 3],
    path: ComputePath,
) -> Tensor<5> {
    let k = weight.dims()[2];
    if path == ComputePath::Kernels
        && stride == 1
        && kernels::conv::conv3d_bias_relu_supported(&x, k, pads)
    {
        return kernels::conv3d_bias_relu(x, weight, bias, pads);
    }
    relu(conv3d(x, weight, Some(bias), stride, pads, path))
}

/// A transposed convolution, stride s, kernel k ≥ s, weight `[in, out, k, k, k]` (burn's
/// layout), whose full output `[(n − 1)·s + k]` per axis is cropped by `crop = (before,
/// after)` voxels: [`kernels::conv_transpose3d`] on the kernels' path where it applies, else
/// burn's `conv_transpose3d`.
pub fn conv_transpose3d(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    stride: usize,
    crop: (usize, usize),
    path: ComputePath,
) -> Tensor<5> {
    let [_, _, d, h, w] = x.dims();
    let k = weight.dims()[2];
    if path == ComputePath::Kernels && kernels::conv::conv_transpose3d_supported(&x, k, stride) {
        return kernels::conv_transpose3d(x, weight, bias, stride, crop);
    }
    let s = stride;
    let (before, after) = crop;
    let size = kernels::conv::transposed_output_size([d, h, w], k, s, crop);
    if conv_split::needed(&x, d * h * w) {
        let y = conv_split::conv_transpose3d_in_slabs(x, weight, bias, s);
        return crop_from(y, before, size);
    }
    // burn crops `padding` voxels on both sides; the remainder by slicing.
    let sym = before.min(after);
    let y = burn_conv_transpose3d(
        x,
        weight,
        bias,
        ConvTransposeOptions::new([s; 3], [sym; 3], [0; 3], [1; 3], 1),
    );
    crop_from(y, before - sym, size)
}

/// The `size` voxels per axis of `y` from `offset` on, every sample and channel.
fn crop_from(y: Tensor<5>, offset: usize, size: [usize; 3]) -> Tensor<5> {
    let [n, c, ..] = y.dims();
    y.slice([
        0..n,
        0..c,
        offset..offset + size[0],
        offset..offset + size[1],
        offset..offset + size[2],
    ])
}

/// burn's conv3d with asymmetric padding: the common part inside the convolution, the
/// remainder as explicit zeros. In training on a GPU backend, in slabs when a sample's output
/// is too large for burn's weight gradient ([`conv_split`]).
fn burn_conv(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    stride: usize,
    pads: [(usize, usize); 3],
) -> Tensor<5> {
    let k = weight.dims()[2];
    let [_, _, d, h, w] = x.dims();
    let out = kernels::conv::output_size([d, h, w], k, stride, pads);
    if conv_split::needed(&x, out.iter().product()) {
        let x = x.pad(pads, PadMode::Constant(0.0));
        return conv_split::conv3d_in_slabs(x, weight, bias, stride);
    }
    let sym = pads.map(|(b, a)| b.min(a));
    let x = kernels::conv::pad_beyond(x, pads, sym); // [batch, in, d+…, h+…, w+…]
    burn_conv3d(
        x,
        weight,
        bias,
        ConvOptions::new([stride; 3], sym, [1; 3], 1),
    )
}

/// Transposed convolution whose kernel equals its stride (the U-Net's 2³ stride-2
/// upsampling): the output blocks do not overlap, so it is one matrix product
/// `Wᵀ [out·s³, in] · x [in, voxels]` followed by a reordering of the s³ sub-voxels — GEMMs
/// forward and backward instead of burn's generic transposed-convolution gradients.
///
/// # Shapes
///
/// - x: `[batch, in, d, h, w]`
/// - weight: `[in, out, s, s, s]` (burn's layout), bias: `[out]`
/// - output: `[batch, out, d·s, h·s, w·s]`
pub fn conv_transpose3d_blocks(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
) -> Tensor<5> {
    let [n, cin, d, h, w] = x.dims();
    let [wcin, cout, s, _, _] = weight.dims();
    assert_eq!(
        cin, wcin,
        "conv_transpose3d: input channels {cin} vs weight {wcin}"
    );
    let xm = x.reshape([n, cin, d * h * w]); // [batch, in, voxels]
    let wm = weight
        .reshape([cin, cout * s * s * s])
        .transpose()
        .reshape([1, cout * s * s * s, cin]); // [1, out·s³, in]
    let y = wm.matmul(xm); // [batch, out·s³, voxels]
    let y = y
        .reshape([n, cout, s, s, s, d, h, w])
        .permute([0, 1, 5, 2, 6, 3, 7, 4]) // [batch, out, d, s, h, s, w, s]
        .reshape([n, cout, d * s, h * s, w * s]);
    kernels::conv::add_bias(y, bias)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;
    use crate::models::test_support::{
        assert_close, random_tensor as tensor, random_values as values, to_vec,
    };

    /// (kernel, input channels, output channels, input size d×h×w, pads)
    type Case = (usize, usize, usize, [usize; 3], [(usize, usize); 3]);

    const CASES: [Case; 6] = [
        (3, 2, 3, [5, 4, 6], [(1, 1); 3]),
        (4, 3, 2, [4, 5, 4], [(1, 2); 3]),
        (1, 4, 2, [3, 3, 5], [(0, 0); 3]),
        (7, 1, 2, [5, 6, 5], [(3, 3); 3]),
        (2, 2, 2, [3, 4, 5], [(0, 1), (1, 0), (0, 0)]),
        (4, 2, 1, [6, 6, 6], [(1, 1); 3]),
    ];

    #[test]
    fn kernel_forward_equals_burns_convolution() {
        let dev = Device::flex();
        for (i, &(k, cin, cout, [d, h, w], pads)) in CASES.iter().enumerate() {
            let x = tensor([2, cin, d, h, w], i as u64, &dev);
            let wt = tensor([cout, cin, k, k, k], 100 + i as u64, &dev);
            let b = tensor([cout], 200 + i as u64, &dev);
            let run = |path| conv3d(x.clone(), wt.clone(), Some(b.clone()), 1, pads, path);
            assert_close(
                &to_vec(run(ComputePath::Kernels)),
                &to_vec(run(ComputePath::Burn)),
                1e-5,
                &format!("case {i}"),
            );
        }
    }

    /// Gradients of L = Σ y·r for input, weight and bias.
    fn gradients(case: &Case, seed: u64, path: ComputePath) -> [Vec<f32>; 3] {
        let &(k, cin, cout, [d, h, w], pads) = case;
        let dev = Device::flex().autodiff();
        let x = tensor([2, cin, d, h, w], seed, &dev).require_grad();
        let wt = tensor([cout, cin, k, k, k], seed + 1, &dev).require_grad();
        let b = tensor([cout], seed + 2, &dev).require_grad();
        let y = conv3d(x.clone(), wt.clone(), Some(b.clone()), 1, pads, path);
        let r = tensor(y.dims(), seed + 3, &dev);
        let grads = (y * r).sum().backward();
        [
            to_vec(x.grad(&grads).unwrap()),
            to_vec(wt.grad(&grads).unwrap()),
            to_vec(b.grad(&grads).unwrap()),
        ]
    }

    #[test]
    fn gradients_equal_burns_generic_backward() {
        for (i, case) in CASES.iter().enumerate() {
            let reference = gradients(case, 10 * i as u64, ComputePath::Burn);
            let got = gradients(case, 10 * i as u64, ComputePath::Kernels);
            for (name, (g, r)) in ["x", "weight", "bias"]
                .iter()
                .zip(got.iter().zip(&reference))
            {
                assert_close(g, r, 1e-4, &format!("case {i} d{name}"));
            }
        }
    }

    /// L = Σ y·r is linear in x and in the weight, so central differences are exact up to
    /// rounding: every gradient entry is checked, not a sample.
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::flex();
        let case: Case = (3, 2, 2, [3, 4, 3], [(0, 1), (1, 1), (1, 0)]);
        let (k, cin, cout, [d, h, w], pads) = case;
        let [gx, gw, _] = gradients(&case, 7, ComputePath::Kernels);
        let x = values(2 * cin * d * h * w, 7);
        let wt = values(cout * cin * k * k * k, 8);
        let b = tensor([cout], 9, &dev);
        let loss = |x: &[f32], wt: &[f32]| -> f64 {
            let xt = Tensor::<5>::from_data(TensorData::new(x.to_vec(), [2, cin, d, h, w]), &dev);
            let wtt =
                Tensor::<5>::from_data(TensorData::new(wt.to_vec(), [cout, cin, k, k, k]), &dev);
            let y = conv3d(xt, wtt, Some(b.clone()), 1, pads, ComputePath::Burn);
            let r = to_vec(tensor(y.dims(), 10, &dev));
            to_vec(y)
                .iter()
                .zip(&r)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum()
        };
        let eps = 0.25f32;
        let fd = |v: &[f32], i: usize, f: &dyn Fn(&[f32]) -> f64| -> f32 {
            let (mut p, mut m) = (v.to_vec(), v.to_vec());
            p[i] += eps;
            m[i] -= eps;
            ((f(&p) - f(&m)) / (2.0 * f64::from(eps))) as f32
        };
        let fx: Vec<f32> = (0..x.len()).map(|i| fd(&x, i, &|v| loss(v, &wt))).collect();
        let fw: Vec<f32> = (0..wt.len())
            .map(|i| fd(&wt, i, &|v| loss(&x, v)))
            .collect();
        assert_close(&gx, &fx, 1e-3, "dx vs finite differences");
        assert_close(&gw, &fw, 1e-3, "dweight vs finite differences");
    }

    #[test]
    fn block_transposed_convolution_equals_burns() {
        use burn::tensor::module::conv_transpose3d;
        use burn::tensor::ops::ConvTransposeOptions;
        for s in [1usize, 2, 3] {
            let dev = Device::flex().autodiff();
            let x = tensor([2, 3, 2, 3, 4], s as u64, &dev).require_grad();
            let wt = tensor([3, 2, s, s, s], 10 + s as u64, &dev).require_grad();
            let b = tensor([2], 20 + s as u64, &dev).require_grad();
            let ours = conv_transpose3d_blocks(x.clone(), wt.clone(), Some(b.clone()));
            let theirs = conv_transpose3d(
                x.clone(),
                wt.clone(),
                Some(b.clone()),
                ConvTransposeOptions::new([s; 3], [0; 3], [0; 3], [1; 3], 1),
            );
            assert_eq!(ours.dims(), [2, 2, 2 * s, 3 * s, 4 * s]);
            let r = tensor(ours.dims(), 30, &dev);
            let (go, gt) = (
                (ours.clone() * r.clone()).sum().backward(),
                (theirs.clone() * r).sum().backward(),
            );
            assert_close(
                &to_vec(ours),
                &to_vec(theirs),
                1e-5,
                &format!("s{s} forward"),
            );
            for (name, t) in [("x", &x), ("weight", &wt)] {
                let (a, e) = (to_vec(t.grad(&go).unwrap()), to_vec(t.grad(&gt).unwrap()));
                assert_close(&a, &e, 1e-4, &format!("s{s} d{name}"));
            }
            let (a, e) = (to_vec(b.grad(&go).unwrap()), to_vec(b.grad(&gt).unwrap()));
            assert_close(&a, &e, 1e-4, &format!("s{s} dbias"));
        }
    }

    /// Values and the gradients of L = Σ y·r for input, weight and bias of `f(x, w, b)`.
    fn values_and_gradients(
        x_shape: [usize; 5],
        w_shape: [usize; 5],
        bias: usize,
        seed: u64,
        f: impl Fn(Tensor<5>, Tensor<5>, Tensor<1>) -> Tensor<5>,
    ) -> [Vec<f32>; 4] {
        let dev = Device::flex().autodiff();
        let x = tensor(x_shape, seed, &dev).require_grad();
        let wt = tensor(w_shape, seed + 1, &dev).require_grad();
        let b = tensor([bias], seed + 2, &dev).require_grad();
        let y = f(x.clone(), wt.clone(), b.clone());
        let r = tensor(y.dims(), seed + 3, &dev);
        let grads = (y.clone() * r).sum().backward();
        [
            to_vec(y),
            to_vec(x.grad(&grads).unwrap()),
            to_vec(wt.grad(&grads).unwrap()),
            to_vec(b.grad(&grads).unwrap()),
        ]
    }

    /// `f(…, ComputePath::Kernels)` gives the values and gradients of `f(…, ComputePath::Burn)`.
    fn assert_kernel_equals_burn(
        what: &str,
        [x_shape, w_shape]: [[usize; 5]; 2],
        bias: usize,
        seed: u64,
        f: impl Fn(Tensor<5>, Tensor<5>, Tensor<1>, ComputePath) -> Tensor<5>,
    ) {
        let run =
            |path| values_and_gradients(x_shape, w_shape, bias, seed, |x, w, b| f(x, w, b, path));
        let (got, reference) = (run(ComputePath::Kernels), run(ComputePath::Burn));
        for (name, (g, r)) in ["y", "dx", "dweight", "dbias"]
            .iter()
            .zip(got.iter().zip(&reference))
        {
            assert_close(g, r, 1e-4, &format!("{what} {name}"));
        }
    }

    /// Every form of the kernel's products: volumes large enough for several chunks of
    /// output positions per sample, with few (stacked columns) and many input channels (one
    /// product per offset) in the forward pass and in the input gradient (whose kernel is
    /// the flipped transpose, 10→3 stacks it); one sample (chunks split for the threads) and
    /// two; a bottleneck with fewer grid positions than output channels (stacked although
    /// the input has many channels); both layouts of the weight gradient's products (32 and
    /// 64 output channels fill whole registers: positions-major dY).
    #[test]
    fn kernel_path_equals_burns_for_every_product_form() {
        for (batch, cin, cout, n) in [
            (2, 2, 3, 24),
            (2, 9, 10, 22),
            (1, 10, 3, 20),
            (2, 9, 40, 2),
            (2, 20, 32, 12),
            (1, 8, 64, 10),
        ] {
            assert_kernel_equals_burn(
                &format!("{batch}×{cin}→{cout}"),
                [[batch, cin, n, n + 1, n], [cout, cin, 3, 3, 3]],
                cout,
                80,
                |x, w, b, path| conv3d(x, w, Some(b), 1, [(1, 1); 3], path),
            );
        }
    }

    /// At inference the kernel path adds the bias and applies ReLU as the output leaves the
    /// kernel: the values of burn's convolution, bias and ReLU, with symmetric and asymmetric
    /// ('same' for an even kernel) padding.
    #[test]
    fn fused_bias_relu_equals_burns_convolution_bias_and_relu() {
        let dev = Device::flex();
        // (kernel, pads, in, out)
        let cases = [
            (3, [(1, 1); 3], 3, 4),
            (4, [(1, 2), (2, 1), (1, 2)], 3, 4),
            (3, [(1, 1); 3], 8, 64),
        ];
        for (i, (k, pads, cin, cout)) in cases.into_iter().enumerate() {
            let seed = 90 + 3 * i as u64;
            let x = tensor([2, cin, 9, 10, 11], seed, &dev);
            let w = tensor([cout, cin, k, k, k], seed + 1, &dev);
            let b = tensor([cout], seed + 2, &dev);
            let got = to_vec(conv3d_bias_relu(
                x.clone(),
                w.clone(),
                b.clone(),
                1,
                pads,
                ComputePath::Kernels,
            ));
            let want = to_vec(relu(conv3d(x, w, Some(b), 1, pads, ComputePath::Burn)));
            assert!(want.contains(&0.0) && want.iter().any(|&v| v > 0.0));
            assert_close(&got, &want, 1e-4, &format!("k{k} {cin}→{cout}"));
        }
    }

    /// Strided convolutions through the polyphase form: Vox2Vox's k4 s2, the CycleGAN's
    /// k3 s2 with TensorFlow's asymmetric 'same' padding, odd sizes, a stride of 3.
    #[test]
    fn strided_kernel_path_equals_burns_values_and_gradients() {
        type Strided = (usize, usize, [usize; 3], [(usize, usize); 3]);
        let cases: [Strided; 4] = [
            (4, 2, [6, 7, 8], [(1, 1); 3]),
            (3, 2, [5, 6, 7], [(0, 1), (1, 1), (0, 0)]),
            (4, 2, [8, 8, 8], [(1, 2); 3]),
            (3, 3, [7, 6, 9], [(1, 1); 3]),
        ];
        for (i, (k, stride, [d, h, w], pads)) in cases.into_iter().enumerate() {
            assert_kernel_equals_burn(
                &format!("case {i}"),
                [[2, 3, d, h, w], [2, 3, k, k, k]],
                2,
                40 + i as u64,
                |x, wt, b, path| conv3d(x, wt, Some(b), stride, pads, path),
            );
        }
    }

    /// Vox2Vox's bottleneck shapes at 2³, where the kernel stacks although the inputs have
    /// many channels (fewer grid positions than output channels): the 'same' 4³ convolution,
    /// the k4 s2 convolution into it and the k4 s2 transposed convolution out of it, batch 4.
    #[test]
    fn bottleneck_shapes_equal_burns_values_and_gradients() {
        let pads = [(1, 2); 3];
        for (stride, n) in [(1, 2), (2, 4)] {
            assert_kernel_equals_burn(
                &format!("k4 s{stride} {n}³ → 2³"),
                [[4, 16, n, n, n], [24, 16, 4, 4, 4]],
                24,
                69 + stride as u64,
                |x, w, b, path| conv3d(x, w, Some(b), stride, pads, path),
            );
        }
        assert_kernel_equals_burn(
            "transposed k4 s2 2³ → 4³",
            [[4, 24, 2, 2, 2], [24, 16, 4, 4, 4]],
            16,
            72,
            |x, w, b, path| conv_transpose3d(x, w, Some(b), 2, (1, 1), path),
        );
    }

    /// Transposed convolutions through the output phases: the CycleGAN's k3 s2 ('same' crops
    /// 0 before and 1 after), k4 s2, k = s, a stride of 3.
    #[test]
    fn transposed_kernel_path_equals_burns_values_and_gradients() {
        let cases = [
            (3, 2, (0, 1)),
            (4, 2, (1, 1)),
            (2, 2, (0, 0)),
            (5, 3, (1, 1)),
        ];
        for (i, (k, stride, crop)) in cases.into_iter().enumerate() {
            assert_kernel_equals_burn(
                &format!("case {i}"),
                [[2, 3, 3, 4, 5], [3, 2, k, k, k]],
                2,
                60 + i as u64,
                |x, wt, b, path| conv_transpose3d(x, wt, Some(b), stride, crop, path),
            );
        }
    }

    #[test]
    fn the_kernel_path_applies_on_flex_devices() {
        for dev in [Device::flex(), Device::flex().autodiff()] {
            let x = tensor([1, 2, 4, 4, 4], 1, &dev);
            assert!(
                kernels::conv::conv3d_supported(&x, 3, 1, [(1, 1); 3]),
                "{dev:?}"
            );
            assert!(
                !kernels::conv::conv3d_supported(&x, 3, 1, [(3, 3); 3]),
                "padding ≥ kernel"
            );
        }
    }
}
