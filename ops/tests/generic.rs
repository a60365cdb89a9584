//! Every device-generic path (`nextdet_ops::generic`, candle ops only) against the fast CPU
//! kernel it stands in for on other devices, run here on the CPU: the forward within 1e-5 and
//! every input gradient of `sum(y * g)` within 1e-4, both relative to the largest reference
//! value (absolute where that is below 1). Inputs are deterministic pseudo-random values; shapes
//! cross the kernels' vector widths (channel counts that are not multiples of 16), odd and even
//! sizes, and the edge cases each kernel treats specially.

use candle_core::{DType, Device, Result, Tensor, Var};
use nextdet_ops::autocast::Autocast;
use nextdet_ops::generic;
use nextdet_ops::RoiAlign;
use nextdet_testutil::{assert_close_scaled, max_abs, max_abs_diff};
use rand::SeedableRng;

const FWD_TOL: f32 = 1e-5;
const GRAD_TOL: f32 = 1e-4;

/// Values spread over [-3, 3), the same for the same seed on every machine.
fn randn(shape: &[usize], seed: u64) -> Tensor {
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

type Op<'a> = &'a dyn Fn(&[Tensor]) -> Result<Tensor>;

/// Runs `fast` and `generic` on the same inputs (as variables) and compares the outputs and the
/// gradients of `sum(y * g)` for every input, `g` pseudo-random. Each reference gradient must
/// be nonzero somewhere, so that a missing gradient cannot pass as equal zeros.
fn check(name: &str, inputs: &[Tensor], fast: Op, generic: Op) {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let yf = fast(&ts).unwrap_or_else(|e| panic!("{name}: fast kernel: {e}"));
    let yg = generic(&ts).unwrap_or_else(|e| panic!("{name}: generic path: {e}"));
    assert_eq!(yg.dtype(), yf.dtype(), "{name}: dtype");
    assert_close_scaled(&format!("{name} forward"), &yg, &yf, FWD_TOL);
    let g = randn(yf.dims(), 99);
    let gf = (&yf * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let gg = (&yg * &g).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, v) in vars.iter().enumerate() {
        let want = gf.get(v).unwrap_or_else(|| panic!("{name}: the fast kernel gives input {i} no gradient"));
        let got = gg.get(v).unwrap_or_else(|| panic!("{name}: the generic path gives input {i} no gradient"));
        assert!(max_abs(want) > 0.0, "{name}: input {i}'s reference gradient is all zeros");
        assert_close_scaled(&format!("{name} gradient {i}"), got, want, GRAD_TOL);
    }
}

#[test]
fn comparison_catches_a_wrong_epsilon() {
    // The check above must fail on a real difference: a layer norm with another epsilon.
    let x = randn(&[4, 24], 1);
    let (w, b) = (randn(&[24], 2), randn(&[24], 3));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check(
            "wrong eps",
            &[x.clone(), w.clone(), b.clone()],
            &|t| nextdet_ops::layer_norm(&t[0], &t[1], &t[2], 1e-6),
            &|t| generic::layer_norm(&t[0], &t[1], &t[2], 1e-2),
        )
    }));
    assert!(result.is_err(), "a layer norm with epsilon 1e-2 passed as equal to one with 1e-6");
}

#[test]
fn depthwise_conv_matches_kernel() {
    // widths cut into blocks of every size the kernel has (11: 5 + 6; 16: 8 + 8; 19: 6 + 6 + 7;
    // 1), heights and widths smaller and larger than the kernel, a kernel size without a
    // vectorized kernel (9)
    let shapes = [[2, 9, 11], [1, 3, 16], [1, 5, 19], [1, 1, 1], [2, 9, 11], [1, 2, 16], [1, 4, 3], [1, 5, 12]];
    let cases = [(7, 20, 10), (3, 32, 20), (5, 17, 30), (1, 8, 40), (7, 16, 60), (7, 48, 70), (7, 32, 80), (9, 16, 90)];
    for ((k, c, seed), [n, h, w]) in cases.into_iter().zip(shapes) {
        let x = randn(&[n, h, w, c], seed);
        let w = (randn(&[c, 1, k, k], seed + 1) * 0.3).unwrap();
        let b = randn(&[c], seed + 2);
        check(
            &format!("depthwise k{k} c{c}"),
            &[x, w, b],
            &|t| nextdet_ops::depthwise_conv2d_nhwc(&t[0], &t[1], &t[2]),
            &|t| generic::depthwise_conv2d_nhwc(&t[0], &t[1], &t[2]),
        );
    }
}

