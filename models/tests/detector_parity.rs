//! One full inference of a tiny Mask R-CNN and a tiny Cascade Mask R-CNN against the torch
//! reference of tests/reference/make_detector_fixtures.py (mmdetection 2.11's test-time
//! semantics assembled from torch/torchvision ops).
//!
//! The models are built from tests/configs/detector_tiny_{mask_rcnn,cascade}.yaml, and the random
//! weights, saved under mmdetection's full names, must load with nothing missing, unexpected or
//! mismatched (so our parameter names are mmdetection's). The image is the resized u8 picture
//! of the fixture, normalized and zero-padded here as mmdetection's pipeline does; the meta
//! has a per-axis scale factor other than 1, so rescaling to the original image is exercised.
//!
//! Compared: the number of detections, labels (equal), boxes (1e-3 px), scores (1e-4), and each
//! mask pixel by pixel. A mask may differ from the reference only in pixels whose reference
//! probability lies within 1e-4 of `mask_thr_binary` (the fixture counts them per mask,
//! `mask_pixels_near_thr`; at most 4 here): float noise of the two implementations (~1e-6 in
//! the probabilities) can flip those and no others. The fixture also records how far every
//! discrete decision (top-k cut, NMS IoU, score threshold, RoI level, cascade argmax) is from
//! its threshold; the generator refuses margins too small for float noise, so equal counts and
//! labels are a fair requirement.

use candle_core::{DType, Device, Tensor};
use nextdet_engine::config::Config;
use nextdet_heads::{ImageMeta, InstanceResult};
use nextdet_models::{DetectorType, ModelConfig, TwoStageDetector};
use nextdet_ops::ParamStore;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

const MEAN: [f32; 3] = [123.675, 116.28, 103.53];
const STD: [f32; 3] = [58.395, 57.12, 57.375];
const PAD: (usize, usize) = (128, 192);

const BOX_TOL: f32 = 1e-3;
const SCORE_TOL: f32 = 1e-4;

#[derive(Deserialize)]
struct Meta {
    img_size: (usize, usize),
    ori_size: (usize, usize),
    scale_factor: [f32; 2],
}

#[derive(Deserialize)]
struct Expected {
    boxes: Vec<[f32; 4]>,
    scores: Vec<f32>,
    labels: Vec<usize>,
    masks: Vec<Vec<u32>>,
    mask_pixels_near_thr: Vec<usize>,
}

#[derive(Deserialize)]
struct Fixture {
    meta: Meta,
    mask_rcnn: Expected,
    cascade: Expected,
}

