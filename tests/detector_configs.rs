//! Every Table-3 detection config of the ConvNeXt paper (Mask R-CNN ConvNeXt-T, Cascade Mask R-CNN
//! ConvNeXt-T/S/B 1k, B/L/XL 22k, ResNet-50; Mask R-CNN and Cascade Swin-T, as
//! Swin-Transformer-Object-Detection configures them) parses, builds with random weights, runs one
//! training step (forward_train, backward, one step of the config's own AdamW optimizer with its
//! layer-wise decay groups) and one inference on a small input, and names its parameters as
//! mmdetection 2.11 does, so the published checkpoints load by name.
//!
//! Overrides (`Config::apply_overrides`), each only saving time or making an assertion bite:
//! - `rpn_head.train_proposals.{nms_pre=300, max_per_img=100}` and `roi_head.train.*.sampler.num=32`:
//!   the RoI heads see at most ~100 proposals plus the ground truth instead of 2000 x 512 sampled
//!   RoIs; every loss term is still computed from positives and negatives of every stage.
//! - `rpn_head.test_proposals.{nms_pre=300, max_per_img=30}` and `roi_head.test.max_per_img=10`:
//!   fewer boxes through NMS and the mask head at test time.
//! - `roi_head.test.score_thr=0.0`: a random head scores every class near 1/81 < 0.05, so the
//!   published threshold would leave no detection and the output checks would check nothing.
//!
//! The tests hold one lock so that the big backbones (XL: ~350M parameters, plus gradients and
//! AdamW moments) never build at the same time; each prints its build, train and test seconds
//! (`cargo test --release --test detector_configs -- --nocapture`).

use candle_core::{DType, Device, Tensor};
use nextdet_engine::config::Config;
use nextdet_engine::optim::{Optimizer, OptimizerConfig};
use nextdet_heads::{ImageMeta, ImageTargets};
use nextdet_models::{build_model, Model, ModelConfig, TwoStageDetector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

/// Serializes the tests: one model in memory at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The batch: two images in one `[2, 3, H, W]` input of `input`; the second image is 32 px
/// smaller each way (still a multiple of 32) and padded to `input`.
#[derive(Clone, Copy)]
struct Sizes {
    input: (usize, usize),
    second: (usize, usize),
}

impl Sizes {
    const fn new(h: usize, w: usize) -> Self {
        Self { input: (h, w), second: (h - 32, w - 32) }
    }
}

/// The input of most configs.
const SMALL_INPUT: Sizes = Sizes::new(128, 160);
/// Large and XLarge: their backbones alone would take the test past a minute at `SMALL_INPUT`.
const SMALLER_INPUT: Sizes = Sizes::new(96, 128);
const NUM_CLASSES: usize = 80;

/// Overrides shared by both detector types (see the module docs).
const COMMON: &[&str] = &[
    "model.rpn_head.train_proposals.nms_pre=300",
    "model.rpn_head.train_proposals.max_per_img=100",
    "model.rpn_head.test_proposals.nms_pre=300",
    "model.rpn_head.test_proposals.max_per_img=30",
    "model.roi_head.test.max_per_img=10",
    "model.roi_head.test.score_thr=0.0",
];

/// Which RoI head a config has, and so which per-stage overrides and names apply.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    MaskRcnn,
    Cascade,
}

/// Which backbone family, for the name checks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Trunk {
    ConvNeXt,
    ResNet50,
    /// Swin Transformer in detection mode (Swin-Transformer-Object-Detection's `SwinTransformer`,
    /// `ape=False`, `patch_norm=True`, `out_indices=(0, 1, 2, 3)`); head dim 32 in every stage.
    Swin,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(config: &str, kind: Kind) -> Config {
    let mut cfg = Config::from_file(root().join(config)).unwrap_or_else(|e| panic!("{config}: {e}"));
    let mut overrides: Vec<String> = COMMON.iter().map(|s| s.to_string()).collect();
    match kind {
        Kind::MaskRcnn => overrides.push("model.roi_head.train.sampler.num=32".into()),
        Kind::Cascade => {
            overrides.extend((0..3).map(|s| format!("model.roi_head.train.{s}.sampler.num=32")));
        }
    }
    cfg.apply_overrides(&overrides).unwrap_or_else(|e| panic!("{config}: {e}"));
    cfg
}