#[test]
fn depthwise_conv_layer_norm_matches_kernel() {
    let c = 36;
    let inputs = [
        randn(&[2, 8, 7, c], 50),
        (randn(&[c, 1, 7, 7], 51) * 0.2).unwrap(),
        randn(&[c], 52),
        randn(&[c], 53),
        randn(&[c], 54),
    ];
    check(
        "depthwise + layer norm",
        &inputs,
        &|t| nextdet_ops::depthwise_conv2d_layer_norm_nhwc(&t[0], &t[1], &t[2], &t[3], &t[4], 1e-6),
        &|t| generic::depthwise_conv2d_layer_norm_nhwc(&t[0], &t[1], &t[2], &t[3], &t[4], 1e-6),
    );
}

#[test]
fn layer_norm_matches_kernel() {
    for (dims, seed) in [(vec![4usize, 7, 24], 60), (vec![5, 96], 61), (vec![3, 2, 2, 19], 62)] {
        let d = *dims.last().unwrap();
        check(
            &format!("layer norm {dims:?}"),
            &[randn(&dims, seed), randn(&[d], seed + 1), randn(&[d], seed + 2)],
            &|t| nextdet_ops::layer_norm(&t[0], &t[1], &t[2], 1e-6),
            &|t| generic::layer_norm(&t[0], &t[1], &t[2], 1e-6),
        );
    }
}

#[test]
fn half_precision_layer_norm_normalizes_in_f32() {
    // 16-bit inputs are normalized in f32 and rounded once: a bf16 input gives the f32 kernel's
    // values to bf16 precision.
    let x = randn(&[2, 5, 6, 12], 63);
    let (w, b) = (randn(&[12], 64), randn(&[12], 65));
    let want = nextdet_ops::layer_norm(&x, &w, &b, 1e-6).unwrap();
    let got = generic::layer_norm(&x.to_dtype(DType::BF16).unwrap(), &w, &b, 1e-6).unwrap();
    assert_eq!(got.dtype(), DType::BF16);
    assert_close_scaled("bf16 layer norm", &got, &want, 2e-2);
}

#[test]
fn gelu_linear_matches_kernel() {
    let inputs = [randn(&[3, 5, 24], 70), randn(&[24], 71), (randn(&[10, 24], 72) * 0.2).unwrap()];
    check("gelu linear", &inputs, &|t| nextdet_ops::gelu_linear(&t[0], &t[1], &t[2]), &|t| {
        generic::gelu_linear(&t[0], &t[1], &t[2])
    });
}

#[test]
fn linear_and_bias_gelu_match_kernels() {
    check(
        "linear",
        &[randn(&[4, 3, 21], 80), randn(&[13, 21], 81)],
        &|t| nextdet_ops::linear_no_bias(&t[0], &t[1]),
        &|t| generic::linear_no_bias(&t[0], &t[1]),
    );
    check("bias gelu", &[randn(&[37, 24], 82), randn(&[24], 83)], &|t| nextdet_ops::bias_gelu(&t[0], &t[1]), &|t| {
        generic::bias_gelu(&t[0], &t[1])
    });
}

