//! Helpers the end-to-end test files share: running the built `nextdet` binary from the
//! repository root and reading what it wrote. Each test file is its own crate and uses a part.
#![allow(dead_code)]

pub mod mpi;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root, where the binary runs (relative config paths resolve from here).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `nextdet` binary under test: this build's, or the one `NEXTDET_TEST_BIN` names (to show
/// that a test fails on an older build).
pub fn bin() -> PathBuf {
    std::env::var_os("NEXTDET_TEST_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nextdet")), PathBuf::from)
}

/// `nextdet ARGS` from the repository root, not started yet.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(root());
    cmd
}

/// Runs `nextdet ARGS` from the repository root.
pub fn nextdet(args: &[&str]) -> Output {
    command(args).output().expect("run nextdet")
}

/// Runs `nextdet ARGS --threads 2`: training tests pin the pool so their timing and bits do not
/// depend on the machine's core count.
pub fn nextdet_on_two_threads(args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--threads", "2"]);
    nextdet(&all)
}

/// The process's standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The process's standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The records of a run's `metrics.jsonl` in `work`, in order.
pub fn metrics(work: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(work.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The tiny Mask R-CNN of the parity fixtures (5 classes here) on the shapes set at `data`.
pub fn write_tiny_detector_config(dir: &Path, data: &Path, max_epochs: usize) -> PathBuf {
    let base = root().join("tests/configs/detector_tiny_mask_rcnn.yaml");
    let split = |name: &str| {
        format!(
            "{{type: CocoDataset, ann_file: {ann}, img_prefix: {img}, pipeline: [{resize}, {norm}, {{type: Pad, \
             size_divisor: 32}}]}}",
            ann = data.join(format!("annotations/instances_{name}.json")).display(),
            img = data.join(name).display(),
            resize = "{type: Resize, img_scale: [128, 256], keep_ratio: true}",
            norm = "{type: Normalize, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], to_rgb: true}",
        )
    };
    let text = format!(
        "_base_: [{base}]\nmodel:\n  roi_head:\n    bbox_head: {{num_classes: 5}}\n    mask_head: {{num_classes: 5}}\n\
         data:\n  samples_per_gpu: 2\n  workers_per_gpu: 1\n  train: {train}\n  val: {val}\n  test: {val}\n\
         optimizer: {{type: AdamW, lr: 1.0e-3, weight_decay: 0.05}}\n\
         lr_config: {{policy: step, warmup: linear, warmup_iters: 2, warmup_ratio: 0.1, step: [2]}}\n\
         runner: {{max_epochs: {max_epochs}, log_interval: 1, eval_interval: 1, checkpoint_interval: 1, seed: 3}}\n",
        base = base.display(),
        train = split("train"),
        val = split("val"),
    );
    let path = dir.join("tiny_det.yaml");
    std::fs::write(&path, text).unwrap();
    path
}