/// The repository root (`NEXTDET_REPO` for a test binary run from another checkout).
fn root() -> PathBuf {
    match std::env::var_os("NEXTDET_REPO") {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

fn fixture_dir() -> PathBuf {
    root().join("tests/fixtures/detector")
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join(name), &Device::Cpu).expect(name)
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

/// mmdetection's input: `(x - mean) / std` in f32 on the resized u8 image, zero-padded
/// bottom-right to the batch size.
fn input_batch() -> Tensor {
    let u8_img = load("input.safetensors").remove("image_u8").expect("image_u8");
    let (c, h, w) = u8_img.dims3().unwrap();
    assert_eq!(c, 3);
    let x = u8_img.to_dtype(DType::F32).unwrap();
    let mean = Tensor::new(&MEAN, &Device::Cpu).unwrap().reshape((3, 1, 1)).unwrap();
    let std = Tensor::new(&STD, &Device::Cpu).unwrap().reshape((3, 1, 1)).unwrap();
    let x = x.broadcast_sub(&mean).unwrap().broadcast_div(&std).unwrap();
    let x = x.pad_with_zeros(1, 0, PAD.0 - h).unwrap().pad_with_zeros(2, 0, PAD.1 - w).unwrap();
    x.unsqueeze(0).unwrap()
}

/// The detector of `config` with the fixture's weights (`roi_file` holds `roi_head.*`), on
/// `device`.
fn detector(config: &str, cascade: bool, roi_file: &str, device: &Device) -> TwoStageDetector {
    let cfg = Config::from_file(root().join("tests/configs").join(config)).expect("config loads");
    let model: ModelConfig = cfg.section("model").expect("model section");
    let (two_stage, kind) = model.detector().unwrap_or_else(|| panic!("{config}: not a detector"));
    assert_eq!(kind == DetectorType::CascadeRCNN, cascade, "{config}: unexpected model type");
    let det = TwoStageDetector::new(two_stage, kind, ParamStore::new(device, 0), 0).expect("detector builds");
    let mut weights = load("common.safetensors");
    weights.extend(load(roi_file));
    let report = det.params().load(&weights).expect("load");
    assert!(
        report.missing.is_empty(),
        "{config}: parameters missing from the mmdet-named weights: {:?}",
        report.missing
    );
    assert!(report.unexpected.is_empty(), "{config}: mmdet tensors the model lacks: {:?}", report.unexpected);
    assert!(report.mismatched.is_empty(), "{config}: shape mismatches: {:?}", report.mismatched);
    det
}

/// Decodes uncompressed COCO RLE counts (column-major, zeros first) to a row-major 0/1 image.
fn rle_decode(counts: &[u32], h: usize, w: usize) -> Vec<u8> {
    let mut col_major = Vec::with_capacity(h * w);
    for (i, &n) in counts.iter().enumerate() {
        col_major.extend(std::iter::repeat_n((i % 2) as u8, n as usize));
    }
    assert_eq!(col_major.len(), h * w, "RLE counts sum to {} for a {h}x{w} mask", col_major.len());
    let mut out = vec![0u8; h * w];
    for (i, &v) in col_major.iter().enumerate() {
        out[(i % h) * w + i / h] = v;
    }
    out
}

fn compare(name: &str, got: &InstanceResult, want: &Expected, meta: &Meta) {
    let n = want.scores.len();
    assert!(n > 0, "{name}: the fixture has no detections");
    assert_eq!(got.scores.len(), n, "{name}: number of detections");
    assert_eq!(got.boxes.len(), n, "{name}: number of boxes");
    assert_eq!(got.labels, want.labels, "{name}: labels");
    let (mut box_err, mut score_err) = (0f32, 0f32);
    for i in 0..n {
        for k in 0..4 {
            let d = (got.boxes[i][k] - want.boxes[i][k]).abs();
            assert!(d <= BOX_TOL, "{name}: detection {i} box {:?} vs reference {:?}", got.boxes[i], want.boxes[i]);
            box_err = box_err.max(d);
        }
        let d = (got.scores[i] - want.scores[i]).abs();
        assert!(d <= SCORE_TOL, "{name}: detection {i} score {} vs reference {}", got.scores[i], want.scores[i]);
        score_err = score_err.max(d);
    }
    let masks = got.masks.as_ref().unwrap_or_else(|| panic!("{name}: no masks"));
    assert_eq!(masks.len(), n, "{name}: number of masks");
    let (h, w) = meta.ori_size;
    let (mut flipped, mut area) = (0usize, 0usize);
    for (i, (m, counts)) in masks.iter().zip(&want.masks).enumerate() {
        assert_eq!((m.height, m.width), (h, w), "{name}: mask {i} size");
        let reference = rle_decode(counts, h, w);
        let diff = m.to_dense().iter().zip(&reference).filter(|(a, b)| (**a != 0) != (**b != 0)).count();
        let bound = want.mask_pixels_near_thr[i];
        assert!(
            diff <= bound,
            "{name}: mask {i} differs in {diff} pixels; only {bound} lie within 1e-4 of the threshold in the reference"
        );
        flipped += diff;
        area += reference.iter().map(|&v| v as usize).sum::<usize>();
    }
    eprintln!(
        "{name}: {n} detections, max |box diff| {box_err:.2e} px, max |score diff| {score_err:.2e}, \
         {flipped} of {area} mask pixels differ"
    );
}

fn run(config: &str, cascade: bool, roi_file: &str, pick: impl Fn(&Fixture) -> &Expected, device: &Device) {
    let fx = fixture();
    let det = detector(config, cascade, roi_file, device);
    assert!(det.with_masks());
    let meta = ImageMeta {
        img_size: fx.meta.img_size,
        ori_size: fx.meta.ori_size,
        scale_factor: fx.meta.scale_factor,
        ..ImageMeta::of_input(fx.meta.img_size)
    };
    assert_ne!(meta.scale_factor, [1.0, 1.0], "the fixture must exercise rescaling");
    let results = det.predict(&input_batch(), &[meta]).expect("predict");
    assert_eq!(results.len(), 1);
    compare(config, &results[0], pick(&fx), &fx.meta);
}

#[test]
fn mask_rcnn_matches_torch_reference() {
    run("detector_tiny_mask_rcnn.yaml", false, "mask_rcnn.safetensors", |f| &f.mask_rcnn, &Device::Cpu);
}

#[test]
fn cascade_mask_rcnn_matches_torch_reference() {
    run("detector_tiny_cascade.yaml", true, "cascade.safetensors", |f| &f.cascade, &Device::Cpu);
}

/// The device `NEXTDET_TEST_DEVICE` names: `cuda`, `cuda:N` or `cpu`.
fn test_device() -> Device {
    let spec = std::env::var("NEXTDET_TEST_DEVICE").expect("set NEXTDET_TEST_DEVICE to cuda, cuda:N or cpu");
    match spec.strip_prefix("cuda") {
        None => Device::Cpu,
        Some("") => Device::new_cuda(0).expect("CUDA device 0"),
        Some(n) => Device::new_cuda(n.trim_start_matches(':').parse().expect("cuda:N")).expect("the CUDA device"),
    }
}

/// The same inference with the model on a GPU (the CUDA kernels and the device-generic ops),
/// held to the same tolerances. Ignored by default: `tools/gpu-check.sh` runs it with
/// `NEXTDET_TEST_DEVICE=cuda`.
#[test]
#[ignore = "needs NEXTDET_TEST_DEVICE (a GPU machine: tools/gpu-check.sh)"]
fn mask_rcnn_matches_torch_reference_on_test_device() {
    let device = test_device();
    run("detector_tiny_mask_rcnn.yaml", false, "mask_rcnn.safetensors", |f| &f.mask_rcnn, &device);
    run("detector_tiny_cascade.yaml", true, "cascade.safetensors", |f| &f.cascade, &device);
}
