//! Data-parallel training and testing end to end, two ranks against one process, with ranks as
//! threads of one `nextdet` (`--launcher threads`, always run) and as processes under
//! `mpirun -np 2` (skipped without `--features mpi`):
//!
//! - a classifier trained on 2 ranks x 8 images per step ends with the weights, logged losses
//!   and top-1 of one process with 16 images per step on the same samples;
//! - MPI: a rank killed (SIGKILL) mid-run ends the job with an error instead of a hang, the last
//!   checkpoint stays loadable, and `--resume` on 2 ranks continues to the uninterrupted run's
//!   weights; a rank that fails with an error names itself and stops the others (both
//!   launchers); a 2-rank checkpoint resumes in one process;
//! - a detector trains on 2 ranks (distributed group sampler, gathered evaluation), and
//!   `nextdet test` on 2 ranks writes exactly the results and numbers of one process.

mod common;

use common::mpi::{mpi_enabled, mpirun, run_with_far_deadline, FAR};
use common::{bin, command, metrics, nextdet, stderr};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

/// How the ranks of a data-parallel run are started.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ranks {
    /// `mpirun -np N nextdet ... --launcher mpi --threads 1`.
    Mpi,
    /// `nextdet ... --launcher threads --threads N`.
    Threads,
}

/// `nextdet ARGS` on `ranks` ranks of one thread each, with `env` exported.
fn dist(how: Ranks, ranks: usize, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut all = args.to_vec();
    match how {
        Ranks::Mpi => {
            all.extend(["--launcher", "mpi", "--threads", "1"]);
            run_with_far_deadline(mpirun(ranks, env, &bin(), &all), FAR)
        }
        Ranks::Threads => {
            let n = ranks.to_string();
            all.extend(["--launcher", "threads", "--threads", &n]);
            command(&all).envs(env.iter().copied()).output().expect("run nextdet")
        }
    }
}

/// Whether the tests for `how` run in this build.
fn enabled(how: Ranks, test: &str) -> bool {
    how == Ranks::Threads || mpi_enabled(test)
}

fn single(args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--threads", "1"]);
    nextdet(&all)
}

