//! `infer` on image files: each image's detections drawn into a PNG and listed in a JSON, named
//! by [`crate::visualize`]'s rule so that no output replaces an input.

use crate::detector::Detector;
use crate::visualize::{draw_to_file, output_names, relative_to_common_root};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// What `infer` wrote for one image.
#[derive(Clone, Debug)]
pub struct InferRecord {
    /// The input image.
    pub image: PathBuf,
    /// The drawing.
    pub drawing: PathBuf,
    /// The JSON of the detections.
    pub json_path: PathBuf,
    /// The detections at or above the score threshold, as written to the JSON.
    pub json: serde_json::Value,
}

/// Runs `detector` on each image and writes the drawing and the JSON of its detections with a
/// score of at least `score_thr` into `out_dir`; `on_image` is called after each image.
pub fn infer_files(
    detector: &Detector,
    images: &[PathBuf],
    out_dir: &Path,
    score_thr: f32,
    mut on_image: impl FnMut(&InferRecord),
) -> Result<Vec<InferRecord>> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let names = output_names(images, &relative_to_common_root(images), out_dir);
    let classes = detector.class_names();
    let mut records = Vec::with_capacity(images.len());
    for (path, out) in images.iter().zip(names) {
        let dets = detector.predict_file(path)?;
        draw_to_file(path, &dets, classes, score_thr, &out.drawing)?;
        let kept: Vec<usize> = (0..dets.scores.len()).filter(|&k| dets.scores[k] >= score_thr).collect();
        let json = serde_json::json!({
            "image": path,
            "detections": kept.iter().map(|&k| serde_json::json!({
                "bbox": dets.boxes[k], "score": dets.scores[k], "label": dets.labels[k],
                "class": classes.get(dets.labels[k]),
                "segmentation": dets.masks.as_ref().map(|m| m[k].to_coco_json()),
            })).collect::<Vec<_>>(),
        });
        std::fs::write(&out.detections, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", out.detections.display()))?;
        let record = InferRecord { image: path.clone(), drawing: out.drawing, json_path: out.detections, json };
        on_image(&record);
        records.push(record);
    }
    Ok(records)
}
