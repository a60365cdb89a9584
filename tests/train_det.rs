//! End-to-end detector commands on a tiny generated shapes set: `nextdet train` of a very small
//! Mask R-CNN for two epochs (checkpoints, `latest`, metrics.jsonl with the loss parts and the
//! COCO box and mask AP of every epoch, curves.png), `--resume` to a third epoch, `nextdet test
//! --eval bbox segm --out` agreeing with the last evaluation and writing COCO results files, and
//! `nextdet infer` writing a drawing and the detections of an image.

mod common;

use common::{metrics, nextdet_on_two_threads as nextdet, stderr, write_tiny_detector_config as write_config};

fn in_unit_range(v: &serde_json::Value) -> bool {
    v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x))
}

#[test]
fn train_resume_test_and_infer_a_tiny_mask_rcnn() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    let out = nextdet(&["make-shapes", data.to_str().unwrap(), "--task", "detection", "--train", "4", "--val", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let work = tmp.path().join("work");
    let work_s = work.to_str().unwrap();

    let cfg = write_config(tmp.path(), &data, 2);
    let out = nextdet(&["train", cfg.to_str().unwrap(), "--work-dir", work_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in ["epoch_1.safetensors", "epoch_2.safetensors", "latest.safetensors", "curves.png", "config.yaml"] {
        assert!(work.join(f).is_file(), "{f} missing; {}", stderr(&out));
    }
    let lines = metrics(&work);
    let train: Vec<_> = lines.iter().filter(|v| v["mode"] == "train").collect();
    assert_eq!(train.len(), 2 * 2, "4 images / batch 2 = 2 iterations per epoch, each logged");
    for part in ["loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask"] {
        assert!(train.iter().all(|v| v[part].as_f64().is_some_and(f64::is_finite)), "{part}: {train:?}");
    }
    let val: Vec<_> = lines.iter().filter(|v| v["mode"] == "val").collect();
    assert_eq!(val.len(), 2);
    assert!(val.iter().all(|v| in_unit_range(&v["bbox_mAP"]) && in_unit_range(&v["segm_mAP"])), "{val:?}");

    // a third epoch from `latest`
    let cfg = write_config(tmp.path(), &data, 3);
    let out = nextdet(&["train", cfg.to_str().unwrap(), "--work-dir", work_s, "--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(work.join("epoch_3.safetensors").is_file());
    let lines = metrics(&work);
    let epochs: Vec<u64> = lines.iter().filter(|v| v["mode"] == "val").map(|v| v["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 2, 3], "resumed after epoch 2, not from scratch");

    // `nextdet test` on the last checkpoint reproduces the last evaluation and writes COCO results
    let ckpt = work.join("epoch_3.safetensors");
    let results = tmp.path().join("results.json");
    let out = nextdet(&[
        "test",
        cfg.to_str().unwrap(),
        ckpt.to_str().unwrap(),
        "--eval",
        "bbox",
        "segm",
        "--out",
        results.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["images"].as_u64(), Some(2), "{doc}");
    let last = lines.iter().rfind(|v| v["mode"] == "val").unwrap();
    for (t, key) in [("bbox", "bbox_mAP"), ("segm", "segm_mAP")] {
        let ap = doc["metrics"][t]["stats"][0].as_f64().unwrap_or_else(|| panic!("no {t} AP in {doc}"));
        assert!((ap - last[key].as_f64().unwrap()).abs() < 1e-9, "{t}: {ap} vs {last}");
    }
    for file in ["results.bbox.json", "results.segm.json"] {
        let text = std::fs::read_to_string(tmp.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v.is_array(), "{file} is a COCO results list");
    }

    // `nextdet infer` draws an image and lists its detections
    let image = data.join("val/000001.png");
    let drawn = tmp.path().join("drawn");
    let out = nextdet(&[
        "infer",
        cfg.to_str().unwrap(),
        ckpt.to_str().unwrap(),
        image.to_str().unwrap(),
        "--out-dir",
        drawn.to_str().unwrap(),
        "--score-thr",
        "0.0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let png = image::open(drawn.join("000001.png")).unwrap();
    let source = image::open(&image).unwrap();
    assert_eq!((png.width(), png.height()), (source.width(), source.height()), "drawn at the original size");
    let listed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(drawn.join("000001.json")).unwrap()).unwrap();
    assert!(listed["detections"].is_array(), "{listed}");
}

#[test]
fn a_missing_load_from_is_one_error_naming_the_key_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = nextdet(&[
        "train",
        "configs/shapes/mask_rcnn_convnext_atto_shapes.yaml",
        "--work-dir",
        tmp.path().join("w").to_str().unwrap(),
        "--cfg-options",
        "load_from=/nonexistent/cls.safetensors",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("load_from: /nonexistent/cls.safetensors") && err.contains("--cfg-options"), "{err}");
    assert!(err.contains("load_from=null") && !err.contains("panicked"), "{err}");
}

/// The values of a checkpoint file, by name, as raw bits (weights, optimizer state, EMA).
fn checkpoint_bits(path: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    tensors
        .into_iter()
        .map(|(k, t)| {
            let t = t.to_dtype(candle_core::DType::F64).unwrap().flatten_all().unwrap();
            (k, t.to_vec1::<f64>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect()
}

/// The loss parts and evaluation metrics of a metrics.jsonl, without the timings.
fn logged_values(work: &std::path::Path) -> Vec<String> {
    metrics(work)
        .into_iter()
        .map(|mut v| {
            for k in ["time", "data_time", "speed"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v.to_string()
        })
        .collect()
}

#[test]
fn kill_9_at_random_points_then_resume_gives_the_uninterrupted_run() {
    use rand::{Rng, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    let out = nextdet(&["make-shapes", data.to_str().unwrap(), "--task", "detection", "--train", "4", "--val", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let epochs = 6;
    let cfg = write_config(tmp.path(), &data, epochs);
    let cfg = cfg.to_str().unwrap();
    let straight = tmp.path().join("straight");
    let started = std::time::Instant::now();
    let out = nextdet(&["train", cfg, "--work-dir", straight.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run_secs = started.elapsed().as_secs_f64();

    // Runs are killed at random points (startup, a step, an evaluation, a checkpoint write) and
    // resumed until they finish; a finished run must equal the straight one; new runs start until
    // 24 kills have landed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut kills, mut rounds) = (0, 0);
    while kills < 24 {
        rounds += 1;
        let work = tmp.path().join(format!("killed_{rounds}"));
        let w = work.to_str().unwrap();
        let mut starts = 0;
        loop {
            starts += 1;
            assert!(starts < 200, "round {rounds} never finished");
            let mut args = vec!["train", cfg, "--work-dir", w, "--threads", "2"];
            if work.join("latest.safetensors").exists() {
                args.push("--resume");
            } else if work.exists() {
                // killed before its first checkpoint: what it wrote is set aside
                args.push("--overwrite");
            }
            let mut child = common::command(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let delay = rng.gen_range(0.0..run_secs.max(0.2));
            std::thread::sleep(std::time::Duration::from_secs_f64(delay));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                continue;
            }
            assert!(child.wait().unwrap().success(), "round {rounds}, start {starts} failed");
            if work.join(format!("epoch_{epochs}.safetensors")).exists() {
                break;
            }
        }
        let last = format!("epoch_{epochs}.safetensors");
        assert_eq!(checkpoint_bits(&work.join(&last)), checkpoint_bits(&straight.join(&last)), "round {rounds}");
        assert_eq!(logged_values(&work), logged_values(&straight), "metrics.jsonl of round {rounds}");
    }
    eprintln!("{kills} kills in {rounds} rounds, every round equal to the uninterrupted run");
}