#[test]
fn bias_add_and_relu_match_kernels() {
    check("bias add", &[randn(&[6, 4, 33], 90), randn(&[33], 91)], &|t| nextdet_ops::bias_add(&t[0], &t[1]), &|t| {
        generic::bias_add(&t[0], &t[1])
    });
    // Exact zeros: both give them gradient 0 (PyTorch's rule), where candle's relu gives 1.
    let x = randn(&[5, 40], 92);
    let zeros = x.abs().unwrap().lt(0.5).unwrap();
    let x = zeros.where_cond(&x.zeros_like().unwrap(), &x).unwrap();
    check("relu", std::slice::from_ref(&x), &|t| nextdet_ops::relu(&t[0]), &|t| generic::relu(&t[0]));
    let xv = Var::from_tensor(&x).unwrap();
    let grads = generic::relu(xv.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let at_zero = zeros.where_cond(grads.get(&xv).unwrap(), &x.zeros_like().unwrap()).unwrap();
    assert_eq!(max_abs(&at_zero), 0.0, "relu's gradient at 0 must be 0");
    // NaN passes through the forward as in PyTorch; -inf gives 0.
    let special = Tensor::new(&[f32::NAN, f32::NEG_INFINITY, -1.0, 0.0, 2.0], &Device::Cpu).unwrap();
    let got = generic::relu(&special).unwrap().to_vec1::<f32>().unwrap();
    assert!(got[0].is_nan());
    assert_eq!(&got[1..], &[0.0, 0.0, 0.0, 2.0]);
}

#[test]
fn drop_path_matches_kernel() {
    let x = randn(&[6, 5, 7], 100);
    let draw = || rand::rngs::StdRng::seed_from_u64(7);
    let scales = nextdet_ops::drop_path_scales(6, 0.4, &mut draw());
    assert!(scales.contains(&0.0) && scales.iter().any(|&s| s > 1.0), "the draw must drop and keep: {scales:?}");
    check("drop path", &[x], &|t| nextdet_ops::drop_path(&t[0], 0.4, true, &mut draw()), &|t| {
        generic::drop_path_scaled(&t[0], &scales)
    });
}

#[test]
fn layer_scale_residual_matches_kernel() {
    let dims = [4, 300, 20];
    let scales = vec![1.25f32, 0.0, 1.25, 1.25];
    for (gamma, drop) in [(true, false), (false, false), (true, true), (false, true)] {
        let mut inputs = vec![randn(&dims, 110), randn(&[20], 111), randn(&dims, 112)];
        if gamma {
            inputs.push(randn(&[20], 113));
        }
        let s = drop.then(|| scales.clone());
        let name = format!("layer scale residual (gamma {gamma}, drop path {drop})");
        check(
            &name,
            &inputs,
            &|t| nextdet_ops::layer_scale_drop_path_residual(&t[0], &t[1], t.get(3), &t[2], s.clone()),
            &|t| generic::layer_scale_drop_path_residual(&t[0], &t[1], t.get(3), &t[2], s.as_deref()),
        );
    }
}

#[test]
fn batch_norm_matches_kernel() {
    for (dims, seed) in [(vec![6usize, 11], 120), (vec![3, 10, 5, 7], 121)] {
        let c = dims[1];
        let x = (randn(&dims, seed) + 2.0).unwrap();
        let inputs = [x.clone(), randn(&[c], seed + 1), randn(&[c], seed + 2)];
        check(
            &format!("batch norm {dims:?}"),
            &inputs,
            &|t| Ok(nextdet_ops::batch_norm_train(&t[0], &t[1], &t[2], 1e-5)?.0),
            &|t| Ok(generic::batch_norm_train(&t[0], &t[1], &t[2], 1e-5)?.0),
        );
        let (_, want) = nextdet_ops::batch_norm_train(&inputs[0], &inputs[1], &inputs[2], 1e-5).unwrap();
        let (_, got) = generic::batch_norm_train(&inputs[0], &inputs[1], &inputs[2], 1e-5).unwrap();
        assert_eq!(got.count, want.count);
        assert_close_scaled("batch norm mean", &got.mean, &want.mean, FWD_TOL);
        assert_close_scaled("batch norm var", &got.var, &want.var, FWD_TOL);
    }
}

#[test]
fn conv2d_matches_kernel() {
    // (cin, cout, k, stride, padding, h, w, bias): odd/even sizes under stride 2 (where candle's
    // own conv2d backward gets the width wrong), pointwise, and strided pointwise.
    let cases = [
        (5, 7, 3, 1, 1, 9, 8, true),
        (4, 6, 3, 2, 1, 9, 8, true),
        (4, 6, 3, 2, 1, 8, 11, false),
        (3, 5, 1, 1, 0, 6, 7, true),
        (3, 5, 1, 2, 0, 7, 6, true),
        (2, 3, 5, 2, 2, 10, 13, true),
        (6, 4, 3, 1, 0, 5, 5, true),
    ];
    for (i, &(cin, cout, k, s, p, h, w, bias)) in cases.iter().enumerate() {
        let seed = 130 + 10 * i as u64;
        let mut inputs = vec![randn(&[2, cin, h, w], seed), (randn(&[cout, cin, k, k], seed + 1) * 0.3).unwrap()];
        if bias {
            inputs.push(randn(&[cout], seed + 2));
        }
        check(
            &format!("conv2d case {i}"),
            &inputs,
            &|t| nextdet_ops::conv2d::conv2d(&t[0], &t[1], t.get(2), s, p),
            &|t| generic::conv2d(&t[0], &t[1], t.get(2), s, p),
        );
    }
}

#[test]
fn conv2d_empty_batch_gives_empty_output() {
    let x = Tensor::zeros((0, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let w = randn(&[4, 3, 3, 3], 1);
    let want = nextdet_ops::conv2d::conv2d(&x, &w, None, 2, 1).unwrap();
    let got = generic::conv2d(&x, &w, None, 2, 1).unwrap();
    assert_eq!(got.dims(), want.dims());
}

#[test]
fn resampling_matches_kernels() {
    let x = randn(&[2, 3, 7, 10], 200);
    for size in [(14, 20), (5, 4), (7, 13), (9, 10), (1, 1)] {
        check(
            &format!("nearest {size:?}"),
            std::slice::from_ref(&x),
            &|t| nextdet_ops::resize_nearest(&t[0], size),
            &|t| generic::resize_nearest(&t[0], size),
        );
        check(
            &format!("bilinear {size:?}"),
            std::slice::from_ref(&x),
            &|t| nextdet_ops::resize_bilinear(&t[0], size),
            &|t| generic::resize_bilinear(&t[0], size),
        );
    }
    check("stride 2", std::slice::from_ref(&x), &|t| nextdet_ops::subsample_stride2(&t[0]), &|t| {
        generic::subsample_stride2(&t[0])
    });
}

/// RoIs on a 2-image 13x17 map at scale 0.5: inside, overlapping the border, reaching past it,
/// degenerate (zero and negative size), large (several samples per bin) and tiny.
fn rois() -> Tensor {
    let rows: [[f32; 5]; 9] = [
        [0.0, 2.0, 3.0, 20.0, 15.0],
        [1.0, -4.0, -3.0, 10.0, 9.0],
        [1.0, 25.0, 20.0, 40.0, 30.0],
        [0.0, 5.0, 5.0, 5.0, 5.0],
        [1.0, 12.0, 9.0, 6.0, 4.0],
        [0.0, 0.0, 0.0, 33.0, 25.0],
        [1.0, 7.3, 1.1, 7.9, 2.2],
        [0.0, -30.0, -30.0, -20.0, -20.0],
        [1.0, 30.5, 22.5, 34.0, 26.0],
    ];
    Tensor::from_iter(rows.iter().flatten().copied(), &Device::Cpu).unwrap().reshape((9, 5)).unwrap()
}

#[test]
fn roi_align_matches_kernel() {
    let rois = rois();
    let x = randn(&[2, 19, 13, 17], 300);
    let x_nhwc = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
    for (aligned, sampling) in [(true, 0), (true, 2), (false, 0), (false, 3)] {
        let layer = RoiAlign { output_size: (3, 4), spatial_scale: 0.5, sampling_ratio: sampling, aligned };
        let r = rois.clone();
        check(
            &format!("roi align nchw aligned {aligned} sampling {sampling}"),
            std::slice::from_ref(&x),
            &|t| layer.forward(&t[0], &r),
            &|t| generic::roi_align(&layer, &t[0], &r, false),
        );
        check(
            &format!("roi align nhwc aligned {aligned} sampling {sampling}"),
            std::slice::from_ref(&x_nhwc),
            &|t| layer.forward_nhwc(&t[0], &r),
            &|t| generic::roi_align(&layer, &t[0], &r, true),
        );
        // Chunks of about one RoI: the concatenation gives the same output and gradient.
        check(
            &format!("roi align in chunks aligned {aligned} sampling {sampling}"),
            std::slice::from_ref(&x),
            &|t| layer.forward(&t[0], &r),
            &|t| generic::roi_align_chunked(&layer, &t[0], &r, false, 1),
        );
    }
}

#[test]
fn roi_align_generic_edge_cases() {
    let layer = RoiAlign::new((2, 2), 1.0);
    let x = randn(&[1, 3, 5, 5], 310);
    let empty = Tensor::zeros((0, 5), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(generic::roi_align(&layer, &x, &empty, false).unwrap().dims(), [0, 3, 2, 2]);
    let bad_batch = Tensor::new(&[[1f32, 0.0, 0.0, 2.0, 2.0]], &Device::Cpu).unwrap();
    assert!(generic::roi_align(&layer, &x, &bad_batch, false).is_err());
    let bad_shape = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(generic::roi_align(&layer, &x, &bad_shape, false).is_err());
}

#[test]
fn max_pool_is_already_generic() {
    // The stem max pooling is built from candle's views and maxima, so it runs on any device
    // as it is: a bf16 input gives the f32 result rounded.
    let x = randn(&[1, 2, 7, 6], 400).relu().unwrap();
    let want = nextdet_ops::max_pool_3x3_stride2_nonnegative(&x).unwrap();
    let got = nextdet_ops::max_pool_3x3_stride2_nonnegative(&x.to_dtype(DType::BF16).unwrap()).unwrap();
    assert_close_scaled("bf16 max pool", &got, &want, 1e-2);
}

/// The generic paths that need no matrix multiply run in bf16 as they are (candle 0.11's CPU
/// matmul has no bf16; its CUDA one has): the f32 kernel's values to bf16 precision.
#[test]
fn generic_paths_run_in_bf16() {
    let bf = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
    let x = randn(&[2, 6, 5, 8], 500);
    let (w, b) = ((randn(&[8, 1, 3, 3], 501) * 0.3).unwrap(), randn(&[8], 502));
    let want = nextdet_ops::depthwise_conv2d_nhwc(&x, &w, &b).unwrap();
    let got = generic::depthwise_conv2d_nhwc(&bf(&x), &w, &b).unwrap();
    assert_eq!(got.dtype(), DType::BF16);
    assert_close_scaled("bf16 depthwise", &got, &want, 3e-2);
    let rois = rois();
    let xr = randn(&[2, 4, 13, 17], 503);
    let layer = RoiAlign::new((3, 3), 0.5);
    let want = layer.forward(&xr, &rois).unwrap();
    let got = generic::roi_align(&layer, &bf(&xr), &rois, false).unwrap();
    assert_close_scaled("bf16 roi align", &got, &want, 3e-2);
}

/// Autocast: the generic convolution and linear layers compute in half precision and return
/// f32, and the gradients of the f32 weights come back f32, close to the f32 kernel's. Run with
/// f16: candle 0.11's CPU matrix multiply has no bf16 (its CUDA one has), and the code path is
/// the same for both dtypes.
#[test]
fn autocast_keeps_f32_weights_and_gradients() {
    let half = DType::F16;
    let x = randn(&[2, 4, 9, 8], 600);
    let w = Var::from_tensor(&(randn(&[6, 4, 3, 3], 601) * 0.3).unwrap()).unwrap();
    let want = nextdet_ops::conv2d::conv2d(&x, w.as_tensor(), None, 2, 1).unwrap();
    let got = {
        let _half = Autocast::enable(Some(half)).unwrap();
        assert_eq!(nextdet_ops::autocast::autocast_dtype(), Some(half));
        generic::conv2d(&x, w.as_tensor(), None, 2, 1).unwrap()
    };
    assert_eq!(nextdet_ops::autocast::autocast_dtype(), None, "the guard restores full precision");
    assert_eq!(got.dtype(), DType::F32);
    assert_close_scaled("f16 conv2d", &got, &want, 5e-3);
    assert!(max_abs_diff(&got, &want) > 0.0, "autocast must actually round to half precision");
    let g = randn(want.dims(), 602);
    let gw_want = (&want * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let gw_got = (&got * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let (gw_want, gw_got) = (gw_want.get(&w).unwrap(), gw_got.get(&w).unwrap());
    assert_eq!(gw_got.dtype(), DType::F32);
    assert_close_scaled("f16 conv2d weight gradient", gw_got, gw_want, 5e-3);

    let h = randn(&[7, 16], 603);
    let wl = (randn(&[5, 16], 604) * 0.3).unwrap();
    let bias = randn(&[16], 605);
    let want = nextdet_ops::gelu_linear(&h, &bias, &wl).unwrap();
    let _half = Autocast::enable(Some(half)).unwrap();
    let got = generic::gelu_linear(&h, &bias, &wl).unwrap();
    assert_eq!(got.dtype(), DType::F32);
    assert_close_scaled("f16 gelu linear", &got, &want, 5e-3);
    assert!(Autocast::enable(Some(DType::F32)).is_err(), "f32 is not an autocast dtype");
}
