//! RPN head parity with the torch re-implementation of mmdet 2.11's RPNHead in
//! tests/reference/make_fpn_rpn_fixtures.py (rpn.safetensors): head outputs, proposals (per-level
//! top-k, clipped decode, min size, per-level NMS), and both RPN losses with their gradients to
//! the head weights, for the Mask R-CNN (L1, allowed_border -1) and Cascade (SmoothL1 1/9,
//! allowed_border 0) settings, with per-image pad shapes. The sampler is sized so that it keeps
//! every candidate, which makes the loss deterministic.

use candle_core::{Device, Tensor};
use nextdet_heads::assigner::MaxIoUAssignerConfig;
use nextdet_heads::box_coder::BoxCoderConfig;
use nextdet_heads::losses::RegLossConfig;
use nextdet_heads::rpn::{
    AnchorGeneratorConfig, AnchorGeneratorType, ProposalConfig, RpnHead, RpnHeadConfig, RpnOutput, RpnTrainConfig,
};
use nextdet_heads::sampler::RandomSamplerConfig;
use nextdet_heads::{ImageMeta, ImageTargets};
use nextdet_ops::{Losses, ParamStore};
use nextdet_testutil::{load_fixture, max_abs_diff};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

fn fixture() -> HashMap<String, Tensor> {
    load_fixture("fpn_rpn/rpn.safetensors")
}

fn proposal_cfg(nms_pre: usize, max_per_img: usize, nms_iou: f64, min_bbox_size: f32) -> ProposalConfig {
    ProposalConfig { nms_pre, max_per_img, nms_iou, min_bbox_size }
}

fn config(loss_bbox: RegLossConfig, allowed_border: i64) -> RpnHeadConfig {
    RpnHeadConfig {
        feat_channels: 8,
        anchor_generator: AnchorGeneratorConfig {
            kind: AnchorGeneratorType::AnchorGenerator,
            scales: vec![8.0],
            ratios: vec![0.5, 1.0, 2.0],
            strides: vec![4, 8, 16, 32, 64],
        },
        bbox_coder: BoxCoderConfig::rpn_default(),
        loss_bbox,
        train: RpnTrainConfig {
            assigner: MaxIoUAssignerConfig {
                pos_iou_thr: 0.7,
                neg_iou_thr: 0.3,
                min_pos_iou: 0.3,
                match_low_quality: true,
                ignore_iof_thr: -1.0,
            },
            sampler: RandomSamplerConfig {
                num: 100_000,
                pos_fraction: 0.5,
                neg_pos_ub: -1,
                add_gt_as_proposals: false,
            },
            allowed_border,
        },
        train_proposals: proposal_cfg(2000, 1000, 0.7, 0.0),
        test_proposals: proposal_cfg(1000, 1000, 0.7, 0.0),
    }
}

fn build(cfg: &RpnHeadConfig, fx: &HashMap<String, Tensor>) -> (ParamStore, RpnHead) {
    let store = ParamStore::new(&Device::Cpu, 0);
    let head = RpnHead::new(cfg, 8, &store.root().pp("rpn_head")).unwrap();
    let weights: HashMap<String, Tensor> =
        fx.iter().filter(|(k, _)| k.starts_with("rpn_head.")).map(|(k, v)| (k.clone(), v.clone())).collect();
    let report = store.load(&weights).unwrap();
    assert!(report.is_exact(), "{report:?}");
    (store, head)
}

fn feats(fx: &HashMap<String, Tensor>) -> Vec<Tensor> {
    (0..5).map(|l| fx[&format!("feat{l}")].clone()).collect()
}

#[test]
fn head_outputs_match_torch() {
    let fx = fixture();
    let (_, head) = build(&config(RegLossConfig::L1Loss { loss_weight: 1.0 }, -1), &fx);
    let out = head.forward(&feats(&fx)).unwrap();
    for l in 0..5 {
        let d = max_abs_diff(&out.cls[l], &fx[&format!("cls{l}")]);
        assert!(d < 1e-5, "cls{l}: {d}");
        let d = max_abs_diff(&out.reg[l], &fx[&format!("reg{l}")]);
        assert!(d < 1e-5, "reg{l}: {d}");
    }
}

#[test]
fn proposals_match_mmdet() {
    let fx = fixture();
    let (_, head) = build(&config(RegLossConfig::L1Loss { loss_weight: 1.0 }, -1), &fx);
    let out = RpnOutput {
        cls: (0..5).map(|l| fx[&format!("cls{l}")].clone()).collect(),
        reg: (0..5).map(|l| fx[&format!("reg{l}")].clone()).collect(),
    };
    for (name, cfg) in [("a", proposal_cfg(50, 40, 0.7, 0.0)), ("b", proposal_cfg(30, 25, 0.5, 6.0))] {
        let props = head.proposals(&out, &metas(&[(60, 90), (40, 60)]), &cfg).unwrap();
        for (b, p) in props.iter().enumerate() {
            let want = &fx[&format!("props_{name}_{b}")];
            let p = p.to_tensor().unwrap();
            let d = max_abs_diff(&p, want);
            eprintln!("props_{name}_{b} {:?}: max diff {d:e}", p.dims());
            assert!(d < 1e-4, "props_{name}_{b}: max diff {d}");
        }
    }
}

