//! The library examples run as a user runs them: `train_config` trains a tiny Mask R-CNN on a
//! generated shapes set through `nextdet_apis::train` with a hook of its own, then
//! `infer_image` loads the checkpoint it wrote with `nextdet_apis::init_detector` and lists the
//! detections of an image.

mod common;

use common::{nextdet, stderr, stdout, write_tiny_detector_config};
use std::path::PathBuf;
use std::process::Command;

/// The built example `name` (cargo builds the examples with the tests, next to them).
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path: PathBuf = profile_dir.join("examples").join(name);
    assert!(path.is_file(), "{} is not built (`cargo test` builds the examples; a filtered run needs `cargo build --release --examples` first)", path.display());
    let mut cmd = Command::new(path);
    cmd.current_dir(common::root()).env("RAYON_NUM_THREADS", "2");
    cmd
}

#[test]
fn the_examples_train_a_detector_and_run_it_on_an_image() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    let out = nextdet(&["make-shapes", data.to_str().unwrap(), "--task", "detection", "--train", "4", "--val", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg = write_tiny_detector_config(tmp.path(), &data, 1);
    let work = tmp.path().join("work");

    let out = example("train_config").arg(&cfg).arg(&work).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let steps = text.lines().filter(|l| l.starts_with("epoch 1 iter") && l.contains("loss")).count();
    assert_eq!(steps, 2, "the hook prints one line per optimizer step: {text}");
    let ckpt = work.join("epoch_1.safetensors");
    assert!(text.contains(&format!("trained: {}", ckpt.display())), "{text}");

    let image = data.join("val/000001.png");
    let out = example("infer_image").arg(&cfg).arg(&ckpt).arg(&image).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let names = ["circle", "square", "triangle", "star", "hexagon"];
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "a randomly initialised head still keeps some boxes above 0.05");
    for line in lines {
        let name = line.split_whitespace().next().unwrap();
        assert!(names.contains(&name) && line.contains('['), "{line}");
    }

    let out = example("infer_image").arg(&cfg).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("usage"), "{}", stderr(&out));
}