/// `n` random boxes of 16..64 px inside `size`, with box-shaped masks over the whole `padded`
/// input (the batch's size, as the collate step gives them) and random labels.
fn random_targets(size: (usize, usize), padded: (usize, usize), n: usize, rng: &mut StdRng) -> ImageTargets {
    let (h, w) = size;
    let (bh, bw) = padded;
    let mut boxes = Vec::new();
    let mut masks = vec![0u8; n * bh * bw];
    for mask in masks.chunks_exact_mut(bh * bw) {
        let x0 = rng.gen_range(0.0..w as f32 * 0.6);
        let y0 = rng.gen_range(0.0..h as f32 * 0.6);
        let (dx, dy) = (rng.gen_range(16.0..64.0f32), rng.gen_range(16.0..64.0f32));
        let b = [x0, y0, (x0 + dx).min(w as f32), (y0 + dy).min(h as f32)];
        for y in b[1] as usize..b[3] as usize {
            mask[y * bw + b[0] as usize..y * bw + b[2] as usize].fill(1);
        }
        boxes.push(b);
    }
    let labels = (0..n).map(|_| rng.gen_range(0..NUM_CLASSES)).collect();
    let masks = Some(Tensor::from_vec(masks, (n, bh, bw), &Device::Cpu).unwrap());
    // Each image's own size is a multiple of 32 here, so it is its own pad size.
    let mut target = ImageTargets::new(boxes, labels, size);
    target.masks = masks;
    target
}

