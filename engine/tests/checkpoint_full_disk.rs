//! A full disk during a checkpoint write: the previous checkpoint survives, nothing half-written
//! is left behind, and the error is one line naming the file.
//!
//! The disk is made "full" for a child process (this test binary run again) with a file-size
//! limit (`RLIMIT_FSIZE`) and `SIGXFSZ` ignored, so that a write past the limit fails with
//! `EFBIG` as a write to a full disk fails with `ENOSPC`.

use candle_core::{Device, Tensor};
use nextdet_engine::checkpoint::{self, Checkpoint, CheckpointDir, RunState};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// Set in the child: the folder to write into.
const CHILD_DIR: &str = "NEXTDET_TEST_FULL_DISK_DIR";
/// The child's file-size limit in bytes.
const LIMIT: u64 = 64 * 1024;

fn checkpoint(len: usize, value: f32, epoch: usize) -> Checkpoint {
    let weights = HashMap::from([("w".to_string(), Tensor::full(value, len, &Device::Cpu).unwrap())]);
    Checkpoint { weights, run: Some(RunState { epoch, ..Default::default() }), ..Default::default() }
}

/// In the child: limit the file size, then write epoch 2, far larger than the limit, over the
/// folder that holds epoch 1; print the error and exit 3 (0 would mean the write succeeded).
fn child(dir: &Path) -> ! {
    // SAFETY: plain libc calls on this process with valid arguments.
    unsafe {
        let limit = libc::rlimit { rlim_cur: LIMIT, rlim_max: LIMIT };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let ckpts = CheckpointDir::new(dir, 1);
    match ckpts.save_epoch(2, &checkpoint(1 << 20, 2.0, 2)) {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            println!("ERROR:{e}");
            std::process::exit(3)
        }
    }
}

#[test]
fn a_full_disk_leaves_the_previous_checkpoint_intact() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path(), 1);
    let first = ckpts.save_epoch(1, &checkpoint(1024, 1.0, 1)).unwrap();
    let before = std::fs::read(&first).unwrap();

    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_full_disk_leaves_the_previous_checkpoint_intact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "the write should fail: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("ERROR:").map(|(_, e)| e))
        .unwrap_or_else(|| panic!("the child prints its error: {stdout}"));
    let target = dir.path().join("epoch_2.safetensors");
    assert_eq!(
        line,
        format!(
            "{}: cannot write the checkpoint (the file already there, if any, is unchanged): File too large (os error 27)",
            target.display()
        )
    );

    // The previous checkpoint and `latest` are untouched and load; nothing else was left.
    assert_eq!(std::fs::read(&first).unwrap(), before);
    for path in [first, ckpts.latest_path()] {
        let loaded = checkpoint::load(&path, &Device::Cpu).unwrap();
        assert_eq!(loaded.run.unwrap().epoch, 1);
        assert_eq!(loaded.weights["w"].to_vec1::<f32>().unwrap(), vec![1.0; 1024]);
    }
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["epoch_1.safetensors", "latest.safetensors"]);
}

#[test]
fn a_checkpoint_that_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = checkpoint::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().ends_with(": not a regular file"), "{err}");
}

/// `/dev/zero` as a checkpoint (`--resume /dev/zero`) is refused before it is read.
#[test]
fn an_endless_checkpoint_is_refused() {
    if Path::new("/dev/zero").exists() {
        let err = checkpoint::load(Path::new("/dev/zero"), &Device::Cpu).unwrap_err();
        assert_eq!(err.to_string(), "/dev/zero: not a regular file");
    }
}
