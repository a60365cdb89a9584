//! Every op on the device `NEXTDET_TEST_DEVICE` names (`cuda`, `cuda:N`; `cpu` runs them too)
//! against the fast CPU kernel: the public op with its inputs on that device (which takes the
//! CUDA kernel or the device-generic path) must give the CPU's output within 1e-5 and the CPU's
//! input gradients within 1e-4 (relative to the largest reference value, absolute below 1), and
//! NMS and mask pasting the same indices and pixels.
//!
//! Ignored by default: CI has no GPU. `tools/gpu-check.sh` runs them on a GPU machine with
//! `NEXTDET_TEST_DEVICE=cuda ... --ignored`; `NEXTDET_TEST_DEVICE=cpu cargo test --release -p
//! nextdet-ops --test device -- --ignored` runs them here.

use candle_core::{Device, Result, Tensor, Var};
use nextdet_ops::{BatchedNmsOpts, Boxes, RoiAlign};
use nextdet_testutil::{assert_close_scaled, max_abs};
use std::sync::OnceLock;

const FWD_TOL: f32 = 1e-5;
const GRAD_TOL: f32 = 1e-4;

/// The device under test, opened once for the whole binary.
fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let spec = std::env::var("NEXTDET_TEST_DEVICE").expect("set NEXTDET_TEST_DEVICE to cuda, cuda:N or cpu");
        match spec.as_str() {
            "cpu" => Device::Cpu,
            "cuda" => Device::new_cuda(0).expect("CUDA device 0"),
            s => {
                let n = s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).expect("cuda:N");
                Device::new_cuda(n).expect("the CUDA device")
            }
        }
    })
}

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

/// `op` on the CPU and on the device under test, same inputs: outputs and the gradients of
/// `sum(y * g)` for every input.
fn check(name: &str, inputs: &[Tensor], op: Op) {
    let dev = device();
    let run = |d: &Device| {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(&t.to_device(d).unwrap()).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = op(&ts).unwrap_or_else(|e| panic!("{name} on {d:?}: {e}"));
        let g = randn(y.dims(), 99).to_device(d).unwrap();
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let dx: Vec<Tensor> = vars
            .iter()
            .enumerate()
            .map(|(i, v)| grads.get(v).unwrap_or_else(|| panic!("{name} on {d:?}: no gradient for input {i}")).clone())
            .collect();
        (y.to_device(&Device::Cpu).unwrap(), dx.into_iter().map(|t| t.to_device(&Device::Cpu).unwrap()).collect())
    };
    let (want, want_grads): (Tensor, Vec<Tensor>) = run(&Device::Cpu);
    let (got, got_grads): (Tensor, Vec<Tensor>) = run(dev);
    assert_close_scaled(&format!("{name} forward on {dev:?}"), &got, &want, FWD_TOL);
    for (i, (g, w)) in got_grads.iter().zip(&want_grads).enumerate() {
        assert!(max_abs(w) > 0.0, "{name}: input {i}'s reference gradient is all zeros");
        assert_close_scaled(&format!("{name} gradient {i} on {dev:?}"), g, w, GRAD_TOL);
    }
}

