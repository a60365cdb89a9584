//! Mask paste and mask targets against the PyTorch references in
//! `tests/reference/make_mask_fixtures.py` (mmdet 2.11 `_do_paste_mask` CPU path with
//! `F.grid_sample`, and `torchvision.ops.roi_align(aligned=True, sampling_ratio=0)`).

use candle_core::{DType, Device, Tensor};
use nextdet_ops::{
    binary_masks_to_tensor, mask_targets, mask_targets_soft, paste_masks, paste_masks_soft, BinaryMask, MaskWindow,
};
use nextdet_testutil::load_fixture;
use std::collections::HashMap;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    load_fixture(&format!("ops/masks/{name}"))
}

fn image_hw(f: &HashMap<String, Tensor>) -> (usize, usize) {
    let hw = f["image_hw"].to_vec1::<i64>().unwrap();
    (hw[0] as usize, hw[1] as usize)
}

fn flat_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// COCO RLE counts of a row-major `h x w` bitmap, the slow obvious way.
fn dense_rle(bits: &[u8], h: usize, w: usize) -> Vec<u32> {
    let mut counts = vec![];
    let (mut value, mut run) = (0u8, 0u32);
    for x in 0..w {
        for y in 0..h {
            let v = bits[y * w + x];
            if v != value {
                counts.push(run);
                value = v;
                run = 0;
            }
            run += 1;
        }
    }
    counts.push(run);
    counts
}

fn check_paste_case(case: &str) {
    let f = fixture("paste.safetensors");
    let (h, w) = image_hw(&f);
    let (masks, boxes) = (&f[&format!("masks_{case}")], &f[&format!("boxes_{case}")]);
    let soft_ref = flat_f32(&f[&format!("soft_{case}")]);
    let bits_ref = f[&format!("bits_{case}")].flatten_all().unwrap().to_vec1::<u8>().unwrap();

    let soft = paste_masks_soft(masks, boxes, (h, w)).unwrap();
    let bits = paste_masks(masks, boxes, (h, w), 0.5).unwrap();
    assert_eq!(soft.len(), masks.dim(0).unwrap());
    assert_eq!(bits.len(), soft.len());
    let plane = h * w;
    let (mut max_diff, mut near_total) = (0f32, 0);
    for (k, (s, b)) in soft.iter().zip(&bits).enumerate() {
        assert_eq!(s.window, b.window, "case {case} mask {k}: windows differ");
        let dense = s.to_dense();
        let want = &soft_ref[k * plane..(k + 1) * plane];
        for (i, (&got, &exp)) in dense.iter().zip(want).enumerate() {
            assert!(got.is_finite(), "case {case} mask {k} pixel {i}: {got}");
            assert!((got - exp).abs() <= 1e-5, "case {case} mask {k} pixel {i}: soft {got} vs {exp}");
            max_diff = max_diff.max((got - exp).abs());
        }
        let dense_bits = b.to_dense();
        let want_bits = &bits_ref[k * plane..(k + 1) * plane];
        let mut near = 0;
        for i in 0..plane {
            if dense_bits[i] != want_bits[i] {
                assert!(
                    (want[i] - 0.5).abs() <= 1e-5,
                    "case {case} mask {k} pixel {i}: bit {} vs {} at soft {}",
                    dense_bits[i],
                    want_bits[i],
                    want[i]
                );
                near += 1;
            }
        }
        assert!(near <= 2, "case {case} mask {k}: {near} near-threshold mismatches");
        near_total += near;
        assert_eq!(b.to_rle().counts, dense_rle(&dense_bits, h, w), "case {case} mask {k}: RLE");
        assert_eq!(b.area(), dense_bits.iter().map(|&v| v as usize).sum::<usize>());
    }
    eprintln!("case {case}: max soft diff {max_diff:e}, {near_total} near-threshold bit mismatches");
    let stacked = binary_masks_to_tensor(&bits).unwrap();
    assert_eq!(stacked.dims(), [bits.len(), h, w]);
    let stacked = stacked.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let concat: Vec<u8> = bits.iter().flat_map(|b| b.to_dense()).collect();
    assert_eq!(stacked, concat);
}