/// Random normalized pixels inside each image's own size, zeros in the padding.
fn random_images(sizes: Sizes, rng: &mut StdRng) -> Tensor {
    let (h, w) = sizes.input;
    let mut data = vec![0f32; 2 * 3 * h * w];
    for (i, (ih, iw)) in [sizes.input, sizes.second].into_iter().enumerate() {
        for c in 0..3 {
            for y in 0..ih {
                for x in 0..iw {
                    data[((i * 3 + c) * h + y) * w + x] = rng.gen_range(-2.0..2.0);
                }
            }
        }
    }
    Tensor::from_vec(data, (2, 3, h, w), &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Every key of the `state_dict` mmdetection 2.11 saves for this model (parameters and buffers,
/// BN's `num_batches_tracked` included), written out from its module tree: ConvNeXt's
/// (`downsample_layers`, `stages`, `norm{i}`), mmdet's ResNet, FPN (`ConvModule`s, `num_outs` 5
/// without extra convs), RPNHead, Shared2FCBBoxHead / ConvFCBBoxHead with `ConvModule` + BN
/// (`conv` without bias, `bn`), FCNMaskHead, and the cascade's per-stage `ModuleList`s.
fn mmdet_state_dict_keys(kind: Kind, trunk: Trunk, depths: [usize; 4]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut add = |prefix: &str, names: &[&str]| {
        for n in names {
            keys.insert(format!("{prefix}.{n}"));
        }
    };
    const WB: &[&str] = &["weight", "bias"];
    const BN: &[&str] = &["weight", "bias", "running_mean", "running_var", "num_batches_tracked"];
    match trunk {
        Trunk::ConvNeXt => {
            add("backbone.downsample_layers.0.0", WB);
            add("backbone.downsample_layers.0.1", WB);
            for i in 1..4 {
                add(&format!("backbone.downsample_layers.{i}.0"), WB);
                add(&format!("backbone.downsample_layers.{i}.1"), WB);
            }
            for (i, &d) in depths.iter().enumerate() {
                for j in 0..d {
                    let b = format!("backbone.stages.{i}.{j}");
                    for m in ["dwconv", "norm", "pwconv1", "pwconv2"] {
                        add(&format!("{b}.{m}"), WB);
                    }
                    add(&b, &["gamma"]);
                }
                add(&format!("backbone.norm{i}"), WB);
            }
        }
        Trunk::Swin => {
            // Swin-Transformer-Object-Detection's state_dict also holds the persistent buffer
            // `attn.relative_position_index` of every block; it is a function of the window size,
            // which the model derives and the checkpoint loader sets aside, so it is no parameter.
            add("backbone.patch_embed.proj", WB);
            add("backbone.patch_embed.norm", WB);
            for (i, &d) in depths.iter().enumerate() {
                for j in 0..d {
                    let b = format!("backbone.layers.{i}.blocks.{j}");
                    for m in ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"] {
                        add(&format!("{b}.{m}"), WB);
                    }
                    add(&b, &["attn.relative_position_bias_table"]);
                }
                if i < 3 {
                    add(&format!("backbone.layers.{i}.downsample.norm"), WB);
                    add(&format!("backbone.layers.{i}.downsample"), &["reduction.weight"]);
                }
                add(&format!("backbone.norm{i}"), WB);
            }
        }
        Trunk::ResNet50 => {
            add("backbone", &["conv1.weight"]);
            add("backbone.bn1", BN);
            for (i, &d) in depths.iter().enumerate() {
                for j in 0..d {
                    let b = format!("backbone.layer{}.{j}", i + 1);
                    for k in 1..4 {
                        add(&b, &[format!("conv{k}.weight").as_str()]);
                        add(&format!("{b}.bn{k}"), BN);
                    }
                    if j == 0 {
                        add(&b, &["downsample.0.weight"]);
                        add(&format!("{b}.downsample.1"), BN);
                    }
                }
            }
        }
    }
    for i in 0..4 {
        add(&format!("neck.lateral_convs.{i}.conv"), WB);
        add(&format!("neck.fpn_convs.{i}.conv"), WB);
    }
    for m in ["rpn_conv", "rpn_cls", "rpn_reg"] {
        add(&format!("rpn_head.{m}"), WB);
    }
    let mut mask_head = |p: &str| {
        for i in 0..4 {
            add(&format!("{p}.convs.{i}.conv"), WB);
        }
        add(&format!("{p}.upsample"), WB);
        add(&format!("{p}.conv_logits"), WB);
    };
    match kind {
        Kind::MaskRcnn => mask_head("roi_head.mask_head"),
        Kind::Cascade => (0..3).for_each(|s| mask_head(&format!("roi_head.mask_head.{s}"))),
    }
    match kind {
        Kind::MaskRcnn => {
            for m in ["shared_fcs.0", "shared_fcs.1", "fc_cls", "fc_reg"] {
                add(&format!("roi_head.bbox_head.{m}"), WB);
            }
        }
        Kind::Cascade => {
            for s in 0..3 {
                let p = format!("roi_head.bbox_head.{s}");
                for i in 0..4 {
                    add(&format!("{p}.shared_convs.{i}.conv"), &["weight"]);
                    add(&format!("{p}.shared_convs.{i}.bn"), BN);
                }
                for m in ["shared_fcs.0", "fc_cls", "fc_reg"] {
                    add(&format!("{p}.{m}"), WB);
                }
            }
        }
    }
    keys
}

/// Our parameter and buffer names are exactly mmdetection's state_dict keys.
fn check_key_set(config: &str, shapes: &HashMap<String, Vec<usize>>, want: &BTreeSet<String>) {
    let have: BTreeSet<String> = shapes.keys().cloned().collect();
    let missing: Vec<&String> = want.difference(&have).collect();
    let extra: Vec<&String> = have.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{config}: names differ from mmdet's state_dict: {} missing {missing:?}, {} extra {extra:?}",
        missing.len(),
        extra.len()
    );
}

/// Checks the names against mmdetection's layout: every name under one of the four modules,
/// `expected` present with the given shapes, `absent` not present.
fn check_names(
    config: &str,
    shapes: &HashMap<String, Vec<usize>>,
    expected: &[(String, Vec<usize>)],
    absent: &[String],
) {
    let stray: Vec<&String> = shapes
        .keys()
        .filter(|n| !["backbone.", "neck.", "rpn_head.", "roi_head."].iter().any(|p| n.starts_with(p)))
        .collect();
    assert!(stray.is_empty(), "{config}: names outside mmdet's modules: {stray:?}");
    for (name, shape) in expected {
        match shapes.get(name) {
            None => {
                let mut near: Vec<&String> =
                    shapes.keys().filter(|k| k.starts_with(name.rsplit_once('.').unwrap().0)).collect();
                near.sort();
                panic!("{config}: no parameter `{name}` (mmdet's name); nearby: {near:?}")
            }
            Some(got) => assert_eq!(got, shape, "{config}: shape of `{name}`"),
        }
    }
    for name in absent {
        assert!(!shapes.contains_key(name), "{config}: `{name}` is not in mmdet's model");
    }
}

/// mmdetection's names (and shapes) of the parameters every spot-check looks at.
fn published_names(kind: Kind, trunk: Trunk, dims: [usize; 4]) -> (Vec<(String, Vec<usize>)>, Vec<String>) {
    let s = |n: &str, shape: &[usize]| (n.to_string(), shape.to_vec());
    let mut expected = vec![
        s("neck.lateral_convs.0.conv.weight", &[256, dims[0], 1, 1]),
        s("neck.lateral_convs.0.conv.bias", &[256]),
        s("neck.lateral_convs.3.conv.weight", &[256, dims[3], 1, 1]),
        s("neck.fpn_convs.0.conv.weight", &[256, 256, 3, 3]),
        s("neck.fpn_convs.3.conv.bias", &[256]),
        s("rpn_head.rpn_conv.weight", &[256, 256, 3, 3]),
        s("rpn_head.rpn_conv.bias", &[256]),
        s("rpn_head.rpn_cls.weight", &[3, 256, 1, 1]),
        s("rpn_head.rpn_reg.weight", &[12, 256, 1, 1]),
        s("rpn_head.rpn_reg.bias", &[12]),
    ];
    let mut absent = vec!["neck.fpn_convs.4.conv.weight".to_string()];
    match trunk {
        Trunk::ConvNeXt => {
            expected.extend([
                s("backbone.downsample_layers.0.0.weight", &[dims[0], 3, 4, 4]),
                s("backbone.downsample_layers.0.0.bias", &[dims[0]]),
                s("backbone.downsample_layers.0.1.weight", &[dims[0]]),
                s("backbone.downsample_layers.1.0.weight", &[dims[0]]),
                s("backbone.downsample_layers.1.1.weight", &[dims[1], dims[0], 2, 2]),
                s("backbone.downsample_layers.3.1.bias", &[dims[3]]),
                s("backbone.stages.0.0.dwconv.weight", &[dims[0], 1, 7, 7]),
                s("backbone.stages.0.0.norm.weight", &[dims[0]]),
                s("backbone.stages.0.0.pwconv1.weight", &[4 * dims[0], dims[0]]),
                s("backbone.stages.0.0.pwconv2.weight", &[dims[0], 4 * dims[0]]),
                s("backbone.stages.0.0.gamma", &[dims[0]]),
                s("backbone.stages.3.2.gamma", &[dims[3]]),
                s("backbone.norm0.weight", &[dims[0]]),
                s("backbone.norm0.bias", &[dims[0]]),
                s("backbone.norm3.weight", &[dims[3]]),
            ]);
            absent.extend(["backbone.norm.weight", "backbone.head.weight"].map(String::from));
        }
        Trunk::ResNet50 => {
            expected.extend([
                s("backbone.conv1.weight", &[64, 3, 7, 7]),
                s("backbone.bn1.weight", &[64]),
                s("backbone.bn1.running_mean", &[64]),
                s("backbone.bn1.running_var", &[64]),
                s("backbone.layer1.0.conv1.weight", &[64, 64, 1, 1]),
                s("backbone.layer1.0.bn3.weight", &[256]),
                s("backbone.layer1.0.downsample.0.weight", &[256, 64, 1, 1]),
                s("backbone.layer1.0.downsample.1.running_var", &[256]),
                s("backbone.layer4.2.conv3.weight", &[2048, 512, 1, 1]),
                s("backbone.layer4.2.bn3.bias", &[2048]),
            ]);
            absent.extend(["backbone.fc.weight", "backbone.conv1.bias"].map(String::from));
        }
        Trunk::Swin => {
            let heads = |i: usize| dims[i] / 32;
            expected.extend([
                s("backbone.patch_embed.proj.weight", &[dims[0], 3, 4, 4]),
                s("backbone.patch_embed.norm.weight", &[dims[0]]),
                s("backbone.layers.0.blocks.0.attn.relative_position_bias_table", &[13 * 13, heads(0)]),
                s("backbone.layers.0.blocks.0.attn.qkv.weight", &[3 * dims[0], dims[0]]),
                s("backbone.layers.0.blocks.1.attn.proj.bias", &[dims[0]]),
                s("backbone.layers.0.blocks.0.mlp.fc1.weight", &[4 * dims[0], dims[0]]),
                s("backbone.layers.0.downsample.norm.weight", &[4 * dims[0]]),
                s("backbone.layers.0.downsample.reduction.weight", &[dims[1], 4 * dims[0]]),
                s("backbone.layers.3.blocks.1.attn.relative_position_bias_table", &[13 * 13, heads(3)]),
                s("backbone.layers.3.blocks.1.mlp.fc2.weight", &[dims[3], 4 * dims[3]]),
                s("backbone.norm0.weight", &[dims[0]]),
                s("backbone.norm3.bias", &[dims[3]]),
            ]);
            absent.extend(
                [
                    "backbone.norm.weight",
                    "backbone.head.weight",
                    "backbone.absolute_pos_embed",
                    "backbone.layers.3.downsample.reduction.weight",
                    "backbone.layers.0.blocks.0.attn.relative_position_index",
                ]
                .map(String::from),
            );
        }
    }
    match kind {
        Kind::MaskRcnn => {
            expected.extend([
                s("roi_head.bbox_head.shared_fcs.0.weight", &[1024, 256 * 49]),
                s("roi_head.bbox_head.shared_fcs.1.weight", &[1024, 1024]),
                s("roi_head.bbox_head.fc_cls.weight", &[81, 1024]),
                s("roi_head.bbox_head.fc_cls.bias", &[81]),
                s("roi_head.bbox_head.fc_reg.weight", &[320, 1024]),
                s("roi_head.mask_head.convs.0.conv.weight", &[256, 256, 3, 3]),
                s("roi_head.mask_head.convs.3.conv.bias", &[256]),
                s("roi_head.mask_head.upsample.weight", &[256, 256, 2, 2]),
                s("roi_head.mask_head.conv_logits.weight", &[80, 256, 1, 1]),
            ]);
        }
        Kind::Cascade => {
            for st in 0..3 {
                let p = format!("roi_head.bbox_head.{st}");
                let m = format!("roi_head.mask_head.{st}");
                expected.extend([
                    (format!("{p}.shared_convs.0.conv.weight"), vec![256, 256, 3, 3]),
                    (format!("{p}.shared_convs.0.bn.weight"), vec![256]),
                    (format!("{p}.shared_convs.3.bn.running_mean"), vec![256]),
                    (format!("{p}.shared_fcs.0.weight"), vec![1024, 256 * 49]),
                    (format!("{p}.fc_cls.weight"), vec![81, 1024]),
                    (format!("{p}.fc_reg.weight"), vec![320, 1024]),
                    (format!("{m}.convs.0.conv.weight"), vec![256, 256, 3, 3]),
                    (format!("{m}.upsample.weight"), vec![256, 256, 2, 2]),
                    (format!("{m}.conv_logits.weight"), vec![80, 256, 1, 1]),
                ]);
                // ConvModule with a norm layer has no conv bias; one fc, so no shared_fcs.1.
                absent.push(format!("{p}.shared_convs.0.conv.bias"));
                absent.push(format!("{p}.shared_fcs.1.weight"));
            }
            absent.extend(
                ["roi_head.bbox_head.fc_cls.weight", "roi_head.mask_head.conv_logits.weight"].map(String::from),
            );
        }
    }
    (expected, absent)
}

/// A few parameters of every part of the model whose value the training step must change.
fn watched(kind: Kind, trunk: Trunk) -> Vec<&'static str> {
    let mut names = vec!["neck.lateral_convs.0.conv.weight", "rpn_head.rpn_conv.weight", "rpn_head.rpn_cls.weight"];
    names.push(match trunk {
        Trunk::ConvNeXt => "backbone.downsample_layers.0.0.weight",
        Trunk::ResNet50 => "backbone.layer4.2.conv3.weight",
        Trunk::Swin => "backbone.layers.0.blocks.1.attn.relative_position_bias_table",
    });
    names.extend(match kind {
        Kind::MaskRcnn => ["roi_head.bbox_head.fc_cls.weight", "roi_head.mask_head.conv_logits.weight"],
        Kind::Cascade => ["roi_head.bbox_head.2.fc_cls.weight", "roi_head.mask_head.2.conv_logits.weight"],
    });
    names
}