/// A tiny ConvNeXt classifier without Mixup/CutMix or stochastic depth (whose draws are per
/// batch or per model), with random crops, RandAugment and random erasing (per image).
fn cls_config(dir: &Path, data: &Path, batch: usize, max_epochs: usize) -> PathBuf {
    let text = format!(
        "model:\n  type: ImageClassifier\n  backbone: {{type: ConvNeXt, depths: [1, 1, 1, 1], dims: [8, 16, 24, 32]}}\n  \
         num_classes: 5\ndata:\n  train:\n    type: ImageFolder\n    root: {train}\n    batch_size: {batch}\n    \
         transform: {{input_size: 32, scale: [0.5, 1.0], auto_augment: rand-m9-mstd0.5-inc1, reprob: 0.25}}\n    \
         label_smoothing: 0.1\n    workers: 1\n  test:\n    type: ImageFolder\n    root: {val}\n    batch_size: 3\n    \
         transform: {{input_size: 32, crop_pct: 1.0}}\n\
         optimizer: {{type: AdamW, lr: 2.0e-3, weight_decay: 0.05, paramwise: {{type: NoDecayNormBias}}}}\n\
         lr_config: {{policy: cosine, min_lr: 1.0e-5, warmup_steps: 2}}\n\
         runner: {{max_epochs: {max_epochs}, log_interval: 1, ema: 0.9, seed: 3}}\n",
        train = data.join("train").display(),
        val = data.join("val").display(),
    );
    let path = dir.join(format!("cls_b{batch}_e{max_epochs}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let loaded = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    loaded
        .into_iter()
        .map(|(k, t)| {
            let t = t.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap();
            (k, t.to_vec1::<f32>().unwrap())
        })
        .collect()
}

fn max_diff(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> (f32, String) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = (0f32, String::new());
    for (k, va) in a {
        for (x, y) in va.iter().zip(&b[k]) {
            let d = (x - y).abs();
            if d > worst.0 || d.is_nan() {
                worst = (d, k.clone());
            }
        }
    }
    worst
}

fn run_state(path: &Path) -> nextdet_engine::checkpoint::RunState {
    let ckpt = nextdet_engine::checkpoint::load(path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ckpt.run.expect("a run state")
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}\n{}", common::stdout(out), stderr(out));
}

#[test]
fn classification_on_two_mpi_ranks_is_one_process_with_twice_the_batch_and_survives_a_killed_rank() {
    classification_on_two_ranks(Ranks::Mpi);
}

#[test]
fn classification_on_two_thread_ranks_is_one_process_with_twice_the_batch() {
    classification_on_two_ranks(Ranks::Threads);
}

fn classification_on_two_ranks(how: Ranks) {
    if !enabled(how, "classification_on_two_mpi_ranks_is_one_process_with_twice_the_batch") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    // 5 classes x 10 = 50 images: 3 steps of 16 (or 2 x 8) per epoch, 2 left out
    let out =
        nextdet(&["make-shapes", data.to_str().unwrap(), "--task", "classification", "--train", "10", "--val", "2"]);
    ok(&out, "make-shapes");
    let work = |name: &str| tmp.path().join(name);
    let ws = |p: &PathBuf| p.to_str().unwrap().to_string();

    let one = work("one");
    let cfg16 = cls_config(tmp.path(), &data, 16, 2);
    ok(&single(&["train", cfg16.to_str().unwrap(), "--work-dir", &ws(&one)]), "1 process x 16");
    let two = work("two");
    let cfg8 = cls_config(tmp.path(), &data, 8, 2);
    ok(&dist(how, 2, &[], &["train", cfg8.to_str().unwrap(), "--work-dir", &ws(&two)]), "2 ranks x 8");

    // the same weights, optimizer state and EMA after 6 steps
    let (a, b) = (tensors(&one.join("epoch_2.safetensors")), tensors(&two.join("epoch_2.safetensors")));
    let (d, name) = max_diff(&a, &b);
    assert!(d <= 1e-5, "2 ranks x 8 differ from 1 process x 16 by {d} at {name}");
    eprintln!("2 ranks x 8 against 1 process x 16 after 6 steps: max |difference| {d} ({name})");
    assert_eq!(run_state(&two.join("epoch_2.safetensors")).world_size, 2);
    // the logged losses are the mean over the ranks: the one-process batch's loss
    let (la, lb) = (metrics(&one), metrics(&two));
    assert_eq!(la.len(), lb.len(), "one metrics.jsonl, written by rank 0 only");
    for (x, y) in la.iter().zip(&lb) {
        for key in ["loss", "loss_cls", "top1", "top5"] {
            if let (Some(p), Some(q)) = (x[key].as_f64(), y[key].as_f64()) {
                assert!((p - q).abs() <= 1e-5 * p.abs().max(1.0), "{key}: {x} vs {y}");
            }
        }
    }
    assert!(la.iter().filter(|v| v["mode"] == "val").count() == 2);

    // a rank that fails with an error names itself and stops the other
    let failed = work("failed");
    let out =
        dist(how, 2, &[("NEXTDET_FAULT", "1:2:error")], &["train", cfg8.to_str().unwrap(), "--work-dir", &ws(&failed)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("rank 1: error:") && err.contains("injected fault"), "{err}");
    if how == Ranks::Threads {
        // a killed thread is a killed process: the rest is for ranks as processes
        return;
    }

    // rank 1 killed in epoch 2: the job ends with an error, no hang; epoch 1's checkpoint loads
    let killed = work("killed");
    let out =
        dist(how, 2, &[("NEXTDET_FAULT", "1:5:kill")], &["train", cfg8.to_str().unwrap(), "--work-dir", &ws(&killed)]);
    assert!(!out.status.success(), "a killed rank must fail the job: {}", stderr(&out));
    assert!(!killed.join("epoch_2.safetensors").exists());
    assert_eq!(run_state(&killed.join("latest.safetensors")).epoch, 1);
    // --resume on 2 ranks continues to the uninterrupted run's weights
    ok(&dist(how, 2, &[], &["train", cfg8.to_str().unwrap(), "--work-dir", &ws(&killed), "--resume"]), "resume");
    let (d, name) = max_diff(&b, &tensors(&killed.join("epoch_2.safetensors")));
    assert_eq!(d, 0.0, "resumed run differs from the uninterrupted one at {name}");

    // a 2-rank epoch checkpoint resumes in one process
    let cfg8_3 = cls_config(tmp.path(), &data, 8, 3);
    ok(&single(&["train", cfg8_3.to_str().unwrap(), "--work-dir", &ws(&killed), "--resume"]), "resume on 1 rank");
    assert_eq!(run_state(&killed.join("epoch_3.safetensors")).world_size, 1);
}

#[test]
fn detection_trains_on_two_mpi_ranks_and_its_distributed_test_is_the_single_process_test() {
    detection_on_two_ranks(Ranks::Mpi);
}

#[test]
fn detection_trains_on_two_thread_ranks_and_its_distributed_test_is_the_single_process_test() {
    detection_on_two_ranks(Ranks::Threads);
}

fn detection_on_two_ranks(how: Ranks) {
    if !enabled(how, "detection_trains_on_two_mpi_ranks_and_its_distributed_test_is_the_single_process_test") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    let out = nextdet(&["make-shapes", data.to_str().unwrap(), "--task", "detection", "--train", "4", "--val", "3"]);
    ok(&out, "make-shapes");
    let cfg = common::write_tiny_detector_config(tmp.path(), &data, 1);
    let cfg_s = cfg.to_str().unwrap();
    let work = tmp.path().join("work");
    let opts = ["--cfg-options", "data.samples_per_gpu=1", "model.roi_head.test.score_thr=0.0"];
    let mut args = vec!["train", cfg_s, "--work-dir", work.to_str().unwrap()];
    args.extend(opts);
    ok(&dist(how, 2, &[], &args), "2-rank detection training");
    let lines = metrics(&work);
    assert_eq!(lines.iter().filter(|v| v["mode"] == "train").count(), 2, "4 images / (2 ranks x 1) = 2 steps");
    let val = lines.iter().find(|v| v["mode"] == "val").expect("a gathered evaluation").clone();
    let ckpt = work.join("epoch_1.safetensors");

    let results = |name: &str| tmp.path().join(name);
    let test = |ranks: usize, out: &Path| {
        let mut args = vec!["test", cfg_s, ckpt.to_str().unwrap(), "--json", "--out", out.to_str().unwrap()];
        args.extend(opts);
        let o = if ranks == 1 { single(&args) } else { dist(how, ranks, &[], &args) };
        ok(&o, &format!("test on {ranks} rank(s)"));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let a = test(1, &results("one.json"));
    let b = test(2, &results("two.json"));
    assert_eq!(a["images"], 3);
    assert_eq!(a["metrics"], b["metrics"], "COCO box and mask numbers");
    for kind in ["bbox", "segm"] {
        let x = std::fs::read(results(&format!("one.{kind}.json"))).unwrap();
        let y = std::fs::read(results(&format!("two.{kind}.json"))).unwrap();
        assert!(x.len() > 2, "{kind}: no detections to compare");
        assert!(x == y, "{kind} results differ between 1 and 2 ranks");
    }
    for (kind, key) in [("bbox", "bbox_mAP"), ("segm", "segm_mAP")] {
        let tested = a["metrics"][kind]["stats"][0].as_f64().unwrap();
        assert_eq!(val[key].as_f64(), Some(tested), "{key}: the evaluation during training is the 1-process test");
    }
}
