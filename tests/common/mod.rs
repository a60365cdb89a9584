//! Helpers the end-to-end test files share: running the built `nextdet` binary from the
//! repository root and reading what it wrote. Each test file is its own crate and uses a part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root, where the binary runs (relative config paths resolve from here).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `nextdet ARGS` from the repository root.
pub fn nextdet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nextdet")).args(args).current_dir(root()).output().expect("run nextdet")
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