/// Builds, checks the names, trains one step and runs inference; returns the trainable
/// parameter count in millions.
fn run(config: &str, kind: Kind, trunk: Trunk, (dims, depths): ([usize; 4], [usize; 4]), sizes: Sizes) -> f64 {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let cfg = load(config, kind);
    let model_cfg: ModelConfig = cfg.section("model").unwrap_or_else(|e| panic!("{config}: {e}"));
    let opt_cfg: OptimizerConfig = cfg.section("optimizer").unwrap_or_else(|e| panic!("{config}: {e}"));
    let Model::Detector(det) = build_model(&model_cfg, &Device::Cpu, 0).unwrap_or_else(|e| panic!("{config}: {e}"))
    else {
        panic!("{config}: not a detector");
    };
    let built = t0.elapsed().as_secs_f64();

    // Names.
    let tensors = det.params().tensors();
    let shapes: HashMap<String, Vec<usize>> = tensors.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect();
    let count: usize = det.params().trainable().iter().map(|(_, v)| v.elem_count()).sum();
    drop(tensors);
    let (expected, absent) = published_names(kind, trunk, dims);
    check_names(config, &shapes, &expected, &absent);
    check_key_set(config, &shapes, &mmdet_state_dict_keys(kind, trunk, depths));
    if trunk == Trunk::ResNet50 {
        // frozen_stages 1: the stem and layer1 are not trained (mmdet sets requires_grad False).
        let trainable: Vec<String> = det.params().trainable().into_iter().map(|(n, _)| n).collect();
        assert!(!trainable.iter().any(|n| n.starts_with("backbone.conv1.") || n.starts_with("backbone.layer1.")));
        assert!(trainable.iter().any(|n| n.starts_with("backbone.layer2.")));
    }

    let t1 = Instant::now();
    train_step(config, &det, &opt_cfg, kind, trunk, sizes);
    let trained = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    inference(config, &det, sizes);
    let tested = t2.elapsed().as_secs_f64();
    println!(
        "{config}: input {:?}: {:.1}M trainable parameters; build {built:.1} s, train step {trained:.1} s, inference {tested:.1} s, \
         total {:.1} s",
        sizes.input,
        count as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    count as f64 / 1e6
}

fn train_step(config: &str, det: &TwoStageDetector, opt_cfg: &OptimizerConfig, kind: Kind, trunk: Trunk, sizes: Sizes) {
    let mut rng = StdRng::seed_from_u64(1);
    let images = random_images(sizes, &mut rng);
    let targets = vec![
        random_targets(sizes.input, sizes.input, 3, &mut rng),
        random_targets(sizes.second, sizes.input, 2, &mut rng),
    ];
    let names = watched(kind, trunk);
    let stored: HashMap<String, Tensor> = det.params().tensors().into_iter().collect();
    let before: Vec<Vec<f32>> = names.iter().map(|n| values(&stored[*n])).collect();
    drop(stored);

    let mut rngs: Vec<StdRng> = (0..targets.len() as u64).map(|i| StdRng::seed_from_u64(100 + i)).collect();
    let losses = det.forward_train(&images, &targets, &mut rngs).unwrap_or_else(|e| panic!("{config}: {e}"));
    let mut names_got: Vec<&str> = losses.items().iter().map(|i| i.name.as_str()).collect();
    names_got.sort();
    let want: Vec<String> = match kind {
        Kind::MaskRcnn => {
            ["loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask"].map(String::from).into()
        }
        Kind::Cascade => {
            let mut w: Vec<String> = vec!["loss_rpn_cls".into(), "loss_rpn_bbox".into()];
            for s in 0..3 {
                w.extend(["loss_cls", "loss_bbox", "loss_mask"].map(|l| format!("s{s}.{l}")));
            }
            w
        }
    };
    for w in &want {
        assert!(names_got.contains(&w.as_str()), "{config}: no `{w}` among {names_got:?}");
    }
    for item in losses.items() {
        let v = values(&item.value);
        assert!(v.iter().all(|x| x.is_finite()), "{config}: {} = {v:?}", item.name);
    }
    let total = losses.total().unwrap().expect("some loss");
    let printed: Vec<(&str, f32)> = losses.items().iter().map(|i| (i.name.as_str(), values(&i.value)[0])).collect();
    println!("{config}: losses {printed:?}");
    let grads = total.backward().unwrap_or_else(|e| panic!("{config}: backward: {e}"));
    let mut optimizer = Optimizer::from_config(opt_cfg, det.params()).unwrap_or_else(|e| panic!("{config}: {e}"));
    optimizer.step(&grads, opt_cfg.lr).unwrap_or_else(|e| panic!("{config}: {e}"));
    drop(grads);

    let stored: HashMap<String, Tensor> = det.params().tensors().into_iter().collect();
    for (name, old) in names.iter().zip(&before) {
        let new = values(&stored[*name]);
        assert!(new.iter().all(|x| x.is_finite()), "{config}: `{name}` is not finite after the step");
        let moved = old.iter().zip(&new).filter(|(a, b)| a != b).count();
        assert!(moved > 0, "{config}: the training step did not change `{name}`");
    }
}

fn inference(config: &str, det: &TwoStageDetector, sizes: Sizes) {
    let mut rng = StdRng::seed_from_u64(2);
    let images = random_images(sizes, &mut rng);
    // Originals at 1/2 and 3/4 of the resized sizes: boxes and masks must come back at those.
    let ((h0, w0), (h1, w1)) = (sizes.input, sizes.second);
    let meta = |img_size, ori_size, scale_factor| ImageMeta {
        img_size,
        ori_size,
        scale_factor,
        pad_size: img_size,
        ..ImageMeta::of_input(img_size)
    };
    let metas = [
        meta(sizes.input, (h0 / 2, w0 / 2), [2.0, 2.0]),
        meta(
            sizes.second,
            (h1 * 3 / 4, w1 * 3 / 4),
            [w1 as f32 / (w1 * 3 / 4) as f32, h1 as f32 / (h1 * 3 / 4) as f32],
        ),
    ];
    let results = det.predict(&images, &metas).unwrap_or_else(|e| panic!("{config}: predict: {e}"));
    assert_eq!(results.len(), 2, "{config}");
    assert!(det.with_masks());
    for (r, m) in results.iter().zip(&metas) {
        let (oh, ow) = m.ori_size;
        let n = r.boxes.len();
        assert!(n > 0 && n <= 10, "{config}: {n} detections (score_thr 0, max_per_img 10)");
        assert_eq!((r.scores.len(), r.labels.len()), (n, n), "{config}");
        for (b, (&s, &l)) in r.boxes.iter().zip(r.scores.iter().zip(&r.labels)) {
            assert!(b.iter().all(|v| v.is_finite()), "{config}: box {b:?}");
            assert!(b[0] <= b[2] && b[1] <= b[3], "{config}: box {b:?}");
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= ow as f32 + 1e-3 && b[3] <= oh as f32 + 1e-3, "{b:?}");
            assert!(s.is_finite() && (0.0..=1.0).contains(&s), "{config}: score {s}");
            assert!(l < NUM_CLASSES, "{config}: label {l}");
        }
        assert!(r.scores.windows(2).all(|w| w[0] >= w[1]), "{config}: scores sorted: {:?}", r.scores);
        let masks = r.masks.as_ref().unwrap_or_else(|| panic!("{config}: no masks"));
        assert_eq!(masks.len(), n, "{config}");
        for mask in masks {
            assert_eq!((mask.height, mask.width), (oh, ow), "{config}: mask not at the original size");
            assert_eq!(mask.to_dense().len(), oh * ow);
            assert!(mask.data.iter().all(|&v| v <= 1), "{config}: mask values");
        }
    }
}

