//! `nextdet infer CONFIG CKPT IMAGE...`: runs a detector on image files and writes, per image,
//! a PNG with boxes, class names, scores and mask overlays and a JSON with the detections.

use crate::common::{build_with_checkpoint, load_config};
use crate::detection::{test_metas, to_detections, DetDataConfig};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use nextdet_datasets::collate::collate;
use nextdet_datasets::draw::{draw_detections, save_png, DrawItem};
use nextdet_datasets::transforms::DetPipeline;
use nextdet_datasets::{load_rgb8, DetSample, ImageMeta};
use nextdet_engine::config::Config;
use nextdet_evaluation::Detections;
use nextdet_models::Model;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// Class names for drawing: `classes:` in the config, else the test split's categories when its
/// annotation file exists, else empty (labels are drawn as numbers).
pub fn class_names(cfg: &Config) -> Result<Vec<String>> {
    if let Some(names) = cfg.section::<Option<Vec<String>>>("classes")? {
        return Ok(names);
    }
    let data: DetDataConfig = cfg.section("data")?;
    if let Some(split) = data.test.as_ref().or(data.val.as_ref()) {
        if split.ann_file.exists() {
            let opts = nextdet_datasets::coco::CocoOptions { with_masks: false, ..Default::default() };
            let ds = nextdet_datasets::coco::CocoDataset::open(&split.ann_file, &split.img_prefix, opts)?;
            return Ok(ds.class_names().to_vec());
        }
    }
    Ok(Vec::new())
}

/// Draws `dets` over the image at `image` and writes the PNG to `out`.
pub fn draw_image(image: &Path, dets: &Detections, names: &[String], score_thr: f32, out: &Path) -> Result<()> {
    let img = load_rgb8(image)?;
    let masks: Vec<Vec<u8>> = dets.masks.iter().flatten().map(|m| m.to_row_major_mask()).collect();
    let items: Vec<DrawItem> = (0..dets.boxes.len())
        .map(|i| DrawItem {
            bbox: dets.boxes[i],
            label: dets.labels[i],
            score: dets.scores[i],
            mask: masks.get(i).map(Vec::as_slice),
        })
        .collect();
    save_png(&draw_detections(&img, &items, names, score_thr), out)?;
    Ok(())
}

/// Runs the detector on each image and writes `<out_dir>/<stem>.png` and `<stem>.json`.
pub fn run(
    config: &Path,
    checkpoint: &Path,
    images: &[PathBuf],
    out_dir: &Path,
    score_thr: f32,
    json: bool,
    overrides: &[String],
) -> Result<()> {
    let cfg = load_config(config, overrides)?;
    let Model::Detector(model) = build_with_checkpoint(&cfg, Some(checkpoint))? else {
        bail!("{}: `infer` needs a detector config; use `classify` for classifiers", config.display());
    };
    let data: DetDataConfig = cfg.section("data")?;
    let split = data.test.as_ref().or(data.val.as_ref()).context("the config has no data.test split (its pipeline)")?;
    let pipeline = DetPipeline::new(&split.pipeline)?;
    let norm = pipeline.normalization().context("the test pipeline needs a Normalize step")?;
    let names = class_names(&cfg)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut all = Vec::new();
    for (i, path) in images.iter().enumerate() {
        let img = load_rgb8(path)?;
        let meta = ImageMeta::new(i as u64, path.clone(), (img.height(), img.width()));
        let sample = DetSample { image: img, boxes: vec![], labels: vec![], masks: vec![], ignore_boxes: vec![], meta };
        let sample = pipeline.apply(sample, &mut rand::rngs::StdRng::seed_from_u64(0))?;
        let batch = collate(vec![sample], &norm, pipeline.size_divisor().unwrap_or(1))?;
        let [n, c, h, w] = batch.shape;
        let input = Tensor::from_slice(&batch.images, (n, c, h, w), &Device::Cpu)?;
        let result = model.predict(&input, &test_metas(&batch))?;
        let dets = to_detections(&result[0], i as u64);
        let stem = path.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
        draw_image(path, &dets, &names, score_thr, &out_dir.join(format!("{stem}.png")))?;
        let kept: Vec<usize> = (0..dets.scores.len()).filter(|&k| dets.scores[k] >= score_thr).collect();
        let doc = serde_json::json!({
            "image": path,
            "detections": kept.iter().map(|&k| serde_json::json!({
                "bbox": dets.boxes[k], "score": dets.scores[k], "label": dets.labels[k],
                "class": names.get(dets.labels[k]),
                "segmentation": dets.masks.as_ref().map(|m| m[k].to_coco_json()),
            })).collect::<Vec<_>>(),
        });
        let json_path = out_dir.join(format!("{stem}.json"));
        std::fs::write(&json_path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", json_path.display()))?;
        eprintln!("{}: {} detections >= {score_thr}, drawn to {}", path.display(), kept.len(), out_dir.display());
        all.push(doc);
    }
    if json {
        println!("{}", serde_json::Value::Array(all));
    }
    Ok(())
}