#[test]
fn paste_square_masks_matches_mmdet() {
    check_paste_case("a");
}

#[test]
fn paste_non_square_masks_matches_mmdet() {
    check_paste_case("b");
}

#[test]
fn paste_accepts_f64_and_other_thresholds() {
    let f = fixture("paste.safetensors");
    let (h, w) = image_hw(&f);
    let masks = f["masks_a"].to_dtype(DType::F64).unwrap();
    let boxes = f["boxes_a"].to_dtype(DType::F64).unwrap();
    let soft_ref = flat_f32(&f["soft_a"]);
    let bits = paste_masks(&masks, &boxes, (h, w), 0.3).unwrap();
    for (k, b) in bits.iter().enumerate() {
        for (i, &v) in b.to_dense().iter().enumerate() {
            let s = soft_ref[k * h * w + i];
            if (s - 0.3).abs() > 1e-5 {
                assert_eq!(v, (s >= 0.3) as u8, "mask {k} pixel {i} soft {s}");
            }
        }
    }
}

#[test]
fn paste_degenerate_inputs_are_finite_or_errors() {
    let dev = Device::Cpu;
    let masks = Tensor::full(0.9f32, (5, 4, 4), &dev).unwrap();
    let boxes = Tensor::new(
        &[
            [f32::NAN, 0.0, 5.0, 5.0],
            [0.0, f32::INFINITY, 5.0, 5.0],
            [1e30, 1e30, 2e30, 2e30],
            [-1e30, -1e30, 1e30, 1e30],
            [3.0, 3.0, 3.0 + 1e-30, 3.0 + 1e-30],
        ],
        &dev,
    )
    .unwrap();
    let soft = paste_masks_soft(&masks, &boxes, (10, 12)).unwrap();
    assert!(soft[0].window.is_empty() && soft[1].window.is_empty() && soft[2].window.is_empty());
    for s in &soft {
        assert!(s.data.iter().all(|v| v.is_finite()), "non-finite value in {:?}", s.window);
        assert_eq!(s.data.len(), s.window.height() * s.window.width());
    }
    // A box covering far more than the image samples (near) the mask centre everywhere.
    assert_eq!(soft[3].window, MaskWindow { y0: 0, y1: 10, x0: 0, x1: 12 });
    // Empty inputs and a zero-sized image.
    let none = paste_masks(
        &Tensor::zeros((0, 28, 28), DType::F32, &dev).unwrap(),
        &Tensor::zeros((0, 4), DType::F32, &dev).unwrap(),
        (10, 10),
        0.5,
    )
    .unwrap();
    assert!(none.is_empty());
    assert_eq!(binary_masks_to_tensor(&none).unwrap().dims(), [0, 0, 0]);
    let tiny = paste_masks(&masks, &boxes, (0, 0), 0.5).unwrap();
    assert!(tiny.iter().all(|m| m.window.is_empty() && m.to_rle().counts == vec![0]));
    // Bad shapes and dtypes are errors, not panics.
    assert!(paste_masks(&masks, &boxes.narrow(0, 0, 4).unwrap(), (10, 12), 0.5).is_err());
    assert!(paste_masks(&masks.flatten_from(1).unwrap(), &boxes, (10, 12), 0.5).is_err());
    assert!(paste_masks(&masks, &boxes.narrow(1, 0, 3).unwrap(), (10, 12), 0.5).is_err());
    assert!(paste_masks(&Tensor::zeros((5, 0, 4), DType::F32, &dev).unwrap(), &boxes, (10, 12), 0.5).is_err());
    assert!(paste_masks(&masks.to_dtype(DType::U8).unwrap(), &boxes, (10, 12), 0.5).is_err());
    let other = BinaryMask { height: 3, width: 3, window: MaskWindow::default(), data: vec![] };
    assert!(binary_masks_to_tensor(&[tiny[0].clone(), other]).is_err());
    let outside = MaskWindow { y0: 0, y1: 20, x0: 0, x1: 1 };
    let bad = BinaryMask { height: 10, width: 12, window: outside, data: vec![1; 20] };
    assert!(binary_masks_to_tensor(&[bad]).is_err());
    let short = BinaryMask { height: 10, width: 12, window: MaskWindow { y0: 0, y1: 2, x0: 0, x1: 2 }, data: vec![1] };
    assert!(binary_masks_to_tensor(&[short]).is_err());
}