fn metas(sizes: &[(usize, usize)]) -> Vec<ImageMeta> {
    sizes.iter().map(|&s| ImageMeta::of_input(s)).collect()
}

/// The fixture's two images: sizes 60x90 and 40x60, each padded to its own (64, 96) and (64, 64).
fn targets(fx: &HashMap<String, Tensor>) -> Vec<ImageTargets> {
    let boxes = |t: &Tensor| -> Vec<[f32; 4]> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
    };
    [("gt0", (60, 90), (64, 96)), ("gt1", (40, 60), (64, 64))]
        .into_iter()
        .map(|(k, size, pad)| {
            let b = boxes(&fx[k]);
            let mut t = ImageTargets::new(b.clone(), vec![0; b.len()], size);
            t.meta.pad_size = pad;
            t
        })
        .collect()
}

/// The same targets, both padded to `pad`.
fn targets_padded(fx: &HashMap<String, Tensor>, pad: (usize, usize)) -> Vec<ImageTargets> {
    let mut t = targets(fx);
    t.iter_mut().for_each(|t| t.meta.pad_size = pad);
    t
}

fn value(l: &Losses, name: &str) -> f32 {
    l.get(name).unwrap_or_else(|| panic!("no {name}")).to_scalar::<f32>().unwrap()
}

#[test]
fn losses_and_gradients_match_mmdet() {
    let fx = fixture();
    let settings = [
        ("m", RegLossConfig::L1Loss { loss_weight: 1.0 }, -1),
        ("c", RegLossConfig::SmoothL1Loss { beta: 1.0 / 9.0, loss_weight: 1.0 }, 0),
    ];
    for (name, loss_bbox, border) in settings {
        let (store, head) = build(&config(loss_bbox, border), &fx);
        let out = head.forward(&feats(&fx)).unwrap();
        let t = targets(&fx);
        let losses = head.loss(&out, &t, &mut rngs(t.len(), 0)).unwrap();
        let names: Vec<&str> = losses.items().iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["loss_rpn_cls", "loss_rpn_bbox"]);
        for key in ["cls", "bbox"] {
            let got = value(&losses, &format!("loss_rpn_{key}"));
            let want = fx[&format!("loss_{name}_{key}")].to_vec1::<f32>().unwrap()[0];
            eprintln!("loss_{name}_{key}: {got} vs torch {want}");
            assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "loss_{name}_{key}: {got} vs {want}");
        }
        let total = losses.total().unwrap().unwrap();
        let grads = total.backward().unwrap();
        for (param, var) in store.trainable() {
            let want = &fx[&format!("grad_{name}.{param}")];
            let d = max_abs_diff(grads.get(var.as_tensor()).unwrap(), want);
            let scale = want.abs().unwrap().max_keepdim(0).unwrap().flatten_all().unwrap().max(0).unwrap();
            let scale = scale.to_scalar::<f32>().unwrap().max(1e-3);
            eprintln!("grad_{name}.{param}: max diff {d:e} (max |grad| {scale:e})");
            assert!(d <= 1e-4 * scale, "grad_{name}.{param}: max diff {d} (scale {scale})");
        }
    }
}

#[test]
fn batch_pad_size_marks_more_anchors_valid() {
    // With the batch's pad size for both images, image 1's padding anchors become valid
    // negatives, which changes avg_factor and so the loss.
    let fx = fixture();
    let (_, head) = build(&config(RegLossConfig::L1Loss { loss_weight: 1.0 }, -1), &fx);
    let out = head.forward(&feats(&fx)).unwrap();
    let t = targets_padded(&fx, (64, 96));
    let l = head.loss(&out, &t, &mut rngs(t.len(), 0)).unwrap();
    let got = value(&l, "loss_rpn_cls");
    let want = fx["loss_m_cls"].to_vec1::<f32>().unwrap()[0];
    assert!((got - want).abs() > 1e-4, "{got} {want}");
}

#[test]
fn random_sampling_keeps_the_configured_sizes() {
    let fx = fixture();
    let mut cfg = config(RegLossConfig::L1Loss { loss_weight: 1.0 }, -1);
    cfg.train.sampler.num = 64;
    let (_, head) = build(&cfg, &fx);
    let out = head.forward(&feats(&fx)).unwrap();
    let t = targets_padded(&fx, (64, 96));
    let l1 = head.loss(&out, &t, &mut rngs(t.len(), 1)).unwrap();
    let l2 = head.loss(&out, &t, &mut rngs(t.len(), 11)).unwrap();
    let v = |l: &Losses| value(l, "loss_rpn_cls");
    assert!(v(&l1).is_finite() && v(&l2).is_finite());
    assert_ne!(v(&l1), v(&l2));
}

