//! Box ops, the delta coder and NMS against torchvision / mmdet formulas, on fixtures written by
//! `tests/reference/make_box_fixtures.py`, plus edge cases (empty inputs, zero-size and
//! inverted boxes, ties).

use candle_core::{DType, Device, Tensor, Var};
use nextdet_ops::nms::{batched_nms_slices, nms_slices, nms_slices_grid, nms_slices_sweep, score_filter, top_k};
use nextdet_ops::{aligned_giou, batched_nms, box_iof, box_iou, generalized_box_iou, nms, BatchedNmsOpts, Boxes};
use nextdet_ops::{nms::indices_tensor, DeltaXywhCoder};
use nextdet_testutil::load_fixture;
use std::collections::HashMap;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    load_fixture(&format!("ops/boxes/{name}"))
}

fn boxes(t: &Tensor) -> Boxes {
    Boxes::new(t.clone()).unwrap()
}

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

fn indices(t: &Tensor) -> Vec<usize> {
    t.to_vec1::<i64>().unwrap().into_iter().map(|i| i as usize).collect()
}

/// Max of `|got - want| / max(1, |want|)`: absolute near 0, relative for pixel coordinates.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let (g, w) = (vec(got), vec(want));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let d = (a - b).abs() / b.abs().max(1.0);
        assert!(d <= tol && a.is_finite(), "{what}[{i}]: got {a}, want {b}");
    }
}

#[test]
fn pairwise_overlaps_match_torchvision() {
    let f = fixture("overlaps.safetensors");
    let (a, b) = (boxes(&f["a"]), boxes(&f["b"]));
    assert_close("iou", &box_iou(&a, &b).unwrap(), &f["iou"], 1e-5);
    assert_close("iof", &box_iof(&a, &b).unwrap(), &f["iof"], 1e-5);
    assert_close("giou", &generalized_box_iou(&a, &b).unwrap(), &f["giou"], 1e-5);
}

#[test]
fn pairwise_overlaps_of_empty_sets() {
    let dev = Device::Cpu;
    let (e, one) = (Boxes::empty(&dev).unwrap(), Boxes::from_slice(&[0., 0., 2., 2.], &dev).unwrap());
    assert_eq!(box_iou(&e, &one).unwrap().dims(), [0, 1]);
    assert_eq!(box_iof(&one, &e).unwrap().dims(), [1, 0]);
    assert_eq!(generalized_box_iou(&e, &e).unwrap().dims(), [0, 0]);
}

#[test]
fn zero_size_boxes_give_zero_iou() {
    let dev = Device::Cpu;
    let pts = Boxes::from_slice(&[5., 5., 5., 5., 5., 5., 5., 5., 9., 0., 3., 4.], &dev).unwrap();
    let iou = vec(&box_iou(&pts, &pts).unwrap());
    assert!(iou.iter().all(|&v| v == 0.0), "{iou:?}");
    assert!(vec(&generalized_box_iou(&pts, &pts).unwrap()).iter().all(|v| v.is_finite()));
}

#[test]
fn bad_shapes_are_errors() {
    let dev = Device::Cpu;
    assert!(Boxes::new(Tensor::zeros((3, 5), DType::F32, &dev).unwrap()).is_err());
    assert!(Boxes::new(Tensor::zeros(4, DType::F32, &dev).unwrap()).is_err());
    assert!(Boxes::new(Tensor::zeros((2, 4), DType::U8, &dev).unwrap()).is_err());
    assert!(Boxes::from_slice(&[1., 2., 3.], &dev).is_err());
    let b = Boxes::from_slice(&[0., 0., 1., 1.], &dev).unwrap();
    assert!(nms(&b, &Tensor::zeros(2, DType::F32, &dev).unwrap(), 0.5).is_err());
    let coder = DeltaXywhCoder::default();
    assert!(coder.decode(&b, &Tensor::zeros((1, 3), DType::F32, &dev).unwrap(), None).is_err());
    assert!(coder.encode(&b, &Boxes::empty(&dev).unwrap()).is_err());
}

#[test]
fn aligned_giou_and_gradients_match_torch_autograd() {
    let f = fixture("giou_grad.safetensors");
    let p = Var::from_tensor(&f["pred"]).unwrap();
    let t = Var::from_tensor(&f["target"]).unwrap();
    let g = aligned_giou(&boxes(p.as_tensor()), &boxes(t.as_tensor()), 1e-7).unwrap();
    assert_close("giou", &g, &f["giou"], 1e-5);
    let grads = (g * &f["gy"]).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close("dpred", grads.get(&p).expect("dpred"), &f["dpred"], 1e-5);
    assert_close("dtarget", grads.get(&t).expect("dtarget"), &f["dtarget"], 1e-5);
}

