//! End-to-end tests of the `nextdet` binary: config printing and errors, classification against
//! the PyTorch reference (`tests/reference/make_cli_fixtures.py`), ImageFolder evaluation,
//! weight conversion, the benchmark, COCO evaluation against pycocotools
//! (`tests/reference/make_coco_eval_fixtures.py`), and clear refusals.

mod common;

use common::{nextdet, root, stderr, stdout};

const TINY: &str = "tests/configs/convnext_tiny_reduced.yaml";
const CKPT: &str = "tests/fixtures/checkpoints/convnext_tiny_official.pth";
const IMAGE: &str = "tests/fixtures/datasets/small_37x23.png";

#[test]
fn print_config_merges_bases_and_overrides() {
    let out = nextdet(&[
        "print-config",
        "configs/imagenet/convnext_tiny_1k_224.yaml",
        "--cfg-options",
        "model.backbone.drop_path_rate=0.25",
        "data.test.batch_size=4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg: serde_yaml::Value = serde_yaml::from_str(&stdout(&out)).unwrap();
    assert_eq!(cfg["model"]["backbone"]["arch"].as_str(), Some("tiny"));
    assert_eq!(cfg["model"]["backbone"]["drop_path_rate"].as_f64(), Some(0.25));
    assert_eq!(cfg["data"]["class_names"].as_str(), Some("imagenet1k"), "inherited from the base file");
    assert_eq!(cfg["data"]["test"]["batch_size"].as_u64(), Some(4));
    assert_eq!(cfg["data"]["test"]["transform"]["crop_pct"].as_f64(), Some(0.875));
}

#[test]
fn a_config_typo_is_one_error_naming_the_file_and_key() {
    let out = nextdet(&["benchmark", "tests/configs/typo.yaml", "--shape", "32x32", "--iters", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("typo.yaml") && err.contains("drop_path_rte"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one message: {err}");
}

#[test]
fn classify_matches_the_pytorch_pipeline() {
    let out = nextdet(&["classify", TINY, CKPT, IMAGE, "--topk", "10", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let text = std::fs::read_to_string(root().join("tests/fixtures/cli/classify_expected.json")).unwrap();
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    let probs = want["probs"].as_array().unwrap();
    let top = got[0]["topk"].as_array().unwrap();
    assert_eq!(top.len(), 10);
    for entry in top {
        let class = entry["class"].as_u64().unwrap() as usize;
        let (p, q) = (entry["prob"].as_f64().unwrap(), probs[class].as_f64().unwrap());
        assert!((p - q).abs() < 1e-4, "class {class}: {p} vs torch {q}");
    }
    let ranked: Vec<f64> = top.iter().map(|e| e["prob"].as_f64().unwrap()).collect();
    assert!(ranked.windows(2).all(|w| w[0] >= w[1]), "sorted: {ranked:?}");
}

#[test]
fn classify_reports_a_corrupt_image_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let out = nextdet(&["classify", TINY, CKPT, bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("broken.jpg"), "{}", stderr(&out));
}

#[test]
fn a_wrong_checkpoint_is_one_clear_error() {
    let out = nextdet(&["classify", TINY, "tests/fixtures/checkpoints/convnext_small_official.pth", IMAGE]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("convnext_small_official.pth") && err.contains("does not fit"), "{err}");
}

/// Ten class folders holding the same image: every prediction is the same class, so top-1 is
/// exactly 10% and top-5 exactly 50%.
#[test]
fn test_computes_top1_and_top5_on_an_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    for c in 0..10 {
        let class = dir.path().join(format!("class{c:02}"));
        std::fs::create_dir(&class).unwrap();
        std::fs::copy(root().join(IMAGE), class.join("a.png")).unwrap();
    }
    let metrics = dir.path().join("metrics.json");
    let out = nextdet(&[
        "test",
        TINY,
        CKPT,
        "--out",
        metrics.to_str().unwrap(),
        "--cfg-options",
        &format!("data.test.root={}", dir.path().display()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    assert_eq!(m["images"].as_u64(), Some(10));
    assert!((m["top1"].as_f64().unwrap() - 10.0).abs() < 1e-9, "{m}");
    assert!((m["top5"].as_f64().unwrap() - 50.0).abs() < 1e-9, "{m}");
}

#[test]
fn converted_timm_weights_classify_like_the_official_ones() {
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("tiny.safetensors");
    let out =
        nextdet(&["convert-weights", "tests/fixtures/checkpoints/convnext_tiny_timm.pth", converted.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let a = nextdet(&["classify", TINY, CKPT, IMAGE, "--json"]);
    let b = nextdet(&["classify", TINY, converted.to_str().unwrap(), IMAGE, "--json"]);
    assert!(b.status.success(), "{}", stderr(&b));
    let (a, b): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&stdout(&a)).unwrap(), serde_json::from_str(&stdout(&b)).unwrap());
    for (x, y) in a[0]["topk"].as_array().unwrap().iter().zip(b[0]["topk"].as_array().unwrap()) {
        assert_eq!(x["class"], y["class"]);
        assert!((x["prob"].as_f64().unwrap() - y["prob"].as_f64().unwrap()).abs() < 1e-6);
    }
}

#[test]
fn benchmark_reports_speed_and_memory() {
    let out = nextdet(&["benchmark", TINY, "--shape", "64x64", "--batch", "2", "--iters", "2", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(doc["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(doc["peak_memory_mib"].as_f64().unwrap() > 0.0);
    let out = nextdet(&["benchmark", TINY, "--shape", "64", "--iters", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--shape must be HxW"));
}

#[test]
fn train_without_a_runner_section_names_the_file_and_section() {
    // An evaluation-only config has no `runner`: one error naming the file and the section.
    let out = nextdet(&["train", "configs/imagenet/convnext_tiny_1k_224.yaml", "--work-dir", "/nonexistent/x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("configs/imagenet/convnext_tiny_1k_224.yaml") && err.contains("runner"), "{err}");
}

#[test]
fn make_shapes_writes_datasets_that_open() {
    let tmp = tempfile::tempdir().unwrap();
    let det = tmp.path().join("det");
    let out = nextdet(&["make-shapes", det.to_str().unwrap(), "--task", "detection", "--train", "6", "--val", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let opts = nextdet_datasets::coco::CocoOptions::TEST;
    let val =
        nextdet_datasets::coco::CocoDataset::open(&det.join("annotations/instances_val.json"), &det.join("val"), opts)
            .unwrap();
    assert_eq!(val.len(), 3);
    assert_eq!(val.num_classes(), nextdet_datasets::shapes::CATEGORIES.len());
    let cls = tmp.path().join("cls");
    let out =
        nextdet(&["make-shapes", cls.to_str().unwrap(), "--task", "classification", "--train", "2", "--val", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let folder = nextdet_datasets::ImageFolder::open(cls.join("val")).unwrap();
    assert_eq!(folder.len(), nextdet_datasets::shapes::CATEGORIES.len());
    // A second run into the same folder refuses instead of mixing two sets.
    let out = nextdet(&["make-shapes", cls.to_str().unwrap(), "--task", "classification"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
}

#[test]
fn every_shipped_config_has_a_valid_model_section() {
    let dir = root().join("configs/imagenet");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let cfg = nextdet_engine::config::Config::from_file(&path).unwrap();
        let model: nextdet_models::ModelConfig = cfg.section("model").unwrap_or_else(|e| panic!("{e}"));
        let nextdet_models::ModelConfig::ImageClassifier(c) = model else {
            panic!("{}: not a classifier", path.display());
        };
        assert!(c.num_classes == 1000 || c.num_classes == 21841, "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 20, "only {seen} configs");
}

const COCO: &str = "tests/fixtures/coco";

#[test]
fn coco_eval_json_equals_pycocotools() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(COCO).join("expected.json")).unwrap()).unwrap();
    for (results, iou_type) in [("dt_bbox.json", "bbox"), ("dt_segm.json", "segm")] {
        let gt = format!("{COCO}/gt.json");
        let dt = format!("{COCO}/{results}");
        let out = nextdet(&["coco-eval", "--gt", &gt, "--dt", &dt, "--iou-type", iou_type, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("one JSON document on stdout");
        assert_eq!(doc["iou_type"], iou_type);
        let want = expected[results]["stats"].as_array().unwrap();
        let got = doc["stats_list"].as_array().unwrap();
        assert_eq!(got.len(), 12);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() < 1e-9, "{results} stat {i}: {g} vs {w}");
        }
        assert_eq!(doc["stats"]["AP"].as_f64(), got[0].as_f64());
        assert_eq!(doc["per_category"].as_array().unwrap().len(), 4);
    }
}

#[test]
fn coco_eval_prints_the_pycocotools_summary() {
    let out = nextdet(&[
        "coco-eval",
        "--gt",
        "tests/fixtures/coco/gt.json",
        "--dt",
        "tests/fixtures/coco/dt_bbox.json",
        "--iou-type",
        "bbox",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.224"), "{text}");
    assert!(text.contains(" Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = "), "{text}");
    assert!(text.contains("triangle"), "{text}");
}

#[test]
fn coco_eval_names_a_missing_results_file() {
    let out = nextdet(&[
        "coco-eval",
        "--gt",
        "tests/fixtures/coco/gt.json",
        "--dt",
        "tests/fixtures/coco/no_such_results.json",
        "--iou-type",
        "segm",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no_such_results.json"), "{err}");
    // The I/O cause is part of the library's message and its source: printed once.
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}
