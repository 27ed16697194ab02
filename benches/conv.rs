//! Speed of seglab's two 3D convolution paths (burn's native conv3d and the default CPU kernel
//! of `kernels::conv`) on the layer shapes that dominate the networks: forward on a plain device and forward + backward (input and weight
//! gradients) on an autodiff device. Shapes are batch×channels×size×kernel (channels in = out).
//!
//! ```sh
//! cargo bench --profile dev --bench conv
//! SEGLAB_BENCH_CONV=4x32x32x3,4x32x64x3 cargo bench --profile dev --bench conv  # batch×ch×n×k
//! SEGLAB_BENCH_PATHS=kernels cargo bench --profile dev --bench conv  # only these paths
//! ```

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use seglab::models::conv::{ComputePath, conv3d};

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let shapes = std::env::var("SEGLAB_BENCH_CONV")
        .unwrap_or_else(|_| "4x4x32x3,2x16x64x3,4x32x64x3".into());
    let paths: Vec<ComputePath> = std::env::var("SEGLAB_BENCH_PATHS")
        .unwrap_or_else(|_| "burn,kernels".into())
        .split(',')
        .map(|p| ComputePath::parse(p).expect("SEGLAB_BENCH_PATHS: burn|kernels"))
        .collect();
    let dev = Device::flex();
    println!("conv3d paths, {} threads", rayon::current_num_threads());
    for s in shapes.split(',') {
        let v: Vec<usize> = s
            .split('x')
            .map(|p| p.parse().expect("batch×ch×n×k"))
            .collect();
        let [n, c, size, k] = [v[0], v[1], v[2], v[3]];
        let reps = if c * size >= 1024 { 3 } else { 7 };
        let x = Tensor::<5>::random([n, c, size, size, size], Distribution::Default, &dev);
        let w = Tensor::<5>::random([c, c, k, k, k], Distribution::Default, &dev) * 0.1;
        let b = Tensor::<1>::random([c], Distribution::Default, &dev);
        let pads = [((k - 1) / 2, k / 2); 3];
        let ya = conv3d(
            x.clone(),
            w.clone(),
            Some(b.clone()),
            1,
            pads,
            ComputePath::Burn,
        );
        let yb = conv3d(
            x.clone(),
            w.clone(),
            Some(b.clone()),
            1,
            pads,
            ComputePath::Kernels,
        );
        let diff = (ya - yb).abs().max().into_scalar::<f32>();
        for path in paths.iter().copied() {
            let fwd = median_ms(reps, || {
                let _ = conv3d(x.clone(), w.clone(), Some(b.clone()), 1, pads, path).into_data();
            });
            let ad = dev.clone().autodiff();
            let xa = x.clone().autodiff().require_grad();
            let wa = Tensor::<5>::from_data(w.to_data(), &ad).require_grad();
            let ba = Tensor::<1>::from_data(b.to_data(), &ad).require_grad();
            let bwd = median_ms(reps, || {
                let y = conv3d(xa.clone(), wa.clone(), Some(ba.clone()), 1, pads, path);
                let g = (y * 0.5).sum().backward();
                let _ = wa.grad(&g).unwrap().into_data();
                let _ = xa.grad(&g).unwrap().into_data();
            });
            println!(
                "{n}×{c}×{size}³ k{k} {path:?}: forward {fwd:.1} ms, forward+backward {bwd:.1} ms \
                 (max |Δ| {diff:.2e})"
            );
        }
    }
}
