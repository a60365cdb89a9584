//! RoI heads against the PyTorch re-implementation of mmdetection 2.11 in
//! `tests/reference/make_roi_head_fixtures.py` (fixtures in `tests/fixtures/roi_heads/`).

use candle_core::{DType, Device, Tensor, Var};
use nextdet_heads::batch_norm::BatchNorm;
use nextdet_heads::bbox_head::{BBoxHead, BBoxHeadConfig};
use nextdet_heads::mask_head::deconv2x2;
use nextdet_heads::proposals::rois;
use nextdet_heads::roi::{RcnnTestConfig, RoiHead, RoiHeadConfig};
use nextdet_heads::{ImageMeta, ImageTargets, Proposals};
use nextdet_ops::{mask_targets, Boxes, Losses, ParamStore, SingleRoiExtractor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/roi_heads")
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join(name), &Device::Cpu).expect(name)
}

fn cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap()
}

fn get<'a>(t: &'a HashMap<String, Tensor>, k: &str) -> &'a Tensor {
    t.get(k).unwrap_or_else(|| panic!("fixture tensor {k} missing"))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Asserts `|a - b| <= atol + rtol * |b|` element-wise.
fn close(a: &Tensor, b: &Tensor, atol: f32, rtol: f32, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (a, b) = (f32s(a), f32s(b));
    let mut worst = 0f32;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let err = (x - y).abs();
        assert!(err <= atol + rtol * y.abs(), "{what}[{i}]: {x} vs {y}");
        worst = worst.max(err);
    }
    eprintln!("{what}: max abs diff {worst:e}");
}

fn scalar_close(a: f32, b: f32, rtol: f32, what: &str) {
    assert!((a - b).abs() <= 1e-6 + rtol * b.abs(), "{what}: {a} vs {b}");
    eprintln!("{what}: {a} vs {b}");
}

/// Unpacks `np.packbits` (big-endian bits) into `n` values 0/1.
fn unpack(bits: &Tensor, n: usize) -> Vec<u8> {
    let b = bits.to_vec1::<u8>().unwrap();
    (0..n).map(|i| (b[i / 8] >> (7 - i % 8)) & 1).collect()
}

fn boxes_tensor(b: &[[f32; 4]]) -> Tensor {
    Tensor::from_vec(b.iter().flatten().copied().collect::<Vec<f32>>(), (b.len(), 4), &Device::Cpu).unwrap()
}

fn load_exact(store: &ParamStore, t: &HashMap<String, Tensor>) {
    let report = store.load(t).unwrap();
    assert!(report.missing.is_empty(), "missing: {:?}", report.missing);
    assert!(report.mismatched.is_empty(), "mismatched: {:?}", report.mismatched);
}

fn value(store: &ParamStore, name: &str) -> Tensor {
    store.tensors().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no parameter {name}")).1
}

#[test]
fn batch_norm_train_eval_and_gradient_match_torch() {
    let t = load("bn.safetensors");
    for name in ["bn2d", "bn1d"] {
        let store = ParamStore::new(&Device::Cpu, 0);
        let bn = BatchNorm::new(&store.root().pp(name), 5).unwrap();
        load_exact(&store, &t);
        let x = Var::from_tensor(get(&t, &format!("{name}_x"))).unwrap();
        let y = bn.forward(x.as_tensor(), true).unwrap();
        close(&y, get(&t, &format!("{name}_y")), 1e-5, 1e-5, &format!("{name} train output"));
        let loss = (&y * get(&t, &format!("{name}_gy"))).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        close(grads.get(&x).unwrap(), get(&t, &format!("{name}_dx")), 1e-5, 1e-4, &format!("{name} input gradient"));
        for p in ["weight", "bias"] {
            let key = format!("{name}.{p}");
            let var = store.trainable().into_iter().find(|(n, _)| *n == key).expect("a trainable parameter").1;
            let got = grads.get(&var).unwrap_or_else(|| panic!("no gradient for {key}"));
            close(got, get(&t, &format!("{name}_d{p}")), 1e-5, 1e-4, &format!("{name} {p} gradient"));
        }
        close(bn.running_mean(), get(&t, &format!("{name}_after.running_mean")), 1e-6, 1e-5, "running mean");
        close(bn.running_var(), get(&t, &format!("{name}_after.running_var")), 1e-6, 1e-5, "running var");
        let tracked = get(&t, &format!("{name}_after.num_batches_tracked")).to_dtype(DType::F32).unwrap();
        assert_eq!(bn.num_batches_tracked().unwrap(), tracked.to_scalar::<f32>().unwrap());
        // The store sees the updated buffers (what a checkpoint saves).
        close(&value(&store, &format!("{name}.running_var")), bn.running_var(), 0.0, 0.0, "stored running var");
        let y_eval = bn.forward(x.as_tensor(), false).unwrap();
        close(&y_eval, get(&t, &format!("{name}_y_eval")), 1e-5, 1e-5, &format!("{name} eval output"));
    }
}

