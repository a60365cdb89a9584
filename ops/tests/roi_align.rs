//! RoIAlign and the multi-level RoI extractor against torchvision autograd, on fixtures written
//! by `tests/reference/make_roi_align_fixtures.py`; plus edge cases and determinism.

use candle_core::{DType, Device, Tensor, Var};
use nextdet_ops::{roi_align, roi_align_nhwc, RoiAlign, SingleRoiExtractor};
use nextdet_testutil::{assert_close, load_fixture, max_abs_diff};
use std::collections::HashMap;

const TOL: f32 = 1e-4;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    load_fixture(&format!("ops/roi_align/{name}"))
}

/// Forward and feature gradient of `sum(out * g)` for one (aligned, sampling) setting, in
/// both layouts.
fn check_case(aligned: bool, sampling: usize) {
    let f = fixture("roi_align.safetensors");
    let tag = format!("a{}_s{sampling}", aligned as u8);
    let (rois, g) = (&f["rois"], &f[&format!("g_{tag}")]);
    let x = Var::from_tensor(&f["x"]).unwrap();
    let y = roi_align(x.as_tensor(), rois, (3, 4), 0.5, sampling, aligned).unwrap();
    assert_close(&format!("{tag} out"), &y, &f[&format!("out_{tag}")], TOL);
    let grads = (y * g).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(&format!("{tag} dx"), grads.get(&x).expect("dx"), &f[&format!("dx_{tag}")], TOL);

    let xl = Var::from_tensor(&f["x"].permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()).unwrap();
    let y = roi_align_nhwc(xl.as_tensor(), rois, (3, 4), 0.5, sampling, aligned).unwrap();
    assert_close(&format!("{tag} nhwc out"), &y, &f[&format!("out_{tag}")], TOL);
    let grads = (y * g).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grads.get(&xl).expect("dx").permute((0, 3, 1, 2)).unwrap();
    assert_close(&format!("{tag} nhwc dx"), &dx, &f[&format!("dx_{tag}")], TOL);
}

#[test]
fn unaligned_fixed_sampling_matches_torchvision() {
    check_case(false, 2);
}

#[test]
fn unaligned_adaptive_sampling_matches_torchvision() {
    check_case(false, 0);
}

#[test]
fn aligned_fixed_sampling_matches_torchvision() {
    check_case(true, 2);
}

#[test]
fn aligned_adaptive_sampling_matches_torchvision() {
    check_case(true, 0);
}

