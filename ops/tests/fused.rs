//! The fused ConvNeXt steps against the same computation in plain candle ops (whose forward and
//! backward candle already defines), and DropPath's per-sample semantics.

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // A deterministic spread of values without depending on candle's RNG.
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn bias_gelu_matches_erf_gelu_and_its_gradient() {
    let x = Var::from_tensor(&randn(&[37, 24], 1)).unwrap();
    let b = Var::from_tensor(&randn(&[24], 2)).unwrap();
    let gy = randn(&[37, 24], 3);
    let fused = nextdet_ops::bias_gelu(x.as_tensor(), b.as_tensor()).unwrap();
    let plain = x.as_tensor().broadcast_add(b.as_tensor()).unwrap().gelu_erf().unwrap();
    assert!(max_diff(&fused, &plain) < 1e-5, "forward diff {}", max_diff(&fused, &plain));
    let gf = (&fused * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    let gp = (&plain * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_diff(gf.get(&x).unwrap(), gp.get(&x).unwrap()) < 1e-4);
    assert!(max_diff(gf.get(&b).unwrap(), gp.get(&b).unwrap()) < 1e-3);
}

#[test]
fn layer_scale_residual_matches_plain_ops_and_gradients() {
    let y = Var::from_tensor(&randn(&[5, 3, 16], 4)).unwrap();
    let s = Var::from_tensor(&randn(&[5, 3, 16], 5)).unwrap();
    let b = Var::from_tensor(&randn(&[16], 6)).unwrap();
    let g = Var::from_tensor(&randn(&[16], 7)).unwrap();
    let gy = randn(&[5, 3, 16], 8);
    let fused =
        nextdet_ops::layer_scale_residual(y.as_tensor(), b.as_tensor(), Some(g.as_tensor()), s.as_tensor()).unwrap();
    let plain = (y.as_tensor().broadcast_add(b.as_tensor()).unwrap().broadcast_mul(g.as_tensor()).unwrap()
        + s.as_tensor())
    .unwrap();
    assert!(max_diff(&fused, &plain) < 1e-5);
    let gf = (&fused * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    let gp = (&plain * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    for v in [&y, &s, &b, &g] {
        let d = max_diff(gf.get(v).expect("fused grad"), gp.get(v).expect("plain grad"));
        assert!(d < 1e-3, "gradient diff {d}");
    }
}

/// The fused stochastic-depth residual against the plain ops with the same per-sample scales.
/// 700 positions per sample, so the kernel's row chunks (2048 rows at 16 channels) straddle
/// sample boundaries.
#[test]
fn layer_scale_drop_path_residual_matches_plain_ops_and_gradients() {
    let dims = [6, 700, 16];
    let y = Var::from_tensor(&randn(&dims, 14)).unwrap();
    let s = Var::from_tensor(&randn(&dims, 15)).unwrap();
    let b = Var::from_tensor(&randn(&[16], 16)).unwrap();
    let g = Var::from_tensor(&randn(&[16], 17)).unwrap();
    let gy = randn(&dims, 18);
    let scales = vec![1.25f32, 0.0, 1.25, 1.25, 0.0, 1.25];
    let fused = nextdet_ops::layer_scale_drop_path_residual(
        y.as_tensor(),
        b.as_tensor(),
        Some(g.as_tensor()),
        s.as_tensor(),
        Some(scales.clone()),
    )
    .unwrap();
    let per_sample = Tensor::from_vec(scales, (6, 1, 1), &Device::Cpu).unwrap();
    let branch = y.as_tensor().broadcast_add(b.as_tensor()).unwrap().broadcast_mul(g.as_tensor()).unwrap();
    let plain = (branch.broadcast_mul(&per_sample).unwrap() + s.as_tensor()).unwrap();
    assert!(max_diff(&fused, &plain) < 1e-5);
    let gf = (&fused * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    let gp = (&plain * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    for v in [&y, &s, &b, &g] {
        let (a, p) = (gf.get(v).expect("fused grad"), gp.get(v).expect("plain grad"));
        let scale = p.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
        let d = max_diff(a, p);
        assert!(d < 1e-4 * scale, "gradient diff {d} (scale {scale})");
    }
    // A dropped sample passes the shortcut through unchanged and gives its branch no gradient.
    let dropped = fused.get(1).unwrap();
    assert_eq!(max_diff(&dropped, &s.as_tensor().get(1).unwrap()), 0.0);
    assert_eq!(gf.get(&y).unwrap().get(4).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    let wrong = nextdet_ops::layer_scale_drop_path_residual(
        y.as_tensor(),
        b.as_tensor(),
        Some(g.as_tensor()),
        s.as_tensor(),
        Some(vec![1.0; 5]),
    );
    assert!(wrong.is_err(), "five scales for six samples must be refused");
}

#[test]
fn drop_path_is_identity_in_eval_and_per_sample_in_training() {
    let x = (randn(&[64, 4, 3], 9).abs().unwrap() + 1.0).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let eval = nextdet_ops::drop_path(&x, 0.5, false, &mut rng).unwrap();
    assert_eq!(max_diff(&eval, &x), 0.0);
    let v = Var::from_tensor(&x).unwrap();
    let y = nextdet_ops::drop_path(v.as_tensor(), 0.25, true, &mut rng).unwrap();
    let ratio = (&y / &x).unwrap().to_vec3::<f32>().unwrap();
    let mut kept = 0;
    for sample in &ratio {
        let r = sample[0][0];
        assert!(r == 0.0 || (r - 1.0 / 0.75).abs() < 1e-6, "scale {r}");
        assert!(sample.iter().flatten().all(|&q| (q - r).abs() < 1e-6), "one scale per sample");
        kept += (r > 0.0) as usize;
    }
    assert!((30..64).contains(&kept), "kept {kept} of 64 at p=0.25");
    let grad = y.sum_all().unwrap().backward().unwrap();
    let gx = grad.get(&v).unwrap().to_vec3::<f32>().unwrap();
    for (gs, rs) in gx.iter().zip(&ratio) {
        assert!((gs[0][0] - rs[0][0]).abs() < 1e-6, "gradient is the sample scale");
    }
}

#[test]
fn depthwise_conv_with_layer_norm_equals_the_two_ops_forward_and_backward() {
    for (c, k) in [(20, 7), (37, 3), (16, 5)] {
        let x = Var::from_tensor(&randn(&[2, 9, 11, c], 10 + c as u64)).unwrap();
        let w = Var::from_tensor(&randn(&[c, 1, k, k], 11)).unwrap();
        let b = Var::from_tensor(&randn(&[c], 12)).unwrap();
        let nw = Var::from_tensor(&randn(&[c], 13)).unwrap();
        let nb = Var::from_tensor(&randn(&[c], 14)).unwrap();
        let gy = randn(&[2, 9, 11, c], 15);
        let (xs, ws, bs, nws, nbs) = (x.as_tensor(), w.as_tensor(), b.as_tensor(), nw.as_tensor(), nb.as_tensor());
        let fused = nextdet_ops::depthwise_conv2d_layer_norm_nhwc(xs, ws, bs, nws, nbs, 1e-6).unwrap();
        let conv = nextdet_ops::depthwise_conv2d_nhwc(xs, ws, bs).unwrap();
        let plain = nextdet_ops::layer_norm(&conv, nws, nbs, 1e-6).unwrap();
        assert!(max_diff(&fused, &plain) < 1e-5, "forward diff {}", max_diff(&fused, &plain));
        let gf = (&fused * &gy).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (&plain * &gy).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("x", &x), ("w", &w), ("b", &b), ("norm w", &nw), ("norm b", &nb)] {
            let (a, e) = (gf.get(v).expect("fused grad"), gp.get(v).expect("plain grad"));
            let scale = e.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
            assert!(max_diff(a, e) < 1e-4 * scale, "C={c} k={k} d{name}: {}", max_diff(a, e));
        }
    }
}

#[test]
fn linear_equals_candle_matmul_forward_and_backward() {
    let x = Var::from_tensor(&randn(&[3, 5, 24], 20)).unwrap();
    let w = Var::from_tensor(&randn(&[40, 24], 21)).unwrap();
    let gy = randn(&[3, 5, 40], 22);
    let ours = nextdet_ops::linear_no_bias(x.as_tensor(), w.as_tensor()).unwrap();
    let plain = x.as_tensor().broadcast_matmul(&w.as_tensor().t().unwrap()).unwrap();
    assert_eq!(ours.dims(), &[3, 5, 40]);
    assert!(max_diff(&ours, &plain) < 1e-4, "forward diff {}", max_diff(&ours, &plain));
    let go = (&ours * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    let gp = (&plain * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_diff(go.get(&x).unwrap(), gp.get(&x).unwrap()) < 1e-3);
    assert!(max_diff(go.get(&w).unwrap(), gp.get(&w).unwrap()) < 1e-3);
}

/// The linear's own backward ops on a long reduction (4000 rows into a 20 x 12 weight): equal
/// to candle's matmul, and the same bits on 1 and 3 threads (training runs resume exactly).
#[test]
fn linear_weight_gradient_over_many_rows_matches_and_ignores_the_thread_count() {
    let grads = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let x = Var::from_tensor(&randn(&[4000, 12], 23)).unwrap();
            let w = Var::from_tensor(&randn(&[20, 12], 24)).unwrap();
            let gy = randn(&[4000, 20], 25);
            let ours = nextdet_ops::linear_no_bias(x.as_tensor(), w.as_tensor()).unwrap();
            let plain = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
            let go = (&ours * &gy).unwrap().sum_all().unwrap().backward().unwrap();
            let gp = (&plain * &gy).unwrap().sum_all().unwrap().backward().unwrap();
            let (dw, dw_ref) = (go.get(&w).unwrap().clone(), gp.get(&w).unwrap().clone());
            let scale = dw_ref.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(max_diff(&dw, &dw_ref) < 1e-5 * scale, "dW diff {} (scale {scale})", max_diff(&dw, &dw_ref));
            assert!(max_diff(go.get(&x).unwrap(), gp.get(&x).unwrap()) < 1e-3);
            dw.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
    };
    assert_eq!(grads(1), grads(3), "the weight gradient depends on the thread count");
}

#[test]
fn depthwise_conv_of_an_empty_map_is_empty_not_a_panic() {
    for shape in [[1, 4, 0, 8], [0, 4, 4, 8], [1, 0, 3, 8]] {
        let x = Tensor::zeros(&shape, candle_core::DType::F32, &Device::Cpu).unwrap();
        let (w, b) = (randn(&[8, 1, 7, 7], 30), randn(&[8], 31));
        let y = nextdet_ops::depthwise_conv2d_nhwc(&x, &w, &b).unwrap();
        assert_eq!(y.dims(), &shape);
        let y = nextdet_ops::depthwise_conv2d_layer_norm_nhwc(&x, &w, &b, &b, &b, 1e-6).unwrap();
        assert_eq!(y.dims(), &shape);
    }
}
