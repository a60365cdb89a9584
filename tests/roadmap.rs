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

#[test]
fn the_roadmap_steps_are_the_configs_in_order() {
    let files: Vec<String> =
        step_configs().iter().map(|p| p.file_stem().unwrap().to_str().unwrap().to_string()).collect();
    let mut listed: Vec<String> = nextdet_apis::roadmap::STEPS.iter().map(|s| s.file.to_string()).collect();
    listed.sort();
    assert_eq!(listed, files, "one step per config");
    // each step's config inherits the one before, as the figure goes
    for pair in nextdet_apis::roadmap::STEPS.windows(2) {
        let text = std::fs::read_to_string(root().join(format!("configs/roadmap/{}.yaml", pair[1].file))).unwrap();
        let base = format!("_base_: {}.yaml", pair[0].file);
        assert!(text.lines().any(|l| l.trim() == base), "{} does not inherit {}", pair[1].file, pair[0].file);
    }
}

#[test]
fn the_roadmap_command_trains_every_step_and_writes_a_table_and_a_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    let out = common::nextdet(&[
        "make-shapes",
        data.to_str().unwrap(),
        "--task",
        "classification",
        "--train",
        "4",
        "--val",
        "2",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let work = tmp.path().join("roadmap");
    let (train, val) = (
        format!("data.train.root={}", data.join("train").display()),
        format!("data.test.root={}", data.join("val").display()),
    );
    let args = [
        "roadmap",
        "--work-dir",
        work.to_str().unwrap(),
        "--width-scale",
        "0.125",
        "--threads",
        "1",
        "--cfg-options",
        &train,
        &val,
        "data.train.batch_size=4",
        "data.train.transform.input_size=32",
        "data.test.transform.input_size=32",
        "runner.max_epochs=1",
    ];
    let out = common::nextdet(&args);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let table = std::fs::read_to_string(work.join("roadmap.md")).unwrap();
    let rows: Vec<&str> = table.lines().skip(2).collect();
    assert_eq!(rows.len(), 16, "{table}");
    assert!(rows[0].starts_with("| ResNet-50 | ResNet-50 | 4.1 |"), "{}", rows[0]);
    assert!(rows[15].starts_with("| sep. d.s. conv | Micro design | 4.5 |"), "{}", rows[15]);
    assert_eq!(common::stdout(&out), table, "the table is printed too");
    let chart = image::open(work.join("roadmap.png")).unwrap();
    assert_eq!(chart.height(), 120 + 34 * 16);
    for step in nextdet_apis::roadmap::STEPS {
        let r: nextdet_apis::roadmap::RoadmapResult =
            serde_json::from_str(&std::fs::read_to_string(work.join(step.file).join("result.json")).unwrap()).unwrap();
        assert!((0.0..=100.0).contains(&r.top1) && r.trained_gflops > 0.0 && r.trained_gflops < r.paper_gflops);
    }
    // a second call reuses the finished steps: nothing trains, the same table
    let out = common::nextdet(&args);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(!common::stderr(&out).contains("training on"), "{}", common::stderr(&out));
    assert_eq!(std::fs::read_to_string(work.join("roadmap.md")).unwrap(), table);
}

#[test]
fn a_roadmap_step_config_is_the_step_with_the_recipe_and_scaled_widths() {
    use nextdet_apis::roadmap::{step_config, RoadmapOptions, STEPS};
    let opts = RoadmapOptions {
        configs: root().join("configs/roadmap"),
        recipe: root().join("configs/roadmap/shapes/recipe.yaml"),
        width_scale: 0.25,
        work_dir: std::env::temp_dir().join("nextdet_roadmap_config_test"),
        overrides: vec!["runner.max_epochs=5".into()],
    };
    for (step, dims, block) in
        [(&STEPS[0], [16, 32, 64, 128], "bottleneck"), (&STEPS[15], [24, 48, 96, 192], "inverted")]
    {
        let cfg = step_config(&opts, step).unwrap();
        let get = |k: &str| cfg.get(k).unwrap_or_else(|| panic!("{}: no {k}", step.file)).clone();
        let want: Vec<serde_yaml::Value> = dims.iter().map(|&d| serde_yaml::Value::from(d as u64)).collect();
        assert_eq!(get("model.backbone.dims"), serde_yaml::Value::Sequence(want), "{}", step.file);
        // the recipe replaces the ImageNet sections whole (`_delete_`), nothing of them is left
        assert_eq!(get("data.train.root").as_str(), Some("data/shapes_cls/train"));
        assert!(cfg.get("data.train.mixup").is_none() && cfg.get("lr_config.warmup_epochs").is_none());
        assert!(cfg.get("runner.accumulate").is_none() && cfg.get("runner.ema").is_none());
        assert_eq!(get("lr_config.warmup_steps").as_u64(), Some(100));
        assert_eq!(get("runner.max_epochs").as_u64(), Some(5), "the overrides apply last");
        assert_eq!(get("model.num_classes").as_u64(), Some(5));
        // the step's own design stays
        assert_eq!(get("model.backbone.block").as_str(), Some(block), "{}", step.file);
    }
    let caption = nextdet_apis::roadmap::roadmap_caption(&opts).unwrap();
    assert!(caption.contains("after 5 epochs at 64 px (recipe.yaml), widths x0.25"), "{caption}");
    let bad = RoadmapOptions { width_scale: 1.5, ..opts };
    assert!(step_config(&bad, &STEPS[0]).is_err(), "a width scale above 1");
}