#[test]
fn deconv_matches_conv_transpose2d_and_its_gradients() {
    let t = load("deconv.safetensors");
    let x = Var::from_tensor(get(&t, "x")).unwrap();
    let w = Var::from_tensor(get(&t, "weight")).unwrap();
    let b = Var::from_tensor(get(&t, "bias")).unwrap();
    let y = deconv2x2(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
    close(&y, get(&t, "y"), 1e-5, 1e-5, "deconv output");
    let grads = (&y * get(&t, "gy")).unwrap().sum_all().unwrap().backward().unwrap();
    close(grads.get(&x).unwrap(), get(&t, "dx"), 1e-5, 1e-5, "deconv dx");
    close(grads.get(&w).unwrap(), get(&t, "dweight"), 1e-4, 1e-5, "deconv dweight");
    close(grads.get(&b).unwrap(), get(&t, "dbias"), 1e-4, 1e-5, "deconv dbias");
}

#[test]
fn shared2fc_head_forward_and_get_bboxes_match_mmdet() {
    let t = load("bbox_head.safetensors");
    let case = &cases()["bbox_head"];
    let cfg: BBoxHeadConfig = serde_json::from_value(case["bbox_head"].clone()).unwrap();
    let store = ParamStore::new(&Device::Cpu, 0);
    let head = BBoxHead::new(&cfg, 4, &store.root().pp("roi_head").pp("bbox_head")).unwrap();
    load_exact(&store, &t);
    let (cls, reg) = head.forward(get(&t, "feats"), false).unwrap();
    close(&cls, get(&t, "cls"), 1e-5, 1e-4, "cls_score");
    close(&reg, get(&t, "reg"), 1e-5, 1e-4, "bbox_pred");
    let img: Vec<usize> = serde_json::from_value(case["img_size"].clone()).unwrap();
    let sf: Vec<f32> = serde_json::from_value(case["scale_factor"].clone()).unwrap();
    let mut meta = ImageMeta::of_input((img[0], img[1]));
    meta.ori_size = (0, 0);
    meta.scale_factor = [sf[0], sf[1]];
    let rois = get(&t, "rois");
    let det = head
        .get_bboxes(&rois.narrow(1, 1, 4).unwrap(), get(&t, "cls"), get(&t, "reg"), &meta, &RcnnTestConfig::default())
        .unwrap();
    let labels: Vec<usize> = get(&t, "det_labels").to_vec1::<i64>().unwrap().iter().map(|&v| v as usize).collect();
    assert!(labels.len() > 20, "fixture should keep many detections");
    assert_eq!(det.labels, labels, "labels in order");
    let boxes = boxes_tensor(&det.boxes);
    close(&boxes, get(&t, "det_boxes"), 1e-4, 1e-5, "detection boxes");
    close(&Tensor::new(det.scores.clone(), &Device::Cpu).unwrap(), get(&t, "det_scores"), 1e-6, 1e-5, "scores");
}

/// The two images' features, proposals and ground truth of `standard.safetensors`.
fn standard_inputs(
    t: &HashMap<String, Tensor>,
    img_sizes: &[Vec<usize>],
) -> (Vec<Tensor>, Vec<Proposals>, Vec<ImageTargets>) {
    let feats = (0..4).map(|i| get(t, &format!("feat{i}")).clone()).collect();
    let mut props = Vec::new();
    let mut targets = Vec::new();
    for (i, size) in img_sizes.iter().enumerate() {
        props.push(Proposals::from_tensor(get(t, &format!("proposals{i}"))).unwrap());
        let shape: Vec<usize> =
            get(t, &format!("gt_masks{i}_shape")).to_vec1::<i64>().unwrap().iter().map(|&v| v as usize).collect();
        let bits = unpack(get(t, &format!("gt_masks{i}")), shape.iter().product());
        let masks = Tensor::from_vec(bits, shape.as_slice(), &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        let boxes = host_boxes(get(t, &format!("gt_boxes{i}")));
        let labels = get(t, &format!("gt_labels{i}")).to_vec1::<i64>().unwrap().iter().map(|&v| v as usize).collect();
        let mut target = ImageTargets::new(boxes, labels, (size[0], size[1]));
        target.masks = Some(masks);
        targets.push(target);
    }
    (feats, props, targets)
}

fn host_boxes(t: &Tensor) -> Vec<[f32; 4]> {
    let v = t.narrow(1, 0, 4).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v.chunks_exact(4).map(|b| [b[0], b[1], b[2], b[3]]).collect()
}

fn loss_value(losses: &Losses, name: &str) -> f32 {
    let v = losses.get(name).unwrap_or_else(|| panic!("no loss {name}"));
    v.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap()
}

fn roi_head(store: &ParamStore, case: &serde_json::Value) -> (RoiHead, RoiHeadConfig) {
    let cfg: RoiHeadConfig = serde_json::from_value(case["roi_head"].clone()).unwrap();
    (RoiHead::new(&cfg, 4, &store.root().pp("roi_head")).unwrap(), cfg)
}

#[test]
fn standard_roi_head_losses_and_mask_logits_match_mmdet() {
    let t = load("standard.safetensors");
    let case = &cases()["standard"];
    let img_sizes: Vec<Vec<usize>> = serde_json::from_value(case["img_sizes"].clone()).unwrap();
    let store = ParamStore::new(&Device::Cpu, 0);
    let (head, cfg) = roi_head(&store, case);
    load_exact(&store, &t);
    let (feats, props, targets) = standard_inputs(&t, &img_sizes);
    // All candidates are kept (sampler num 512), so the sampling is deterministic.
    let mut rng = StdRng::seed_from_u64(0);
    let losses = head.forward_train(&feats, &props, &targets, &mut rngs(targets.len(), 0)).unwrap();
    for name in ["loss_cls", "loss_bbox", "loss_mask", "acc"] {
        scalar_close(loss_value(&losses, name), f32s(get(&t, name))[0], 1e-4, name);
    }
    // Gradients reach the box and mask heads.
    let total = losses.total().unwrap().unwrap();
    let grads = total.backward().unwrap();
    for (name, var) in store.trainable() {
        if name.ends_with("fc_cls.weight") || name.ends_with("conv_logits.weight") || name.ends_with("upsample.weight")
        {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
            assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "{name}: zero gradient");
        }
    }
    // An image without ground truth (all its RoIs negative) and a batch without positives.
    let mut no_gt = targets.clone();
    no_gt[1] = ImageTargets { boxes: vec![], labels: vec![], ..no_gt[1].clone() };
    let l = head.forward_train(&feats, &props, &no_gt, &mut rngs(no_gt.len(), 0)).unwrap();
    assert!(l.items().iter().all(|i| i.value.to_scalar::<f32>().unwrap().is_finite()));
    no_gt[0] = ImageTargets { boxes: vec![], labels: vec![], ..no_gt[0].clone() };
    let l = head.forward_train(&feats, &props, &no_gt, &mut rngs(no_gt.len(), 0)).unwrap();
    assert_eq!(loss_value(&l, "loss_bbox"), 0.0);
    assert_eq!(loss_value(&l, "loss_mask"), 0.0);
    // Mask logits of the first positives and the mask targets, from the same sampling.
    let cfg_train = cfg.stages().unwrap()[0].train.clone().unwrap();
    let assigner = nextdet_heads::assigner::MaxIoUAssigner::new(&cfg_train.assigner);
    let sampler = nextdet_heads::sampler::RandomSampler::new(&cfg_train.sampler);
    let num_pos: Vec<usize> = serde_json::from_value(case["num_pos"].clone()).unwrap();
    let num_rois: Vec<usize> = serde_json::from_value(case["num_rois"].clone()).unwrap();
    let mut all_targets = Vec::new();
    let mut pos_boxes = Vec::new();
    for (i, (p, tg)) in props.iter().zip(&targets).enumerate() {
        let s = nextdet_heads::roi::sample_rois(&assigner, &sampler, &p.boxes, tg, &mut rng).unwrap();
        assert_eq!((s.num_pos, s.boxes.len()), (num_pos[i], num_rois[i]), "image {i} sampling");
        let pos = s.positives().unwrap();
        let inds: Vec<u32> = s.pos_gt_inds.iter().map(|&g| g as u32).collect();
        all_targets.push(
            mask_targets(tg.masks.as_ref().unwrap(), &Tensor::new(inds, &Device::Cpu).unwrap(), pos.tensor(), 28)
                .unwrap(),
        );
        pos_boxes.push(pos);
    }
    let mt = Tensor::cat(&all_targets, 0).unwrap();
    let expected: Vec<f32> = unpack(get(&t, "mask_targets"), mt.elem_count()).iter().map(|&v| v as f32).collect();
    assert_eq!(f32s(&mt), expected, "mask targets");
    let per: Vec<&Boxes> = pos_boxes.iter().collect();
    let rois = rois(&per, &Device::Cpu).unwrap();
    let extractor = SingleRoiExtractor::new((14, 14), &[4.0, 8.0, 16.0, 32.0]);
    let mask_pred = head.stages()[0].mask_head().unwrap().forward(&extractor.forward(&feats, &rois).unwrap()).unwrap();
    close(&mask_pred.narrow(0, 0, 4).unwrap(), get(&t, "mask_pred4"), 1e-5, 1e-4, "mask logits");
}

fn meta_of(meta: &serde_json::Value) -> ImageMeta {
    let v = |k: &str| -> Vec<f32> { serde_json::from_value(meta[k].clone()).unwrap() };
    let (img, ori, sf) = (v("img_size"), v("ori_size"), v("scale_factor"));
    let mut m = ImageMeta::of_input((img[0] as usize, img[1] as usize));
    m.ori_size = (ori[0] as usize, ori[1] as usize);
    m.scale_factor = [sf[0], sf[1]];
    m
}

/// Compares one image's detections with `test_boxes/scores/labels/masks` of `t`: the same
/// labels in the same order, boxes and scores within f32 noise, at most 0.1% of the
/// foreground mask pixels different.
fn check_detections(det: &nextdet_heads::InstanceResult, t: &HashMap<String, Tensor>, meta: &ImageMeta) {
    let labels: Vec<usize> = get(t, "test_labels").to_vec1::<i64>().unwrap().iter().map(|&v| v as usize).collect();
    assert!(labels.len() > 10, "fixture should keep many detections");
    assert_eq!(det.labels, labels, "labels in order");
    close(&boxes_tensor(&det.boxes), get(t, "test_boxes"), 2e-3, 1e-4, "boxes");
    close(&Tensor::new(det.scores.clone(), &Device::Cpu).unwrap(), get(t, "test_scores"), 1e-5, 1e-4, "scores");
    let masks = det.masks.as_ref().unwrap();
    assert_eq!(masks.len(), labels.len());
    let (h, w) = meta.ori_size;
    let expected = unpack(get(t, "test_masks"), labels.len() * h * w);
    let (mut wrong, mut on) = (0usize, 0usize);
    for (i, m) in masks.iter().enumerate() {
        assert_eq!((m.height, m.width), (h, w));
        let dense = m.to_dense();
        on += dense.iter().map(|&v| v as usize).sum::<usize>();
        wrong += dense.iter().zip(&expected[i * h * w..(i + 1) * h * w]).filter(|(a, b)| a != b).count();
    }
    eprintln!("masks: {wrong} of {on} foreground pixels differ");
    assert!(on > 500 && wrong * 1000 <= on, "{wrong} mask pixels differ ({on} foreground)");
}

#[test]
fn standard_simple_test_matches_mmdet() {
    let t = load("standard.safetensors");
    let case = &cases()["standard"];
    let store = ParamStore::new(&Device::Cpu, 0);
    let (head, _) = roi_head(&store, case);
    load_exact(&store, &t);
    let meta = meta_of(&case["meta"]);
    let feats: Vec<Tensor> = (0..4).map(|i| get(&t, &format!("feat{i}")).narrow(0, 0, 1).unwrap()).collect();
    let proposals = Proposals::from_tensor(get(&t, "test_proposals")).unwrap();
    let det = head.simple_test(&feats, &[proposals], std::slice::from_ref(&meta)).unwrap();
    check_detections(&det[0], &t, &meta);
    let empty = Proposals::empty(&Device::Cpu).unwrap();
    let none = head.simple_test(&feats, &[empty], &[meta]).unwrap();
    assert!(none[0].boxes.is_empty() && none[0].masks.as_ref().is_some_and(|m| m.is_empty()));
}

fn cascade_head(store: &ParamStore) -> (RoiHead, serde_json::Value) {
    let case = cases()["cascade"].clone();
    (roi_head(store, &case).0, case)
}

#[test]
fn cascade_test_fuses_stage_logits_and_mask_heads_as_mmdet() {
    let t = load("cascade.safetensors");
    let inputs = load("standard.safetensors");
    let store = ParamStore::new(&Device::Cpu, 0);
    let (head, case) = cascade_head(&store);
    load_exact(&store, &t);
    let meta = meta_of(&case["metas"][0]);
    let feats: Vec<Tensor> = (0..4).map(|i| get(&inputs, &format!("feat{i}")).narrow(0, 0, 1).unwrap()).collect();
    let proposals = Proposals::from_tensor(get(&t, "test_proposals")).unwrap();
    let det = head.simple_test(&feats, &[proposals], std::slice::from_ref(&meta)).unwrap();
    assert_eq!(det.len(), 1);
    check_detections(&det[0], &t, &meta);
    let empty = Proposals::empty(&Device::Cpu).unwrap();
    let none = head.simple_test(&feats, &[empty], &[meta]).unwrap();
    assert!(none[0].boxes.is_empty() && none[0].masks.as_ref().is_some_and(|m| m.is_empty()));
}

#[test]
fn cascade_training_losses_refinement_and_bn_statistics_match_mmdet() {
    let t = load("cascade.safetensors");
    let inputs = load("standard.safetensors");
    let store = ParamStore::new(&Device::Cpu, 0);
    let (head, case) = cascade_head(&store);
    load_exact(&store, &t);
    let img_sizes: Vec<Vec<usize>> = serde_json::from_value(case["img_sizes"].clone()).unwrap();
    let (feats, props, targets) = standard_inputs(&inputs, &img_sizes);
    let losses = head.forward_train(&feats, &props, &targets, &mut rngs(targets.len(), 0)).unwrap();
    let expected = get(&t, "stage_losses").to_vec2::<f32>().unwrap();
    for (s, row) in expected.iter().enumerate() {
        for (j, name) in ["loss_cls", "acc", "loss_bbox", "loss_mask"].iter().enumerate() {
            scalar_close(loss_value(&losses, &format!("s{s}.{name}")), row[j], 2e-4, &format!("s{s}.{name}"));
        }
    }
    for s in 0..3 {
        for j in 0..4 {
            for stat in ["running_mean", "running_var"] {
                let name = format!("roi_head.bbox_head.{s}.shared_convs.{j}.bn.{stat}");
                let want = get(&t, &format!("after.{s}.shared_convs.{j}.bn.{stat}"));
                close(&value(&store, &name), want, 1e-5, 1e-4, &name);
            }
        }
    }
}

#[test]
fn configs_are_checked() {
    let case = cases();
    let mut bad = case["bbox_head"]["bbox_head"].clone();
    bad["num_shared_convs"] = serde_json::json!(2);
    let cfg: BBoxHeadConfig = serde_json::from_value(bad).unwrap();
    assert!(cfg.resolve().is_err(), "Shared2FCBBoxHead must not take num_shared_convs");
    let mut typo = case["bbox_head"]["bbox_head"].clone();
    typo["fc_out_channel"] = serde_json::json!(16);
    assert!(serde_json::from_value::<BBoxHeadConfig>(typo).is_err());
    let store = ParamStore::new(&Device::Cpu, 0);
    let cfg: BBoxHeadConfig = serde_json::from_value(case["bbox_head"]["bbox_head"].clone()).unwrap();
    let err = BBoxHead::new(&cfg, 8, &store.root()).err().expect("in_channels mismatch").to_string();
    assert!(err.contains("in_channels"), "{err}");
}

/// One generator per image, seeded `seed, seed + 1, ...`.
fn rngs(n: usize, seed: u64) -> Vec<StdRng> {
    (0..n as u64).map(|i| StdRng::seed_from_u64(seed + i)).collect()
}

#[test]
fn roi_extractor_config_sets_finest_scale() {
    use nextdet_heads::roi::RoiExtractorConfig;
    // Side 100 RoI: level 0 at mmdet's default 56, level 1 at 28.
    let row = [[0.0f32, 0.0, 0.0, 100.0, 100.0]];
    let build = |extra: &str| {
        let text = format!(r#"{{"output_size": 7, "featmap_strides": [4, 8, 16, 32]{extra}}}"#);
        serde_json::from_str::<RoiExtractorConfig>(&text).unwrap().build(8)
    };
    let default = build("").unwrap();
    assert_eq!(nextdet_ops::map_roi_levels(&row, 4, default.finest_scale), vec![0]);
    let small = build(r#", "finest_scale": 28"#).unwrap();
    assert_eq!(nextdet_ops::map_roi_levels(&row, 4, small.finest_scale), vec![1]);
    let err = build(r#", "finest_scale": 0"#).unwrap_err().to_string();
    assert!(err.contains("finest_scale"), "{err}");
}