#[test]
fn delta_coder_matches_mmdet() {
    let f = fixture("coder.safetensors");
    let coder = DeltaXywhCoder::new([0.0; 4], [0.1, 0.1, 0.2, 0.2]);
    let enc = coder.encode(&boxes(&f["proposals"]), &boxes(&f["gt"])).unwrap();
    assert_close("encode", &enc, &f["encoded"], 1e-5);
    let rois = boxes(&f["rois"]);
    assert_close("decode", &coder.decode(&rois, &f["deltas"], None).unwrap(), &f["decoded"], 1e-5);
    let clipped = coder.decode(&rois, &f["deltas"], Some((300.0, 400.0))).unwrap();
    assert_close("decode clip", &clipped, &f["decoded_clip"], 1e-5);
    let d1 = f["deltas"].narrow(1, 0, 4).unwrap();
    assert_close("decode K=1", &coder.decode(&rois, &d1, None).unwrap(), &f["decoded1"], 1e-5);
    // Round trip on the encoded targets.
    let back = coder.decode(&boxes(&f["proposals"]), &enc, None).unwrap();
    assert_close("round trip", &back, &f["gt"], 1e-5);
}

#[test]
fn delta_coder_is_differentiable_and_handles_empty() {
    let dev = Device::Cpu;
    let coder = DeltaXywhCoder::default();
    let rois = Boxes::from_slice(&[0., 0., 10., 20.], &dev).unwrap();
    let d = Var::from_tensor(&Tensor::new(&[[0.1f32, -0.2, 0.3, 0.0]], &dev).unwrap()).unwrap();
    let out = coder.decode(&rois, d.as_tensor(), None).unwrap();
    let grads = out.sum_all().unwrap().backward().unwrap();
    let gd = vec(grads.get(&d).unwrap());
    // d(sum x1+x2)/d dx = 2 * pw; sum over x1 and x2 does not depend on dw.
    assert!((gd[0] - 20.0).abs() < 1e-4 && (gd[1] - 40.0).abs() < 1e-4 && gd[2].abs() < 1e-4, "{gd:?}");
    let e = Boxes::empty(&dev).unwrap();
    let dec = coder.decode(&e, &Tensor::zeros((0, 8), DType::F32, &dev).unwrap(), Some((10., 10.))).unwrap();
    assert_eq!(dec.dims(), [0, 8]);
    assert_eq!(coder.encode(&e, &e).unwrap().dims(), [0, 4]);
}

#[test]
fn boxes_transforms() {
    let dev = Device::Cpu;
    let b = Boxes::from_slice(&[-5., 2., 30., 50., 10., 10., 5., 5.], &dev).unwrap();
    assert_eq!(vec(&b.area().unwrap()), [35. * 48., 25.]);
    assert_eq!(vec(&b.clip((40., 20.)).unwrap().into_tensor()), [0., 2., 20., 40., 10., 10., 5., 5.]);
    assert_eq!(vec(&b.rescale(2., 0.5).unwrap().into_tensor()), [-10., 1., 60., 25., 20., 5., 10., 2.5]);
    assert_eq!(vec(&b.flip_horizontal(100.).unwrap().into_tensor()), [70., 2., 105., 50., 95., 10., 90., 5.]);
    let xywh = b.to_xywh().unwrap();
    assert_eq!(vec(&xywh), [-5., 2., 35., 48., 10., 10., -5., -5.]);
    assert_eq!(vec(&Boxes::from_xywh(&xywh).unwrap().into_tensor()), vec(b.tensor()));
    assert_eq!(vec(&b.nonempty(0.0).unwrap()), [1., 0.]);
    let idx = indices_tensor(&[1, 0, 1], &dev).unwrap();
    assert_eq!(b.select(&idx).unwrap().len(), 3);
    assert_eq!(Boxes::cat(&[b.clone(), b]).unwrap().len(), 4);
    assert!(Boxes::cat(&[]).is_err());
}

#[test]
fn nms_matches_torchvision_with_ties_and_odd_boxes() {
    let f = fixture("nms_small.safetensors");
    let b = boxes(&f["boxes"]);
    for thr in [30, 50, 70] {
        let keep = nms(&b, &f["scores"], thr as f64 / 100.0).unwrap();
        assert_eq!(keep, indices(&f[&format!("keep_{thr}")]), "nms at 0.{thr}");
    }
    let keep = batched_nms(&b, &f["scores"], &f["idxs"], &BatchedNmsOpts::new(0.5)).unwrap();
    assert_eq!(keep, indices(&f["bkeep_50"]), "batched nms");
    // The per-class path gives the same set here.
    let opts = BatchedNmsOpts { split_thr: 0, ..BatchedNmsOpts::new(0.5) };
    assert_eq!(batched_nms(&b, &f["scores"], &f["idxs"], &opts).unwrap(), indices(&f["bkeep_50"]));
}