/// `(stage channels, blocks per stage)` of each backbone (ConvNeXt paper Sec. 2.6; ResNet-50).
type Arch = ([usize; 4], [usize; 4]);
const TINY: Arch = ([96, 192, 384, 768], [3, 3, 9, 3]);
const SMALL: Arch = ([96, 192, 384, 768], [3, 3, 27, 3]);
const BASE: Arch = ([128, 256, 512, 1024], [3, 3, 27, 3]);
const LARGE: Arch = ([192, 384, 768, 1536], [3, 3, 27, 3]);
const XLARGE: Arch = ([256, 512, 1024, 2048], [3, 3, 27, 3]);
const R50: Arch = ([256, 512, 1024, 2048], [3, 4, 6, 3]);
const SWIN_TINY: Arch = ([96, 192, 384, 768], [2, 2, 6, 2]);

#[test]
fn mask_rcnn_convnext_tiny() {
    run(
        "configs/mask_rcnn/mask_rcnn_convnext_tiny_fpn_3x_coco.yaml",
        Kind::MaskRcnn,
        Trunk::ConvNeXt,
        TINY,
        SMALL_INPUT,
    );
}

#[test]
fn cascade_convnext_tiny_1k() {
    run(
        "configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_tiny_fpn_3x_coco.yaml",
        Kind::Cascade,
        Trunk::ConvNeXt,
        TINY,
        SMALL_INPUT,
    );
}

