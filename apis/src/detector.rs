//! Detection inference as a library call, mmdetection's `init_detector` / `inference_detector`:
//! a detector built from a config with its weights, run on an image or a whole split, and the
//! COCO evaluation of its detections.

use crate::data::detection::{batch_images, Pipeline};
use crate::data::{DetData, DetDataConfig};
use crate::progress::progress_bar;
use crate::weights::build_with_checkpoint;
use anyhow::{bail, Result};
use nextdet_datasets::collate::{collate, DetBatch};
use nextdet_datasets::{load_rgb8_with, DecodeConvention, DetSample, ImageMeta, RgbImage};
use nextdet_engine::config::Config;
use nextdet_evaluation::{CocoEvaluator, CocoStats, Detections, IouType};
use nextdet_heads::InstanceResult;
use nextdet_models::{Model, TwoStageDetector};
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// A detector with its weights, its test pipeline and its class names.
pub struct Detector {
    model: Box<TwoStageDetector>,
    pipeline: Pipeline,
    class_names: Vec<String>,
}

/// Builds the detector `cfg` describes and loads `checkpoint` (ours or a published mmdetection
/// file) strictly: a checkpoint that does not fit is an error. The test pipeline is the one of
/// `data.test` (or `data.val`).
pub fn init_detector(cfg: &Config, checkpoint: &Path) -> Result<Detector> {
    crate::config::apply_precision(cfg)?;
    let Model::Detector(model) = build_with_checkpoint(cfg, checkpoint)? else {
        bail!(
            "{}: not a detector config (model.type must be MaskRCNN or CascadeRCNN)",
            crate::config::config_file(cfg)
        );
    };
    let data: DetDataConfig = cfg.section("data")?;
    let pipeline = Pipeline::of(data.test_split()?)?;
    let num_classes = crate::config::model_config(cfg)?.detector().map_or(0, |(c, _)| c.roi_head.num_classes());
    let class_names = match nextdet_backbones::weights::checkpoint_class_names(checkpoint) {
        Some(names) if names.len() == num_classes => names,
        _ => class_names(cfg, &data)?,
    };
    Ok(Detector { model, pipeline, class_names })
}

/// Class names for drawing and listing when the checkpoint carries none (an mmdetection `.pth`
/// carries `meta.CLASSES`): `classes:` in the config (the COCO dataset config lists COCO's 80),
/// else the test split's categories when its annotation file exists, else none (labels are
/// shown as numbers).
fn class_names(cfg: &Config, data: &DetDataConfig) -> Result<Vec<String>> {
    if let Some(names) = cfg.section::<Option<Vec<String>>>("classes")? {
        return Ok(names);
    }
    let split = data.test_split()?;
    if split.ann_file.exists() {
        let opts = nextdet_datasets::coco::CocoOptions { with_masks: false, ..Default::default() };
        let ds = nextdet_datasets::coco::CocoDataset::open(&split.ann_file, &split.img_prefix, opts)?;
        return Ok(ds.class_names().to_vec());
    }
    Ok(Vec::new())
}

impl Detector {
    /// The detections of one RGB image, in its pixels (masks as COCO run-length encodings).
    pub fn predict(&self, image: &RgbImage) -> Result<Detections> {
        let meta = ImageMeta::new(0, PathBuf::new(), (image.height(), image.width()));
        let sample = DetSample {
            image: image.clone(),
            boxes: vec![],
            labels: vec![],
            masks: vec![],
            ignore_boxes: vec![],
            meta,
        };
        let sample = self.pipeline.transforms.apply(sample, &mut rand::rngs::StdRng::seed_from_u64(0))?;
        let batch = collate(vec![sample], &self.pipeline.norm, self.pipeline.size_divisor)?;
        Ok(self.predict_batch(&batch)?.remove(0))
    }

    /// The detections of an image file, decoded as mmdetection decodes it (cv2's conventions:
    /// a JPEG's EXIF orientation applied).
    pub fn predict_file(&self, path: &Path) -> Result<Detections> {
        self.predict(&load_rgb8_with(path, DecodeConvention::OpenCv)?)
    }

    /// The detections of a collated batch, one per image, with each image's `image_id`.
    pub fn predict_batch(&self, batch: &DetBatch) -> Result<Vec<Detections>> {
        predict_batch(&self.model, batch)
    }

    /// The class names (empty when the config and its dataset name none).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The model.
    pub fn model(&self) -> &TwoStageDetector {
        &self.model
    }
}

/// A head's result as COCO detections of image `image_id` (masks run-length encoded).
pub fn to_detections(result: &InstanceResult, image_id: u64) -> Detections {
    Detections {
        image_id,
        boxes: result.boxes.clone(),
        scores: result.scores.clone(),
        labels: result.labels.clone(),
        masks: result.masks.as_ref().map(|ms| ms.iter().map(|m| m.to_rle()).collect()),
    }
}

/// The detections of a collated batch, one per image.
fn predict_batch(model: &TwoStageDetector, batch: &DetBatch) -> Result<Vec<Detections>> {
    let metas: Vec<ImageMeta> = batch.samples.iter().map(|s| s.meta.clone()).collect();
    let results = model.predict(&batch_images(batch)?, &metas)?;
    Ok(results.iter().zip(&metas).map(|(r, m)| to_detections(r, m.image_id)).collect())
}

/// Runs the detector over a split, image by image in dataset order, with a progress bar.
pub fn predict_dataset(model: &TwoStageDetector, data: &DetData, workers: usize) -> Result<Vec<Detections>> {
    let batch_size = data.split.samples_per_gpu.unwrap_or(1).max(1);
    let loader = data.loader(batch_size, workers, false, 0)?;
    let bar = progress_bar(data.dataset.len(), "test");
    let mut out = Vec::with_capacity(data.dataset.len());
    for batch in loader.epoch(0) {
        let batch = batch.map_err(|e| anyhow::anyhow!("{e}"))?;
        out.extend(predict_batch(model, &batch)?);
        bar.inc(batch.samples.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// COCO evaluation of a split's detections, as mmdetection 2.11 evaluates: the evaluator (to
/// write results files) and the 12 numbers with the per-category AP per IoU type.
pub fn evaluate_detections(
    ann_file: &Path,
    dets: &[Detections],
    iou_types: &[IouType],
) -> Result<(CocoEvaluator, Vec<(IouType, CocoStats)>)> {
    let mut evaluator = CocoEvaluator::new(ann_file, iou_types)?;
    evaluator.extend(dets)?;
    let stats = evaluator.evaluate()?;
    Ok((evaluator, stats))
}

/// The metrics mmdetection logs for one evaluation: `bbox_mAP`, `bbox_mAP_50`, ... (the first
/// is the one a run tracks as best).
pub fn metric_list(stats: &[(IouType, CocoStats)]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (t, s) in stats {
        for (name, key) in [("mAP", 0), ("mAP_50", 1), ("mAP_75", 2), ("mAP_s", 3), ("mAP_m", 4), ("mAP_l", 5)] {
            out.push((format!("{t}_{name}"), s.stats[key]));
        }
    }
    out
}