#[test]
#[ignore = "needs NEXTDET_TEST_DEVICE (a GPU machine: tools/gpu-check.sh)"]
fn convnext_block_ops_match_the_cpu() {
    for (k, c) in [(7, 96), (7, 20), (3, 33)] {
        let inputs = [randn(&[2, 14, 11, c], 1), (randn(&[c, 1, k, k], 2) * 0.2).unwrap(), randn(&[c], 3)];
        check(&format!("depthwise k{k} c{c}"), &inputs, &|t| nextdet_ops::depthwise_conv2d_nhwc(&t[0], &t[1], &t[2]));
    }
    let c = 40;
    let inputs = [
        randn(&[2, 9, 10, c], 4),
        (randn(&[c, 1, 7, 7], 5) * 0.2).unwrap(),
        randn(&[c], 6),
        randn(&[c], 7),
        randn(&[c], 8),
    ];
    check("depthwise + layer norm", &inputs, &|t| {
        nextdet_ops::depthwise_conv2d_layer_norm_nhwc(&t[0], &t[1], &t[2], &t[3], &t[4], 1e-6)
    });
    check("layer norm", &[randn(&[3, 5, 48], 9), randn(&[48], 10), randn(&[48], 11)], &|t| {
        nextdet_ops::layer_norm(&t[0], &t[1], &t[2], 1e-6)
    });
    check("channels-first layer norm", &[randn(&[2, 24, 5, 6], 12), randn(&[24], 13), randn(&[24], 14)], &|t| {
        nextdet_ops::layer_norm_channels_first(&t[0], &t[1], &t[2], 1e-6)
    });
    check("gelu linear", &[randn(&[3, 7, 64], 15), randn(&[64], 16), (randn(&[16, 64], 17) * 0.1).unwrap()], &|t| {
        nextdet_ops::gelu_linear(&t[0], &t[1], &t[2])
    });
    check("linear", &[randn(&[5, 3, 40], 18), randn(&[24, 40], 19)], &|t| nextdet_ops::linear_no_bias(&t[0], &t[1]));
    check("bias gelu", &[randn(&[37, 24], 20), randn(&[24], 21)], &|t| nextdet_ops::bias_gelu(&t[0], &t[1]));
    let scales = vec![1.25f32, 0.0, 1.25];
    check(
        "layer scale residual",
        &[randn(&[3, 50, 16], 22), randn(&[16], 23), randn(&[3, 50, 16], 24), randn(&[16], 25)],
        &|t| nextdet_ops::layer_scale_drop_path_residual(&t[0], &t[1], Some(&t[3]), &t[2], Some(scales.clone())),
    );
}

#[test]
#[ignore = "needs NEXTDET_TEST_DEVICE (a GPU machine: tools/gpu-check.sh)"]
fn detection_layer_ops_match_the_cpu() {
    check("bias add", &[randn(&[6, 4, 33], 30), randn(&[33], 31)], &|t| nextdet_ops::bias_add(&t[0], &t[1]));
    check("relu", &[randn(&[5, 40], 32)], &|t| nextdet_ops::relu(&t[0]));
    check("batch norm", &[randn(&[4, 10, 5, 7], 33), randn(&[10], 34), randn(&[10], 35)], &|t| {
        Ok(nextdet_ops::batch_norm_train(&t[0], &t[1], &t[2], 1e-5)?.0)
    });
    for (i, (k, s, p, h, w)) in
        [(3, 1, 1, 9, 8), (3, 2, 1, 9, 8), (1, 1, 0, 6, 7), (1, 2, 0, 7, 6)].into_iter().enumerate()
    {
        check(
            &format!("conv2d case {i}"),
            &[
                randn(&[2, 5, h, w], 40 + i as u64),
                (randn(&[7, 5, k, k], 50 + i as u64) * 0.3).unwrap(),
                randn(&[7], 60),
            ],
            &|t| nextdet_ops::conv2d::conv2d(&t[0], &t[1], Some(&t[2]), s, p),
        );
    }
    let x = randn(&[2, 3, 7, 10], 70);
    for size in [(14, 20), (5, 4), (7, 13)] {
        check(&format!("nearest {size:?}"), std::slice::from_ref(&x), &|t| nextdet_ops::resize_nearest(&t[0], size));
        check(&format!("bilinear {size:?}"), std::slice::from_ref(&x), &|t| nextdet_ops::resize_bilinear(&t[0], size));
    }
    check("stride 2", std::slice::from_ref(&x), &|t| nextdet_ops::subsample_stride2(&t[0]));
    let relu_x = randn(&[1, 3, 9, 8], 71).relu().unwrap();
    check("max pool", &[relu_x], &|t| nextdet_ops::max_pool_3x3_stride2_nonnegative(&t[0]));
}

/// RoIs on a 2-image 13x17 map at scale 0.5, inside, across and past the border, degenerate.
fn rois(device: &Device) -> Tensor {
    let rows: [[f32; 5]; 7] = [
        [0.0, 2.0, 3.0, 20.0, 15.0],
        [1.0, -4.0, -3.0, 10.0, 9.0],
        [1.0, 25.0, 20.0, 40.0, 30.0],
        [0.0, 5.0, 5.0, 5.0, 5.0],
        [1.0, 12.0, 9.0, 6.0, 4.0],
        [0.0, 0.0, 0.0, 33.0, 25.0],
        [1.0, 7.3, 1.1, 7.9, 2.2],
    ];
    Tensor::from_iter(rows.iter().flatten().copied(), device).unwrap().reshape((7, 5)).unwrap()
}