#[test]
fn empty_rois_give_empty_output_and_zero_gradient() {
    let f = fixture("roi_align.safetensors");
    let x = Var::from_tensor(&f["x"]).unwrap();
    let y = RoiAlign::new((3, 4), 0.5).forward(x.as_tensor(), &f["rois_empty"]).unwrap();
    assert_eq!(y.dims(), f["out_empty"].dims());
    let grads = y.sum_all().unwrap().backward().unwrap();
    let dx = grads.get(&x).expect("dx");
    assert_eq!(dx.dims(), x.dims());
    assert_eq!(dx.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn bad_inputs_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 5, 5), DType::F32, &dev).unwrap();
    let roi = |b: f32| Tensor::new(&[[b, 0.0, 0.0, 4.0, 4.0]], &dev).unwrap();
    let err = |r: candle_core::Result<Tensor>| r.expect_err("should fail").to_string();
    assert!(err(roi_align(&x, &roi(2.0), (2, 2), 1.0, 0, true)).contains("batch index"));
    assert!(err(roi_align(&x, &roi(-1.0), (2, 2), 1.0, 0, true)).contains("batch index"));
    assert!(err(roi_align(&x, &roi(0.5), (2, 2), 1.0, 0, true)).contains("batch index"));
    assert!(err(roi_align(&x, &roi(f32::NAN), (2, 2), 1.0, 0, true)).contains("batch index"));
    let inf = Tensor::new(&[[0f32, 0.0, 0.0, f32::INFINITY, 4.0]], &dev).unwrap();
    assert!(err(roi_align(&x, &inf, (2, 2), 1.0, 0, true)).contains("non-finite"));
    let huge = Tensor::new(&[[0f32, 0.0, 0.0, 1e9, 4.0]], &dev).unwrap();
    assert!(err(roi_align(&x, &huge, (2, 2), 1.0, 0, true)).contains("samples per bin"));
    assert!(err(roi_align(&x, &roi(0.0), (2, 2), 1.0, 100_000, true)).contains("sampling_ratio"));
    assert!(err(roi_align(&x, &roi(0.0), (7, 7), 1.0, 65, true)).contains("sampling_ratio"));
    assert!(err(roi_align(&x, &roi(0.0), (1 << 40, 1 << 40), 1.0, 0, true)).contains("too large"));
    assert!(err(roi_align(&x, &roi(0.0), (0, 2), 1.0, 0, true)).contains("output size"));
    assert!(err(roi_align(&x, &roi(0.0), (2, 2), 0.0, 0, true)).contains("spatial_scale"));
    let four = Tensor::zeros((1, 4), DType::F32, &dev).unwrap();
    assert!(err(roi_align(&x, &four, (2, 2), 1.0, 0, true)).contains("[K, 5]"));
    let x3 = Tensor::zeros((3, 5, 5), DType::F32, &dev).unwrap();
    assert!(err(roi_align(&x3, &roi(0.0), (2, 2), 1.0, 0, true)).contains("features"));
    let x64 = Tensor::zeros((2, 3, 5, 5), DType::F64, &dev).unwrap();
    assert!(err(roi_align(&x64, &roi(0.0), (2, 2), 1.0, 0, true)).contains("f32"));
    // f64 RoIs are converted; an empty feature map pools to zeros.
    let r64 = roi(1.0).to_dtype(DType::F64).unwrap();
    assert_eq!(roi_align(&x, &r64, (2, 2), 1.0, 0, true).unwrap().dims(), [1, 3, 2, 2]);
    let empty = Tensor::zeros((1, 3, 0, 4), DType::F32, &dev).unwrap();
    let y = roi_align(&empty, &roi(0.0), (2, 2), 1.0, 2, true).unwrap();
    assert_eq!(y.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
}

/// Many RoIs of mixed images and sizes on enough channels for several channel blocks: the
/// NCHW and NHWC paths agree, and the gradient is the same bits under 1 and 4 threads.
#[test]
fn layouts_agree_and_backward_is_deterministic() {
    let dev = Device::Cpu;
    let (n, c, h, w) = (3, 100, 23, 31);
    let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev).unwrap();
    let k = 57;
    let mut rows = Vec::new();
    for i in 0..k {
        let t = i as f32;
        let (x1, y1) = ((t * 7.3) % 120.0 - 10.0, (t * 5.1) % 90.0 - 8.0);
        rows.extend_from_slice(&[(i % n) as f32, x1, y1, x1 + 5.0 + (t * 3.7) % 60.0, y1 + 3.0 + (t * 2.9) % 50.0]);
    }
    let rois = Tensor::from_vec(rows, (k, 5), &dev).unwrap();
    let g = Tensor::randn(0f32, 1.0, (k, c, 7, 7), &dev).unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let xv = Var::from_tensor(&x).unwrap();
            let y = roi_align(xv.as_tensor(), &rois, (7, 7), 0.25, 0, true).unwrap();
            let dx = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap().get(&xv).unwrap().clone();
            let xl = Var::from_tensor(&x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()).unwrap();
            let yl = roi_align_nhwc(xl.as_tensor(), &rois, (7, 7), 0.25, 0, true).unwrap();
            let dxl = (&yl * &g).unwrap().sum_all().unwrap().backward().unwrap().get(&xl).unwrap().clone();
            (y, dx, yl, dxl.permute((0, 3, 1, 2)).unwrap())
        })
    };
    let (y1, dx1, yl1, dxl1) = run(1);
    let (y4, dx4, _, _) = run(4);
    assert_eq!(max_abs_diff(&y1, &yl1), 0.0);
    assert_eq!(max_abs_diff(&dx1, &dxl1), 0.0);
    assert_eq!(max_abs_diff(&y1, &y4), 0.0);
    assert_eq!(max_abs_diff(&dx1, &dx4), 0.0);
    assert!(y1.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
}