#[test]
fn nms_12k_matches_torchvision() {
    let f = fixture("nms_12k.safetensors");
    let b = boxes(&f["boxes"]);
    for thr in [50, 70] {
        let keep = nms(&b, &f["scores"], thr as f64 / 100.0).unwrap();
        assert_eq!(keep, indices(&f[&format!("keep_{thr}")]), "nms at 0.{thr}");
    }
    let keep = batched_nms(&b, &f["scores"], &f["idxs"], &BatchedNmsOpts::new(0.5)).unwrap();
    assert_eq!(keep, indices(&f["bkeep_50"]), "batched nms");
    // Offset trick below split_thr: the same kept boxes.
    let opts = BatchedNmsOpts { split_thr: usize::MAX, ..BatchedNmsOpts::new(0.5) };
    assert_eq!(batched_nms(&b, &f["scores"], &f["idxs"], &opts).unwrap(), indices(&f["bkeep_50"]));
    let agnostic = BatchedNmsOpts { class_agnostic: true, ..BatchedNmsOpts::new(0.5) };
    assert_eq!(batched_nms(&b, &f["scores"], &f["idxs"], &agnostic).unwrap(), indices(&f["keep_50"]));
}

#[test]
fn nms_edge_cases() {
    let dev = Device::Cpu;
    let e = Boxes::empty(&dev).unwrap();
    let none = Tensor::zeros(0, DType::F32, &dev).unwrap();
    assert!(nms(&e, &none, 0.5).unwrap().is_empty());
    let ids = Tensor::zeros(0, DType::U32, &dev).unwrap();
    assert!(batched_nms(&e, &none, &ids, &BatchedNmsOpts::new(0.5)).unwrap().is_empty());
    // Identical boxes with equal scores: the first one wins.
    let same = [0f32, 0., 10., 10., 0., 0., 10., 10., 0., 0., 10., 10.];
    assert_eq!(nms_slices(&same, &[0.5, 0.5, 0.5], 0.5).unwrap(), [0]);
    // Strictly greater: IoU exactly 0.5 is kept.
    let half = [0f32, 0., 10., 10., 0., 0., 10., 5.];
    assert_eq!(nms_slices(&half, &[0.9, 0.8], 0.5).unwrap(), [0, 1]);
    assert_eq!(nms_slices(&half, &[0.9, 0.8], 0.49).unwrap(), [0]);
    // Zero-size and inverted boxes neither suppress nor get suppressed.
    let odd = [5f32, 5., 5., 5., 5., 5., 5., 5., 30., 30., 10., 10., 30., 30., 10., 10.];
    assert_eq!(nms_slices(&odd, &[0.1, 0.9, 0.5, 0.7], 0.1).unwrap(), [1, 3, 2, 0]);
    // Different ids never suppress each other; class-agnostic they do.
    let opts = BatchedNmsOpts::new(0.5);
    assert_eq!(batched_nms_slices(&same[..8], &[0.4, 0.6], &[0, 1], &opts).unwrap(), [1, 0]);
    let agnostic = BatchedNmsOpts { class_agnostic: true, ..opts };
    assert_eq!(batched_nms_slices(&same[..8], &[0.4, 0.6], &[0, 1], &agnostic).unwrap(), [1]);
    // torch's descending stable sort: NaNs first (either sign), -0.0 ties with 0.0.
    let apart: Vec<f32> = (0..6).flat_map(|i| [20. * i as f32, 0., 20. * i as f32 + 10., 10.]).collect();
    let s = [0.5, f32::NAN, 0.7, -0.0, 0.0, -f32::NAN];
    assert_eq!(nms_slices(&apart, &s, 0.5).unwrap(), [1, 5, 2, 0, 3, 4]);
    // Mismatched lengths are errors, not panics.
    assert!(nms_slices(&same, &[0.5], 0.5).is_err());
    assert!(batched_nms_slices(&same, &[0.5, 0.5, 0.5], &[0], &opts).is_err());
}

