use burn::tensor::module::conv3d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

fn t<F: FnMut()>(name: &str, mut f: F) {
    f();
    let s = Instant::now();
    for _ in 0..3 {
        f();
    }
    eprintln!("{name}: {:.1} ms", s.elapsed().as_secs_f64() * 1000.0 / 3.0);
}

/// im2col conv via slicing: x [n, c, d, h, w] padded by 1, k3 s1.
fn conv_im2col(x: Tensor<5>, w: Tensor<5>) -> Tensor<5> {
    let [n, c, d, h, ww] = x.dims();
    let [co, _, k, _, _] = w.dims();
    let xp = x.pad(
        [(1, 1), (1, 1), (1, 1)],
        burn::tensor::ops::PadMode::Constant(0.0),
    );
    let mut cols = Vec::new();
    for a in 0..k {
        for b in 0..k {
            for cc in 0..k {
                cols.push(
                    xp.clone()
                        .slice([0..n, 0..c, a..a + d, b..b + h, cc..cc + ww]),
                );
            }
        }
    }
    // [n, c*k3, d, h, w] with order (k3, c)
    let col = Tensor::cat(cols, 1); // [n, k3*c, d,h,w]
    let col = col.reshape([n, k * k * k * c, d * h * ww]); // [n, K, P]
    let wm = w.permute([0, 2, 3, 4, 1]).reshape([1, co, k * k * k * c]); // [1, co, K]
    let y = wm.matmul(col); // [n, co, P]
    y.reshape([n, co, d, h, ww])
}

#[test]
fn probe() {
    let d = Device::flex();
    let a = Tensor::<3>::random([1, 131072, 432], Distribution::Default, &d);
    let b = Tensor::<3>::random([1, 432, 16], Distribution::Default, &d);
    t("matmul 131072x432x16 (1.8 GFLOP)", || {
        let _ = a.clone().matmul(b.clone()).into_data();
    });
    for (cin, cout, n) in [(4usize, 4usize, 32usize), (16, 16, 32)] {
        let x = Tensor::<5>::random([4, cin, n, n, n], Distribution::Default, &d);
        let w = Tensor::<5>::random([cout, cin, 3, 3, 3], Distribution::Default, &d);
        let r = conv3d(
            x.clone(),
            w.clone(),
            None,
            ConvOptions::new([1; 3], [1; 3], [1; 3], 1),
        );
        let m = conv_im2col(x.clone(), w.clone());
        let diff = (r - m).abs().max().into_scalar::<f32>();
        eprintln!("max diff {diff}");
        t(&format!("burn fwd {cin}->{cout} n {n}"), || {
            let _ = conv3d(
                x.clone(),
                w.clone(),
                None,
                ConvOptions::new([1; 3], [1; 3], [1; 3], 1),
            )
            .into_data();
        });
        t(&format!("im2col fwd {cin}->{cout} n {n}"), || {
            let _ = conv_im2col(x.clone(), w.clone()).into_data();
        });
        let xa = x.clone().autodiff().require_grad();
        let wa = w.clone().autodiff().require_grad();
        t(&format!("burn fwd+bwd {cin}->{cout}"), || {
            let g = conv3d(
                xa.clone(),
                wa.clone(),
                None,
                ConvOptions::new([1; 3], [1; 3], [1; 3], 1),
            )
            .sum()
            .backward();
            let _ = wa.grad(&g).unwrap().into_data();
            let _ = xa.grad(&g).unwrap().into_data();
        });
        t(&format!("im2col fwd+bwd {cin}->{cout}"), || {
            let g = conv_im2col(xa.clone(), wa.clone()).sum().backward();
            let _ = wa.grad(&g).unwrap().into_data();
            let _ = xa.grad(&g).unwrap().into_data();
        });
    }
}