#[test]
fn cascade_convnext_small_1k() {
    run(
        "configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_small_fpn_3x_coco.yaml",
        Kind::Cascade,
        Trunk::ConvNeXt,
        SMALL,
        SMALL_INPUT,
    );
}

#[test]
fn cascade_convnext_base_1k() {
    run(
        "configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_base_fpn_3x_coco.yaml",
        Kind::Cascade,
        Trunk::ConvNeXt,
        BASE,
        SMALL_INPUT,
    );
}

#[test]
fn cascade_convnext_base_22k() {
    run(
        "configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_base_fpn_3x_coco_in22k.yaml",
        Kind::Cascade,
        Trunk::ConvNeXt,
        BASE,
        SMALL_INPUT,
    );
}

#[test]
fn cascade_convnext_large_22k() {
    run(
        "configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_large_fpn_3x_coco_in22k.yaml",
        Kind::Cascade,
        Trunk::ConvNeXt,
        LARGE,
        SMALLER_INPUT,
    );
}

#[test]
fn cascade_convnext_xlarge_22k() {
    run(
        "configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_xlarge_fpn_3x_coco_in22k.yaml",
        Kind::Cascade,
        Trunk::ConvNeXt,
        XLARGE,
        SMALLER_INPUT,
    );
}

#[test]
fn cascade_resnet50() {
    run(
        "configs/cascade_mask_rcnn/cascade_mask_rcnn_r50_fpn_3x_coco.yaml",
        Kind::Cascade,
        Trunk::ResNet50,
        R50,
        SMALL_INPUT,
    );
}

#[test]
fn mask_rcnn_swin_tiny() {
    let m = run(
        "configs/mask_rcnn/mask_rcnn_swin_tiny_fpn_3x_coco.yaml",
        Kind::MaskRcnn,
        Trunk::Swin,
        SWIN_TINY,
        SMALL_INPUT,
    );
    // The Swin paper's Table 3 (and Swin-Transformer-Object-Detection's model zoo): 48M.
    assert!((47.5..48.5).contains(&m), "Mask R-CNN Swin-T: {m:.2}M parameters, the paper says 48M");
}

#[test]
fn cascade_swin_tiny() {
    let m = run(
        "configs/cascade_mask_rcnn/cascade_mask_rcnn_swin_tiny_fpn_3x_coco.yaml",
        Kind::Cascade,
        Trunk::Swin,
        SWIN_TINY,
        SMALL_INPUT,
    );
    // Swin-Transformer-Object-Detection's model zoo: Cascade Mask R-CNN Swin-T 86M.
    assert!((85.5..86.5).contains(&m), "Cascade Mask R-CNN Swin-T: {m:.2}M parameters, the zoo says 86M");
}