/// torchvision's CPU loop, written plainly: the reference for the fast kernels.
fn naive_nms(xyxy: &[f32], scores: &[f32], thr: f64) -> Vec<usize> {
    let n = scores.len();
    let mut order: Vec<usize> = (0..n).collect();
    let key = |s: f32| if s.is_nan() { f32::INFINITY } else { s };
    order.sort_by(|&a, &b| {
        let (sa, sb) = (scores[a], scores[b]);
        match (sa.is_nan(), sb.is_nan()) {
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            _ => key(sb).partial_cmp(&key(sa)).unwrap(),
        }
    });
    let b = |i: usize| &xyxy[4 * i..4 * i + 4];
    let area = |i: usize| (b(i)[2] - b(i)[0]) * (b(i)[3] - b(i)[1]);
    let (mx, mn) = (|a: f32, c: f32| if a < c { c } else { a }, |a: f32, c: f32| if c < a { c } else { a });
    let mut sup = vec![false; n];
    let mut keep = vec![];
    for (p, &i) in order.iter().enumerate() {
        if sup[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[p + 1..] {
            if sup[j] {
                continue;
            }
            let w = mx(0.0, mn(b(i)[2], b(j)[2]) - mx(b(i)[0], b(j)[0]));
            let h = mx(0.0, mn(b(i)[3], b(j)[3]) - mx(b(i)[1], b(j)[1]));
            let inter = w * h;
            let ovr = inter / (area(i) + area(j) - inter);
            if ovr as f64 > thr {
                sup[j] = true;
            }
        }
    }
    keep
}

/// Random boxes from an LCG: a mix of sizes (some large), some empty or inverted, ties in score.
fn random_case(n: usize, seed: u32) -> (Vec<f32>, Vec<f32>) {
    let mut x = seed;
    let mut u = move || {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (x >> 8) as f32 / 16_777_216.0
    };
    let (mut xyxy, mut scores) = (vec![], vec![]);
    for i in 0..n {
        let (cx, cy) = (u() * 1600.0 - 20.0, u() * 1200.0 - 20.0);
        let big = if i % 97 == 0 { 3.0 } else { 1.0 };
        let (w, h) = (big * (2.0 + u() * 60.0), big * (2.0 + u() * 60.0));
        let b = match i % 53 {
            0 => [cx, cy, cx, cy],
            1 => [cx + w, cy, cx, cy + h],
            _ => [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
        };
        xyxy.extend_from_slice(&b);
        scores.push((u() * 50.0).floor() / 50.0);
    }
    (xyxy, scores)
}

#[test]
fn grid_and_sweep_match_the_plain_loop() {
    for (n, seed) in [(3000, 1), (8000, 2), (700, 3)] {
        let (xyxy, scores) = random_case(n, seed);
        for thr in [-0.1, 0.0, 0.05, 0.3, 0.5, 0.7, 0.95, 1.0] {
            let want = naive_nms(&xyxy, &scores, thr);
            assert_eq!(nms_slices(&xyxy, &scores, thr).unwrap(), want, "n={n} thr={thr}");
            assert_eq!(nms_slices_sweep(&xyxy, &scores, thr).unwrap(), want, "sweep n={n} thr={thr}");
            let grid = nms_slices_grid(&xyxy, &scores, thr).unwrap();
            assert_eq!(grid.is_some(), n >= 2048 && thr >= 0.05, "grid used, n={n} thr={thr}");
            assert!(grid.is_none_or(|g| g == want), "grid n={n} thr={thr}");
        }
    }
    // NaN scores come first, as in torch's descending sort; NaN coordinates do not panic.
    let (mut xyxy, mut scores) = random_case(3000, 4);
    scores[10] = f32::NAN;
    xyxy[4 * 20] = f32::NAN;
    assert_eq!(nms_slices(&xyxy, &scores, 0.5).unwrap(), naive_nms(&xyxy, &scores, 0.5));
}

#[test]
fn score_filter_and_top_k() {
    let s = [0.5f32, 0.05, 0.9, 0.5, 0.05, 0.7];
    assert_eq!(score_filter(&s, 0.05), [0, 2, 3, 5]);
    assert_eq!(top_k(&s, 3).unwrap(), [2, 5, 0]);
    assert_eq!(top_k(&s, 4).unwrap(), [2, 5, 0, 3]);
    assert_eq!(top_k(&s, 10).unwrap(), [2, 5, 0, 3, 1, 4]);
    assert!(top_k(&s, 0).unwrap().is_empty());
    assert!(top_k(&[], 5).unwrap().is_empty());
}

/// mmcv runs the per-id path on the offset boxes too, so where the path switches
/// (`split_thr`) does not change which boxes are kept.
#[test]
fn batched_nms_split_path_keeps_the_same_boxes_as_the_offset_path() {
    let mut state = 7u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let n = 3000;
    let (mut xyxy, mut scores, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let (x, y, w, h) = (next() * 300.0, next() * 300.0, 5.0 + next() * 20.0, 5.0 + next() * 20.0);
        xyxy.extend([x, y, x + w, y + h]);
        scores.push(next());
        ids.push((next() * 40.0) as i64);
    }
    let one_pass = BatchedNmsOpts { iou_thr: 0.5, class_agnostic: false, split_thr: usize::MAX };
    let split = BatchedNmsOpts { split_thr: 1, ..one_pass.clone() };
    let a = batched_nms_slices(&xyxy, &scores, &ids, &one_pass).unwrap();
    let b = batched_nms_slices(&xyxy, &scores, &ids, &split).unwrap();
    assert!(a.len() > 100 && a.len() < n, "kept {}", a.len());
    assert_eq!(a, b);
}