#[test]
fn extractor_matches_mmdet_rule_and_torchvision() {
    let f = fixture("extractor.safetensors");
    let ex = SingleRoiExtractor::new((7, 7), &[4.0, 8.0]);
    let levels = ex.map_roi_levels(&f["rois"], 2).unwrap();
    let want: Vec<usize> = f["levels"].to_vec1::<f32>().unwrap().iter().map(|&l| l as usize).collect();
    assert_eq!(levels, want);
    let f0 = Var::from_tensor(&f["feat0"]).unwrap();
    let f1 = Var::from_tensor(&f["feat1"]).unwrap();
    let y = ex.forward(&[f0.as_tensor().clone(), f1.as_tensor().clone()], &f["rois"]).unwrap();
    assert_close("extractor out", &y, &f["out"], TOL);
    let grads = (y * &f["g"]).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close("extractor dfeat0", grads.get(&f0).expect("dfeat0"), &f["dfeat0"], TOL);
    assert_close("extractor dfeat1", grads.get(&f1).expect("dfeat1"), &f["dfeat1"], TOL);

    // Channels-last maps give the same result.
    let nhwc = |t: &Tensor| t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
    let y = ex.forward_nhwc(&[nhwc(&f["feat0"]), nhwc(&f["feat1"])], &f["rois"]).unwrap();
    assert_close("extractor nhwc out", &y, &f["out"], TOL);
}

#[test]
fn extractor_levels_and_edge_cases() {
    let dev = Device::Cpu;
    // sqrt(area) 16 -> 0, 111 -> 0, 112 -> 1, 300 -> 2, 448 -> 3, 2000 -> 3 (clamped).
    let sides = [16f32, 111.0, 112.0, 300.0, 448.0, 2000.0];
    let rows: Vec<[f32; 5]> = sides.iter().map(|&s| [0.0, 10.0, 20.0, 10.0 + s, 20.0 + s]).collect();
    assert_eq!(nextdet_ops::map_roi_levels(&rows, 4, 56.0), vec![0, 0, 1, 2, 3, 3]);
    assert_eq!(nextdet_ops::map_roi_levels(&[[0.0, 5.0, 0.0, 0.0, 9.0]], 4, 56.0), vec![0]);

    let ex = SingleRoiExtractor::new((2, 2), &[4.0, 8.0, 16.0]);
    let feats: Vec<Var> = [(16, 16), (8, 8), (4, 4)]
        .iter()
        .map(|&(h, w)| Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, 3, h, w), &dev).unwrap()).unwrap())
        .collect();
    let ts: Vec<Tensor> = feats.iter().map(|v| v.as_tensor().clone()).collect();
    // No RoIs at all: an empty output, and zero gradients to every level.
    let y = ex.forward(&ts, &Tensor::zeros((0, 5), DType::F32, &dev).unwrap()).unwrap();
    assert_eq!(y.dims(), [0, 3, 2, 2]);
    let grads = y.sum_all().unwrap().backward().unwrap();
    for v in &feats {
        assert_eq!(grads.get(v).expect("grad").dims(), v.dims());
    }
    // One level fewer than strides, or mismatched channels, is an error.
    assert!(ex.forward(&ts[..2], &Tensor::zeros((0, 5), DType::F32, &dev).unwrap()).is_err());
    let odd = vec![ts[0].clone(), ts[1].clone(), Tensor::zeros((1, 4, 4, 4), DType::F32, &dev).unwrap()];
    assert!(ex.forward(&odd, &Tensor::zeros((0, 5), DType::F32, &dev).unwrap()).is_err());
    // The output is in RoI order whatever the levels: compare with pooling each RoI alone.
    let rois =
        Tensor::new(&[[0f32, 0.0, 0.0, 60.0, 60.0], [0.0, 2.0, 3.0, 20.0, 30.0], [0.0, 1.0, 1.0, 130.0, 120.0]], &dev)
            .unwrap();
    let y = ex.forward(&ts, &rois).unwrap();
    for (k, lvl) in [(0usize, 0usize), (1, 0), (2, 1)] {
        let one = rois.narrow(0, k, 1).unwrap();
        let want = RoiAlign::new((2, 2), 1.0 / [4.0, 8.0, 16.0][lvl]).forward(&ts[lvl], &one).unwrap();
        assert_close(&format!("roi {k}"), &y.narrow(0, k, 1).unwrap(), &want, 0.0);
    }
}