#[test]
fn mismatched_outputs_are_errors() {
    let fx = fixture();
    let (_, head) = build(&config(RegLossConfig::L1Loss { loss_weight: 1.0 }, -1), &fx);
    assert!(head.forward(&feats(&fx)[..4]).is_err());
    let out = head.forward(&feats(&fx)).unwrap();
    assert!(head.proposals(&out, &metas(&[(60, 90)]), &proposal_cfg(10, 10, 0.7, 0.0)).is_err());
    assert!(head.loss(&out, &targets(&fx)[..1], &mut rngs(1, 0)).is_err());
    assert!(head.loss(&out, &targets(&fx), &mut rngs(1, 0)).is_err(), "one generator for two images");
    let bad = RpnHeadConfig {
        loss_bbox: RegLossConfig::GIoULoss { loss_weight: 1.0 },
        ..config(RegLossConfig::L1Loss { loss_weight: 1.0 }, -1)
    };
    let store = ParamStore::new(&Device::Cpu, 0);
    assert!(RpnHead::new(&bad, 8, &store.root()).is_err());
}

#[test]
fn config_parses_with_mmdet_defaults_and_rejects_typos() {
    let text = r#"{
        "anchor_generator": {"scales": [8], "ratios": [0.5, 1.0, 2.0], "strides": [4, 8, 16, 32, 64]},
        "loss_bbox": {"type": "SmoothL1Loss", "beta": 0.1111111111111111},
        "train": {
            "assigner": {"pos_iou_thr": 0.7, "neg_iou_thr": 0.3, "min_pos_iou": 0.3},
            "sampler": {"num": 256, "pos_fraction": 0.5, "add_gt_as_proposals": false},
            "allowed_border": 0
        },
        "train_proposals": {"nms_pre": 2000, "max_per_img": 2000, "nms_iou": 0.7},
        "test_proposals": {"nms_pre": 1000, "max_per_img": 1000, "nms_iou": 0.7}
    }"#;
    let cfg: RpnHeadConfig = serde_json::from_str(text).unwrap();
    assert_eq!(cfg.feat_channels, 256);
    assert_eq!(cfg.bbox_coder, BoxCoderConfig::rpn_default());
    assert_eq!(cfg.loss_bbox, RegLossConfig::SmoothL1Loss { beta: 1.0 / 9.0, loss_weight: 1.0 });
    assert!(cfg.train.assigner.match_low_quality);
    assert_eq!(cfg.train.assigner.ignore_iof_thr, -1.0);
    assert_eq!(cfg.train.sampler.neg_pos_ub, -1);
    assert_eq!(cfg.train_proposals.min_bbox_size, 0.0);
    let typo = text.replace("\"min_pos_iou\"", "\"min_pos_iuo\"");
    let e = serde_json::from_str::<RpnHeadConfig>(&typo).unwrap_err().to_string();
    assert!(e.contains("min_pos_iuo"), "{e}");
    let typo = text.replace("SmoothL1Loss", "SmoothL2Loss");
    assert!(serde_json::from_str::<RpnHeadConfig>(&typo).is_err());
}

#[test]
fn images_without_gts_or_inside_anchors_give_finite_losses() {
    let fx = fixture();
    let (store, head) = build(&config(RegLossConfig::SmoothL1Loss { beta: 1.0 / 9.0, loss_weight: 1.0 }, 0), &fx);
    let out = head.forward(&feats(&fx)).unwrap();
    let mut t = targets(&fx);
    t[0].boxes.clear();
    t[0].labels.clear();
    // Image 1 is smaller than every anchor: with allowed_border 0 none of its anchors is inside.
    t[1].meta.img_size = (10, 10);
    t[1].meta.pad_size = (32, 32);
    let l = head.loss(&out, &t, &mut rngs(t.len(), 0)).unwrap();
    let cls = value(&l, "loss_rpn_cls");
    let bbox = value(&l, "loss_rpn_bbox");
    assert!(cls.is_finite() && cls > 0.0, "{cls}");
    assert_eq!(bbox, 0.0);
    let grads = l.total().unwrap().unwrap().backward().unwrap();
    for (name, var) in store.trainable() {
        let g = grads.get(var.as_tensor()).unwrap();
        let s = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(s.is_finite(), "{name}");
        if name.contains("rpn_reg") {
            assert_eq!(s, 0.0, "{name}");
        }
    }
}

/// One generator per image, seeded `seed, seed + 1, ...`.
fn rngs(n: usize, seed: u64) -> Vec<StdRng> {
    (0..n as u64).map(|i| StdRng::seed_from_u64(seed + i)).collect()
}