#[test]
#[ignore = "needs NEXTDET_TEST_DEVICE (a GPU machine: tools/gpu-check.sh)"]
fn roi_align_matches_the_cpu() {
    let x = randn(&[2, 24, 13, 17], 80);
    let x_nhwc = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
    for (aligned, sampling) in [(true, 0), (true, 2), (false, 0)] {
        let layer = RoiAlign { output_size: (7, 7), spatial_scale: 0.5, sampling_ratio: sampling, aligned };
        let name = format!("roi align aligned {aligned} sampling {sampling}");
        check(&name, std::slice::from_ref(&x), &|t| layer.forward(&t[0], &rois(t[0].device())));
        check(&format!("{name} nhwc"), std::slice::from_ref(&x_nhwc), &|t| {
            layer.forward_nhwc(&t[0], &rois(t[0].device()))
        });
    }
}

/// Pseudo-random boxes with many overlaps, in a 400 x 600 image, and their scores.
fn boxes_and_scores(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let r = randn(&[n, 5], seed).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut xyxy = Vec::with_capacity(4 * n);
    let mut scores = Vec::with_capacity(n);
    for v in r.chunks_exact(5) {
        let (x, y) = ((v[0] + 3.0) * 100.0, (v[1] + 3.0) * 66.0);
        let (w, h) = ((v[2] + 3.0) * 12.0 + 1.0, (v[3] + 3.0) * 12.0 + 1.0);
        xyxy.extend([x, y, x + w, y + h]);
        scores.push((v[4] + 3.0) / 6.0);
    }
    (xyxy, scores)
}

#[test]
#[ignore = "needs NEXTDET_TEST_DEVICE (a GPU machine: tools/gpu-check.sh)"]
fn nms_keeps_the_same_boxes() {
    let dev = device();
    for (n, thr) in [(300, 0.5), (3000, 0.7), (64, 0.3), (65, 0.0)] {
        let (xyxy, scores) = boxes_and_scores(n, n as u64);
        let want = nextdet_ops::nms::nms_slices(&xyxy, &scores, thr).unwrap();
        let boxes = Boxes::from_slice(&xyxy, dev).unwrap();
        let s = Tensor::from_slice(&scores, n, dev).unwrap();
        let got = nextdet_ops::nms(&boxes, &s, thr).unwrap();
        assert_eq!(got, want, "nms of {n} boxes at {thr} on {dev:?}");
        let ids: Vec<i64> = (0..n as i64).map(|i| i % 5).collect();
        let opts = BatchedNmsOpts::new(thr);
        let want = nextdet_ops::nms::batched_nms_slices(&xyxy, &scores, &ids, &opts).unwrap();
        let got = nextdet_ops::batched_nms(&boxes, &s, &Tensor::from_slice(&ids, n, dev).unwrap(), &opts).unwrap();
        assert_eq!(got, want, "batched nms of {n} boxes at {thr} on {dev:?}");
    }
}

#[test]
#[ignore = "needs NEXTDET_TEST_DEVICE (a GPU machine: tools/gpu-check.sh)"]
fn mask_paste_gives_the_same_pixels() {
    let dev = device();
    let k = 12;
    let masks = ((randn(&[k, 28, 28], 90) + 3.0).unwrap() / 6.0).unwrap();
    let (xyxy, _) = boxes_and_scores(k, 91);
    let mut boxes = xyxy.clone();
    boxes[0..4].copy_from_slice(&[-20.0, -10.0, 700.0, 30.5]); // past the image
    boxes[4..8].copy_from_slice(&[50.0, 50.0, 50.0, 80.0]); // zero width
    let boxes = Tensor::from_vec(boxes, (k, 4), &Device::Cpu).unwrap();
    let want = nextdet_ops::paste_masks(&masks, &boxes, (400, 600), 0.5).unwrap();
    let got = nextdet_ops::paste_masks(&masks.to_device(dev).unwrap(), &boxes.to_device(dev).unwrap(), (400, 600), 0.5)
        .unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.window, w.window, "mask {i} window on {dev:?}");
        assert_eq!(g.data, w.data, "mask {i} pixels on {dev:?}");
    }
    assert!(want.iter().any(|m| m.area() > 0), "some mask must have foreground");
}