fn check_targets(m: usize) {
    let f = fixture("targets.safetensors");
    let (gt, props, assigned) = (&f["gt_masks"], &f["proposals"], &f["assigned"]);
    let soft = mask_targets_soft(gt, assigned, props, m).unwrap();
    let bits = mask_targets(gt, assigned, props, m).unwrap();
    assert_eq!(bits.dims(), [props.dim(0).unwrap(), m, m]);
    assert_eq!(bits.dtype(), DType::F32);
    let (soft, soft_ref) = (flat_f32(&soft), flat_f32(&f[&format!("soft{m}")]));
    let (bits, bits_ref) = (flat_f32(&bits), flat_f32(&f[&format!("bits{m}")]));
    for i in 0..soft.len() {
        assert!((soft[i] - soft_ref[i]).abs() <= 1e-6, "M={m} value {i}: {} vs {}", soft[i], soft_ref[i]);
        // Same f32 arithmetic as torchvision: the binarization matches exactly, also at 0.5.
        assert_eq!(bits[i], bits_ref[i], "M={m} value {i}: soft {} (ref {})", soft[i], soft_ref[i]);
    }
}

#[test]
fn mask_targets_28_match_torchvision_roi_align() {
    check_targets(28);
}

#[test]
fn mask_targets_7_match_torchvision_roi_align() {
    check_targets(7);
}

#[test]
fn mask_targets_bad_inputs_are_errors() {
    let f = fixture("targets.safetensors");
    let (gt, props, assigned) = (&f["gt_masks"], &f["proposals"], &f["assigned"]);
    // Non-u8 masks (nonzero = foreground) give the same targets.
    let as_f32 = mask_targets(&gt.to_dtype(DType::F32).unwrap(), assigned, props, 28).unwrap();
    assert_eq!(flat_f32(&as_f32), flat_f32(&f["bits28"]));
    let u32_inds = mask_targets(gt, &assigned.to_dtype(DType::U32).unwrap(), props, 28).unwrap();
    assert_eq!(flat_f32(&u32_inds), flat_f32(&f["bits28"]));
    let bad = Tensor::new(&[0i64, 4], &Device::Cpu).unwrap();
    assert!(mask_targets(gt, &bad, &props.narrow(0, 0, 2).unwrap(), 28).is_err());
    let neg = Tensor::new(&[-1i64], &Device::Cpu).unwrap();
    assert!(mask_targets(gt, &neg, &props.narrow(0, 0, 1).unwrap(), 28).is_err());
    assert!(mask_targets(gt, assigned, &props.narrow(0, 0, 3).unwrap(), 28).is_err());
    assert!(mask_targets(gt, assigned, props, 0).is_err());
    assert!(mask_targets(&gt.flatten_from(1).unwrap(), assigned, props, 28).is_err());
    assert!(mask_targets(gt, &assigned.to_dtype(DType::F32).unwrap(), props, 28).is_err());
    let empty = mask_targets(gt, &assigned.narrow(0, 0, 0).unwrap(), &props.narrow(0, 0, 0).unwrap(), 28).unwrap();
    assert_eq!(empty.dims(), [0, 28, 28]);
    // Non-finite proposals do not panic.
    let nan = Tensor::new(&[[f32::NAN, 0.0, f32::INFINITY, 10.0]], &Device::Cpu).unwrap();
    let t = mask_targets_soft(gt, &assigned.narrow(0, 0, 1).unwrap(), &nan, 7).unwrap();
    assert!(flat_f32(&t).iter().all(|v| v.is_finite()));
}
