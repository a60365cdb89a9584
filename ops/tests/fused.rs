//! The fused ConvNeXt steps and the detection heads' bias add, ReLU and training-mode batch norm
//! against the same computation in plain candle ops (whose forward and backward candle already
//! defines), and DropPath's per-sample semantics. (Batch norm is also checked against PyTorch in
//! `heads/tests/roi_heads.rs`.)

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

/// The gradient of `sum(f(vars) * gy)` with respect to each var.
fn grads_of(y: &Tensor, gy: &Tensor, vars: &[&Var]) -> Vec<Tensor> {
    let g = (y * gy).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter().map(|v| g.get(v).expect("a gradient").clone()).collect()
}

#[test]
fn bias_add_and_relu_match_candle_forward_and_backward() {
    // 5000 rows of 7: several rayon tasks, rows not a multiple of the task size.
    let x = Var::from_tensor(&randn(&[5, 1000, 7], 21)).unwrap();
    let b = Var::from_tensor(&randn(&[7], 22)).unwrap();
    let gy = randn(&[5, 1000, 7], 23);
    let fused = nextdet_ops::relu(&nextdet_ops::bias_add(x.as_tensor(), b.as_tensor()).unwrap()).unwrap();
    let plain = x.as_tensor().broadcast_add(b.as_tensor()).unwrap().relu().unwrap();
    assert_eq!(max_diff(&fused, &plain), 0.0);
    let (gf, gp) = (grads_of(&fused, &gy, &[&x, &b]), grads_of(&plain, &gy, &[&x, &b]));
    assert_eq!(max_diff(&gf[0], &gp[0]), 0.0, "input gradient");
    assert!(max_diff(&gf[1], &gp[1]) < 1e-3, "bias gradient {}", max_diff(&gf[1], &gp[1]));
    // A bias that does not fit is an error; NaN passes through ReLU as in PyTorch.
    assert!(nextdet_ops::bias_add(x.as_tensor(), &randn(&[6], 1)).is_err());
    let nan = Tensor::new(&[f32::NAN, -1.0, 2.0], &Device::Cpu).unwrap();
    let r = nextdet_ops::relu(&nan).unwrap().to_vec1::<f32>().unwrap();
    assert!(r[0].is_nan() && r[1] == 0.0 && r[2] == 2.0, "{r:?}");
}

#[test]
fn bias_gradient_does_not_depend_on_the_thread_count() {
    let x = Var::from_tensor(&randn(&[20000, 9], 24)).unwrap();
    let b = Var::from_tensor(&randn(&[9], 25)).unwrap();
    let gy = randn(&[20000, 9], 26);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let y = nextdet_ops::bias_add(x.as_tensor(), b.as_tensor()).unwrap();
            grads_of(&y, &gy, &[&b])[0].to_vec1::<f32>().unwrap()
        })
    };
    assert_eq!(run(1), run(3));
}

/// Training-mode batch norm in plain candle ops over channel dimension 1.
fn plain_batch_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
    let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
    let mut shape = vec![1; x.rank()];
    shape[1] = x.dim(1).unwrap();
    let mean = x.mean_keepdim(dims.as_slice()).unwrap();
    let centered = x.broadcast_sub(&mean).unwrap();
    let var = centered.sqr().unwrap().mean_keepdim(dims.as_slice()).unwrap();
    let inv = (var + eps).unwrap().sqrt().unwrap().recip().unwrap();
    let scale = w.reshape(shape.as_slice()).unwrap().broadcast_mul(&inv).unwrap();
    centered.broadcast_mul(&scale).unwrap().broadcast_add(&b.reshape(shape.as_slice()).unwrap()).unwrap()
}

#[test]
fn batch_norm_train_matches_plain_ops_and_gradients() {
    for shape in [vec![300, 6, 7, 7], vec![41, 6]] {
        let x = Var::from_tensor(&(randn(&shape, 31) + 0.7).unwrap()).unwrap();
        let w = Var::from_tensor(&randn(&[6], 32)).unwrap();
        let b = Var::from_tensor(&randn(&[6], 33)).unwrap();
        let gy = randn(&shape, 34);
        let (fused, stats) = nextdet_ops::batch_norm_train(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let plain = plain_batch_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5);
        assert!(max_diff(&fused, &plain) < 1e-4, "{shape:?} forward {}", max_diff(&fused, &plain));
        assert_eq!(stats.count, x.elem_count() / 6);
        let dims: Vec<usize> = (0..shape.len()).filter(|&d| d != 1).collect();
        let mean = x.as_tensor().mean_keepdim(dims.as_slice()).unwrap().flatten_all().unwrap();
        assert!(max_diff(&stats.mean, &mean) < 1e-5);
        let (gf, gp) = (grads_of(&fused, &gy, &[&x, &w, &b]), grads_of(&plain, &gy, &[&x, &w, &b]));
        for (name, (f, p)) in ["input", "weight", "bias"].iter().zip(gf.iter().zip(&gp)) {
            let scale = p.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(max_diff(f, p) <= 1e-4 * scale.max(1.0), "{shape:?} {name} gradient {}", max_diff(f, p));
        }
    }
    // One value per channel cannot be normalized; a weight that does not fit is an error.
    let one = randn(&[1, 6], 35);
    assert!(nextdet_ops::batch_norm_train(&one, &randn(&[6], 1), &randn(&[6], 2), 1e-5).is_err());
    assert!(nextdet_ops::batch_norm_train(&randn(&[4, 6], 3), &randn(&[5], 1), &randn(&[6], 2), 1e-5).is_err());
}
