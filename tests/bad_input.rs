//! Careless and hostile input at the command line: every case gets one clear error (or a
//! visible warning) and never loses a file. Each test fails on a build without the fix it
//! covers (`NEXTDET_TEST_BIN=<older nextdet> cargo test --test bad_input` runs them against
//! another binary).

mod common;

use common::{command, nextdet, nextdet_on_two_threads, stderr, stdout, write_tiny_detector_config};
use std::path::{Path, PathBuf};

/// A shapes detection set (4 train, 2 val images), the tiny Mask R-CNN config for it, and a
/// checkpoint after one epoch.
struct Trained {
    data: PathBuf,
    cfg: PathBuf,
    work: PathBuf,
    ckpt: PathBuf,
}

fn trained(dir: &Path) -> Trained {
    let data = dir.join("shapes");
    let out = nextdet(&["make-shapes", data.to_str().unwrap(), "--task", "detection", "--train", "4", "--val", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg = write_tiny_detector_config(dir, &data, 1);
    let work = dir.join("work");
    let out = nextdet_on_two_threads(&["train", cfg.to_str().unwrap(), "--work-dir", work.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ckpt = work.join("epoch_1.safetensors");
    Trained { data, cfg, work, ckpt }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn assert_clean_error(out: &std::process::Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

#[test]
fn infer_never_replaces_an_input_and_keeps_same_named_inputs_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let t = trained(tmp.path());
    let dir = tmp.path().join("images");
    for rel in ["a.png", "d1/x.png", "d2/x.png"] {
        std::fs::create_dir_all(dir.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(t.data.join("val/000001.png"), dir.join(rel)).unwrap();
    }
    image::open(dir.join("a.png")).unwrap().to_rgb8().save(dir.join("a.jpg")).unwrap();
    let before: Vec<Vec<u8>> =
        ["a.png", "a.jpg", "d1/x.png", "d2/x.png"].iter().map(|r| std::fs::read(dir.join(r)).unwrap()).collect();
    let inputs: Vec<String> =
        ["a.png", "a.jpg", "d1/x.png", "d2/x.png"].iter().map(|r| dir.join(r).display().to_string()).collect();
    let mut args = vec!["infer", s(&t.cfg), s(&t.ckpt)];
    args.extend(inputs.iter().map(String::as_str));
    args.extend(["--out-dir", s(&dir), "--score-thr", "0.0"]);
    let out = nextdet_on_two_threads(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    for (r, bytes) in ["a.png", "a.jpg", "d1/x.png", "d2/x.png"].iter().zip(&before) {
        assert_eq!(&std::fs::read(dir.join(r)).unwrap(), bytes, "the input {r} was changed");
    }
    for out_file in ["a.det.png", "a.det.json", "a.jpg.png", "a.jpg.json", "d1/x.det.png", "d2/x.det.json"] {
        assert!(dir.join(out_file).is_file(), "{out_file} missing: {}", stderr(&out));
    }
}

#[test]
fn test_show_dir_in_the_image_folder_leaves_the_dataset_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let t = trained(tmp.path());
    let val = t.data.join("val");
    let before = std::fs::read(val.join("000001.png")).unwrap();
    let out = nextdet_on_two_threads(&["test", s(&t.cfg), s(&t.ckpt), "--show-dir", s(&val)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(val.join("000001.png")).unwrap(), before, "a dataset image was drawn over");
    assert!(val.join("000001.det.png").is_file());
}

#[test]
fn a_work_dir_holding_another_run_is_refused_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let t = trained(tmp.path());
    let lines = std::fs::read_to_string(t.work.join("metrics.jsonl")).unwrap();
    let latest = std::fs::read(t.work.join("latest.safetensors")).unwrap();
    let out = nextdet_on_two_threads(&["train", s(&t.cfg), "--work-dir", s(&t.work)]);
    assert_clean_error(&out, &["--resume", "--overwrite", "another run"]);
    assert_eq!(std::fs::read_to_string(t.work.join("metrics.jsonl")).unwrap(), lines);
    assert_eq!(std::fs::read(t.work.join("latest.safetensors")).unwrap(), latest);
    // --overwrite moves the old run aside first
    let out = nextdet_on_two_threads(&["train", s(&t.cfg), "--work-dir", s(&t.work), "--overwrite"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let old = t.work.join("previous_runs/1");
    assert_eq!(std::fs::read_to_string(old.join("metrics.jsonl")).unwrap(), lines);
    assert_eq!(std::fs::read(old.join("latest.safetensors")).unwrap(), latest);
    assert!(t.work.join("epoch_1.safetensors").is_file());
}

#[test]
fn a_failed_resume_keeps_the_work_dirs_config() {
    let tmp = tempfile::tempdir().unwrap();
    let t = trained(tmp.path());
    let config = std::fs::read_to_string(t.work.join("config.yaml")).unwrap();
    // another model: the checkpoint does not fit
    let out = nextdet_on_two_threads(&[
        "train",
        s(&t.cfg),
        "--work-dir",
        s(&t.work),
        "--resume",
        "--cfg-options",
        "model.roi_head.bbox_head.fc_out_channels=8",
        "runner.max_epochs=2",
    ]);
    assert_clean_error(&out, &["latest.safetensors"]);
    assert_eq!(std::fs::read_to_string(t.work.join("config.yaml")).unwrap(), config);
}

#[test]
fn benchmark_rejects_empty_and_huge_inputs() {
    let cfg = "configs/imagenet/convnext_tiny_1k_224.yaml";
    for shape in ["0x0", "0x224", "100000x100000"] {
        let out = nextdet(&["benchmark", cfg, "--shape", shape, "--iters", "1", "--warmup", "0"]);
        assert_clean_error(&out, &["--shape"]);
    }
}

#[test]
fn unknown_keys_are_errors_suggesting_the_known_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("typo.yaml");
    let base = common::root().join("configs/shapes/convnext_atto_shapes_cls.yaml");
    std::fs::write(&cfg, format!("_base_: [{}]\nload_form: x.safetensors\n", base.display())).unwrap();
    let out = nextdet(&["print-config", s(&cfg)]);
    assert_clean_error(&out, &["typo.yaml", "load_form", "load_from"]);
    let out = nextdet(&["print-config", s(&base), "--cfg-options", "optimizr.lr=5"]);
    assert_clean_error(&out, &["optimizr", "optimizer"]);
}

#[test]
fn out_of_range_values_are_errors_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let t = trained(tmp.path());
    let w = tmp.path().join("w");
    for (overrides, key) in [
        (&["model.roi_head.train.sampler.num=0"][..], "sampler.num"),
        (&["model.rpn_head.train.sampler.num=0"], "sampler.num"),
        (&["runner.max_epochs=0"], "max_epochs"),
        (&["runner.grad_clip=0"], "grad_clip"),
        (&["optimizer.lr=-1"], "lr"),
        (&["model.roi_head.bbox_head.num_classes=3", "model.roi_head.mask_head.num_classes=3"], "num_classes"),
    ] {
        let mut args = vec!["train", s(&t.cfg), "--work-dir", s(&w), "--cfg-options"];
        args.extend_from_slice(overrides);
        let out = nextdet_on_two_threads(&args);
        let over = overrides[0];
        assert_clean_error(&out, &[key]);
        assert!(!w.join("metrics.jsonl").exists(), "{over}: the run started");
    }
    let out = nextdet(&["make-shapes", s(&tmp.path().join("empty")), "--task", "detection", "--train", "0"]);
    assert_clean_error(&out, &["--train"]);
}

#[test]
fn warnings_reach_the_user_and_contradictions_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let t = trained(tmp.path());
    let more = ["runner.max_epochs=2"];
    // resuming with another seed: a visible warning
    let mut args = vec!["train", s(&t.cfg), "--work-dir", s(&t.work), "--resume", "--seed", "99", "--cfg-options"];
    args.extend(more);
    let out = nextdet_on_two_threads(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("warning:") && err.contains("seed 99"), "{err}");
    // --load-from with --resume
    let out =
        nextdet_on_two_threads(&["train", s(&t.cfg), "--work-dir", s(&t.work), "--resume", "--load-from", s(&t.ckpt)]);
    assert_clean_error(&out, &["--load-from", "--resume"]);
    // an AdamW run resumed with SGD
    let out = nextdet_on_two_threads(&[
        "train",
        s(&t.cfg),
        "--work-dir",
        s(&t.work),
        "--resume",
        "--cfg-options",
        "optimizer.type=SGD",
        "optimizer.momentum=0.9",
        "runner.max_epochs=3",
    ]);
    assert_clean_error(&out, &["AdamW", "SGD"]);
    // curves.png that cannot be drawn: a warning, and no claim that it was
    let w = tmp.path().join("w2");
    std::fs::create_dir_all(w.join("curves.png")).unwrap();
    let out = nextdet_on_two_threads(&["train", s(&t.cfg), "--work-dir", s(&w)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("warning:") && err.contains("curves.png"), "{err}");
}

#[test]
fn ctrl_c_saves_and_exits_with_130() {
    let tmp = tempfile::tempdir().unwrap();
    let t = trained(tmp.path());
    let cfg = write_tiny_detector_config(tmp.path(), &t.data, 500);
    let w = tmp.path().join("w");
    let mut child = command(&["train", s(&cfg), "--work-dir", s(&w), "--threads", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while !w.join("epoch_1.safetensors").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was interrupted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(w.join("interrupted.safetensors").is_file());
}

#[test]
fn checkpoints_with_non_finite_weights_are_refused_for_inference() {
    let tmp = tempfile::tempdir().unwrap();
    let t = trained(tmp.path());
    let mut tensors = candle_core::safetensors::load(&t.ckpt, &candle_core::Device::Cpu).unwrap();
    let name = "roi_head.bbox_head.fc_cls.bias";
    let bias = tensors[name].clone();
    tensors.insert(name.into(), (bias * f64::NAN).unwrap());
    let bad = tmp.path().join("nan.safetensors");
    candle_core::safetensors::save(&tensors, &bad).unwrap();
    let image = t.data.join("val/000001.png");
    let out = nextdet_on_two_threads(&["infer", s(&t.cfg), s(&bad), s(&image), "--out-dir", s(&tmp.path().join("o"))]);
    assert_clean_error(&out, &["nan.safetensors", "NaN", "fc_cls.bias"]);
    let out = nextdet_on_two_threads(&["test", s(&t.cfg), s(&bad)]);
    assert_clean_error(&out, &["NaN"]);
    // as initial weights: a warning, and the run goes on
    let out =
        nextdet_on_two_threads(&["train", s(&t.cfg), "--work-dir", s(&tmp.path().join("w")), "--load-from", s(&bad)]);
    let err = stderr(&out);
    assert!(err.contains("warning:") && err.contains("NaN"), "{err}");
}

#[test]
fn output_paths_are_checked_before_the_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let t = trained(tmp.path());
    let folder = tmp.path().join("a_folder");
    std::fs::create_dir_all(&folder).unwrap();
    let out = nextdet_on_two_threads(&["test", s(&t.cfg), s(&t.ckpt), "--out", s(&folder)]);
    assert_clean_error(&out, &["--out", "a_folder"]);
    assert!(!stderr(&out).contains("Average Precision"), "the evaluation ran first: {}", stderr(&out));
}

#[test]
fn a_checkpoint_of_another_model_gets_a_short_error() {
    let tmp = tempfile::tempdir().unwrap();
    let t = trained(tmp.path());
    // resuming with a narrower RPN: its conv and both outputs have other shapes
    let out = nextdet_on_two_threads(&[
        "train",
        s(&t.cfg),
        "--work-dir",
        s(&t.work),
        "--resume",
        "--cfg-options",
        "model.rpn_head.feat_channels=4",
        "runner.max_epochs=2",
    ]);
    let err = stderr(&out);
    assert_clean_error(&out, &["mis-shaped", "more)"]);
    assert!(err.len() < 1000, "{} bytes: {err}", err.len());
}

#[test]
fn drawings_and_listings_name_the_classes() {
    // the COCO configs carry COCO's 80 names in category-id order (mmdetection's CocoDataset.CLASSES)
    let out = nextdet(&["print-config", "configs/mask_rcnn/mask_rcnn_convnext_tiny_fpn_3x_coco.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg: serde_yaml::Value = serde_yaml::from_str(&stdout(&out)).unwrap();
    let classes: Vec<String> = serde_yaml::from_value(cfg["classes"].clone()).unwrap();
    assert_eq!(classes.len(), 80);
    assert_eq!((classes[0].as_str(), classes[23].as_str(), classes[79].as_str()), ("person", "giraffe", "toothbrush"));
    // and `infer` lists the names, with the config's names when the checkpoint has none
    let tmp = tempfile::tempdir().unwrap();
    let t = trained(tmp.path());
    let image = t.data.join("val/000001.png");
    let out = nextdet_on_two_threads(&[
        "infer",
        s(&t.cfg),
        s(&t.ckpt),
        s(&image),
        "--out-dir",
        s(&tmp.path().join("o")),
        "--score-thr",
        "0.0",
        "--json",
        "--cfg-options",
        "classes=[ring, box, tri, star, hex]",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let dets = doc[0]["detections"].as_array().unwrap();
    assert!(!dets.is_empty());
    for d in dets {
        let class = d["class"].as_str().unwrap_or_else(|| panic!("no class name: {d}"));
        assert!(["ring", "box", "tri", "star", "hex"].contains(&class), "{d}");
    }
}
