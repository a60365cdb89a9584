//! The roadmap configs (`configs/roadmap/`, one per step of the ConvNeXt paper's Figure 2 /
//! Table 10): each parses, builds and takes one training step (forward in training mode,
//! backward, AdamW step of its own `optimizer` section) with a finite loss; the last step is
//! ConvNeXt-T parameter for parameter, and with the official checkpoint's weights gives the
//! official model's logits. The per-module cost of every step is in `tests/analyze.rs`; parity
//! with the PyTorch reference at small widths in `backbones/tests/roadmap.rs`.

mod common;

use candle_core::{Device, Tensor};
use common::root;
use nextdet_apis::load_config;
use nextdet_backbones::weights::load_checkpoint;
use nextdet_engine::optim::{Optimizer, OptimizerConfig};
use nextdet_heads::losses::cross_entropy;
use nextdet_models::{ImageClassifier, ModelConfig};
use nextdet_ops::ParamStore;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Every `configs/roadmap/*.yaml`, sorted.
fn step_configs() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("configs/roadmap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 16, "one config per step of Figure 2");
    paths
}

/// The classifier a config describes (with `overrides`) on `store`.
fn classifier(config: &str, overrides: &[&str], store: ParamStore) -> ImageClassifier {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let cfg = load_config(&root().join(config), &overrides).unwrap_or_else(|e| panic!("{config}: {e:#}"));
    let ModelConfig::ImageClassifier(m) = cfg.section::<ModelConfig>("model").unwrap() else {
        panic!("{config}: not a classifier")
    };
    ImageClassifier::new(&m, store, 0).unwrap_or_else(|e| panic!("{config}: {e:#}"))
}

#[test]
fn every_roadmap_config_takes_a_training_step() {
    for path in step_configs() {
        let name = path.display().to_string();
        let cfg = load_config(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let net = classifier(&name, &[], ParamStore::new(&Device::Cpu, 0));
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
        let logits = net.forward(&x, true).unwrap();
        assert_eq!(logits.dims(), [2, 1000], "{name}");
        let loss = cross_entropy(&logits, &[3, 999]).unwrap().mean_all().unwrap();
        let value = loss.to_scalar::<f32>().unwrap();
        assert!(value.is_finite(), "{name}: loss {value}");
        let grads = loss.backward().unwrap();
        let opt_cfg: OptimizerConfig = cfg.section("optimizer").unwrap();
        let mut opt = Optimizer::from_config(&opt_cfg, net.params()).unwrap();
        let head = |n: &ImageClassifier| {
            let t = n.params().tensors().into_iter().find(|(k, _)| k == "head.weight").unwrap().1;
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let before = head(&net);
        opt.step(&grads, opt_cfg.lr).unwrap();
        assert_ne!(before, head(&net), "{name}: the step moved the head");
    }
}

/// Parameter and buffer names with their shapes.
fn names_and_shapes(config: &str) -> BTreeMap<String, Vec<usize>> {
    let net = classifier(config, &[], ParamStore::zeros(&Device::Cpu));
    net.params().tensors().into_iter().map(|(k, v)| (k, v.dims().to_vec())).collect()
}

#[test]
fn the_last_step_is_convnext_tiny_name_for_name() {
    let ours = names_and_shapes("configs/roadmap/separate_downsampling.yaml");
    let tiny = names_and_shapes("configs/imagenet/convnext_tiny_1k_224.yaml");
    assert_eq!(ours.len(), 182, "ConvNeXt-T's state_dict");
    assert_eq!(ours, tiny);
}

#[test]
fn the_last_step_gives_the_official_logits_from_a_convnext_tiny_checkpoint() {
    // ConvNeXt-T's depths with the fixture's widths (tests/reference/make_backbone_fixtures.py)
    let overrides = ["model.backbone.dims=[4, 8, 8, 16]", "model.num_classes=10"];
    let store = ParamStore::new(&Device::Cpu, 0);
    let net = classifier("configs/roadmap/separate_downsampling.yaml", &overrides, store.clone());
    let dir = root().join("tests/fixtures/checkpoints");
    let outcome = load_checkpoint(&store, &dir.join("convnext_tiny_official.pth"), true).unwrap();
    assert!(outcome.report.is_exact(), "{:?}", outcome.report);
    let expected =
        candle_core::safetensors::load(dir.join("convnext_tiny_expected.safetensors"), &Device::Cpu).unwrap();
    let logits = net.forward(&expected["input"], false).unwrap();
    let diff = (&logits - &expected["logits"]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = expected["logits"].abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
    assert!(diff <= 1e-4 * scale, "logits differ by {diff} (scale {scale})");
}
