//! Detect the objects of an image with a trained detector, as a library call (mmdetection's
//! `init_detector` + `inference_detector`):
//! `cargo run --release --example infer_image -- CONFIG CHECKPOINT IMAGE`.

use anyhow::{bail, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [config, checkpoint, image] = args.as_slice() else { bail!("usage: infer_image CONFIG CHECKPOINT IMAGE") };
    let cfg = nextdet_apis::load_config(config, &[])?;
    let detector = nextdet_apis::init_detector(&cfg, checkpoint)?;
    let dets = detector.predict_file(image)?;
    for ((b, score), &label) in dets.boxes.iter().zip(&dets.scores).zip(&dets.labels) {
        let name = detector.class_names().get(label).map_or("?", String::as_str);
        println!("{name} {score:.3} [{:.1}, {:.1}, {:.1}, {:.1}]", b[0], b[1], b[2], b[3]);
    }
    Ok(())
}
