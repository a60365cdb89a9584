//! End-to-end `nextdet train` for a classifier on a tiny generated shapes set: a very small
//! ConvNeXt for two epochs writes epoch checkpoints, `latest`, metrics.jsonl (train lines with
//! `loss_cls`, val lines with top-1/top-5) and curves.png; `--resume` continues from `latest`
//! to a third epoch; `nextdet test` evaluates the result. Also: every shipped ImageNet training
//! config is read through its typed sections before any model is built.

mod common;

use common::{metrics, nextdet_on_two_threads as nextdet, root, stderr};
use std::path::{Path, PathBuf};

fn write_config(dir: &Path, data: &Path, max_epochs: usize, batch: usize) -> PathBuf {
    let text = format!(
        "model:\n  type: ImageClassifier\n  backbone: {{type: ConvNeXt, depths: [1, 1, 1, 1], dims: [8, 16, 24, 32]}}\n  \
         num_classes: 5\ndata:\n  train:\n    type: ImageFolder\n    root: {train}\n    batch_size: {batch}\n    \
         transform: {{input_size: 32, scale: [0.5, 1.0], auto_augment: rand-m9-mstd0.5-inc1, reprob: 0.25}}\n    \
         mixup: {{mixup_alpha: 0.8, cutmix_alpha: 1.0}}\n    label_smoothing: 0.1\n    workers: 2\n  test:\n    \
         type: ImageFolder\n    root: {val}\n    batch_size: 8\n    transform: {{input_size: 32, crop_pct: 1.0}}\n\
         optimizer: {{type: AdamW, lr: 1.0e-3, weight_decay: 0.05, paramwise: {{type: NoDecayNormBias}}}}\n\
         lr_config: {{policy: cosine, min_lr: 1.0e-5, warmup_epochs: 1}}\n\
         runner: {{max_epochs: {max_epochs}, log_interval: 2, ema: 0.99, seed: 3}}\n",
        train = data.join("train").display(),
        val = data.join("val").display(),
    );
    let path = dir.join("tiny_cls.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn train_resume_and_test_a_tiny_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    let data_s = data.to_str().unwrap();
    let out = nextdet(&["make-shapes", data_s, "--task", "classification", "--train", "4", "--val", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let work = tmp.path().join("work");
    let work_s = work.to_str().unwrap();

    let cfg = write_config(tmp.path(), &data, 2, 4);
    let out = nextdet(&["train", cfg.to_str().unwrap(), "--work-dir", work_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in ["epoch_1.safetensors", "epoch_2.safetensors", "latest.safetensors", "curves.png", "config.yaml"] {
        assert!(work.join(f).is_file(), "{f} missing; {}", stderr(&out));
    }
    let lines = metrics(&work);
    let train: Vec<_> = lines.iter().filter(|v| v["mode"] == "train").collect();
    let val: Vec<_> = lines.iter().filter(|v| v["mode"] == "val").collect();
    assert_eq!(train.len(), 2 * 3, "20 images / batch 4 = 5 iterations, logged at 2, 4, 5");
    assert!(train.iter().all(|v| v["loss_cls"].as_f64().is_some_and(f64::is_finite)), "{train:?}");
    assert_eq!(val.len(), 2);
    for v in &val {
        let (top1, top5) = (v["top1"].as_f64().unwrap(), v["top5"].as_f64().unwrap());
        assert!((0.0..=100.0).contains(&top1) && top5 == 100.0, "{v}: 5 classes, so top-5 is everything");
    }

    // a third epoch from `latest`
    let cfg = write_config(tmp.path(), &data, 3, 4);
    let out = nextdet(&["train", cfg.to_str().unwrap(), "--work-dir", work_s, "--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(work.join("epoch_3.safetensors").is_file());
    let lines = metrics(&work);
    let epochs: Vec<u64> = lines.iter().filter(|v| v["mode"] == "val").map(|v| v["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 2, 3], "resumed after epoch 2, not from scratch");
    let first_resumed = lines.iter().find(|v| v["mode"] == "train" && v["epoch"] == 3).unwrap();
    assert_eq!(first_resumed["global_iter"].as_u64(), Some(12));

    // `nextdet test` on the trained weights agrees with the last evaluation
    let ckpt = work.join("epoch_3.safetensors");
    let out = nextdet(&["test", cfg.to_str().unwrap(), ckpt.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["images"].as_u64(), Some(10));
    let last = lines.iter().rfind(|v| v["mode"] == "val").unwrap();
    assert!((doc["top1"].as_f64().unwrap() - last["top1"].as_f64().unwrap()).abs() < 1e-9, "{doc} vs {last}");
}

#[test]
fn a_batch_larger_than_the_dataset_is_an_error_naming_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    let out =
        nextdet(&["make-shapes", data.to_str().unwrap(), "--task", "classification", "--train", "1", "--val", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg = write_config(tmp.path(), &data, 1, 8);
    let out = nextdet(&["train", cfg.to_str().unwrap(), "--work-dir", tmp.path().join("w").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("tiny_cls.yaml") && err.contains("batch_size"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn shipped_imagenet_training_configs_parse() {
    let dir = root().join("configs/imagenet/train");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        // Every section parses; the run then stops at the missing ImageNet folder (or the
        // missing fine-tuning checkpoint), before any model is built.
        let out = nextdet(&["train", path.to_str().unwrap(), "--work-dir", "/nonexistent/c2"]);
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        let err = stderr(&out);
        assert!(err.contains("data/imagenet/train") || err.contains("checkpoints/"), "{}: {err}", path.display());
        seen += 1;
    }
    assert_eq!(seen, 10);
}
