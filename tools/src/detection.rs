//! What the detection subcommands share: the `data` section, datasets and loaders built from it,
//! batches turned into tensors and targets, predictions turned into COCO detections, and the
//! evaluation loop used by `nextdet test` and by training's per-epoch evaluation.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use nextdet_datasets::coco::{CocoDataset, CocoOptions};
use nextdet_datasets::collate::{collate, DetBatch};
use nextdet_datasets::loader::{Loader, LoaderConfig};
use nextdet_datasets::transforms::{DetPipeline, DetTransformConfig, Normalization, TransformError};
use nextdet_evaluation::{CocoEvaluator, CocoStats, Detections, IouType, Rle};
use nextdet_heads::{ImageTargets, InstanceResult, TestMeta};
use nextdet_models::TwoStageDetector;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn two() -> usize {
    2
}

/// The `data` section of a detection config (mmdetection's shape).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetDataConfig {
    /// Training images per batch.
    #[serde(default = "two")]
    pub samples_per_gpu: usize,
    /// Loader threads.
    #[serde(default = "two")]
    pub workers_per_gpu: usize,
    /// Training split.
    #[serde(default)]
    pub train: Option<CocoSplit>,
    /// Split evaluated during training.
    #[serde(default)]
    pub val: Option<CocoSplit>,
    /// Split evaluated by `nextdet test` (defaults to `val`).
    #[serde(default)]
    pub test: Option<CocoSplit>,
}

/// The only dataset type for detection so far.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum DatasetType {
    /// COCO instances JSON + an image folder.
    CocoDataset,
}

/// One split: `{type: CocoDataset, ann_file, img_prefix, pipeline}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CocoSplit {
    /// Dataset type.
    #[serde(rename = "type")]
    pub kind: DatasetType,
    /// The annotation JSON.
    pub ann_file: PathBuf,
    /// The folder the JSON's `file_name`s are relative to.
    pub img_prefix: PathBuf,
    /// Transforms after loading (loading images and annotations is implicit).
    pub pipeline: Vec<DetTransformConfig>,
    /// Images per test batch (default 1, as mmdetection's test loader).
    #[serde(default)]
    pub samples_per_gpu: Option<usize>,
}

/// If `path` lies under `data/shapes*`, generates the built-in shapes set there on first use.
fn ensure_builtin(path: &Path) -> Result<()> {
    let mut dir = path;
    while let Some(parent) = dir.parent() {
        let is_shapes = dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("shapes"));
        if is_shapes && parent.file_name().and_then(|n| n.to_str()) == Some("data") {
            if !path.exists() {
                nextdet_datasets::shapes::ensure_detection(dir)?;
            }
            return Ok(());
        }
        dir = parent;
    }
    Ok(())
}

/// A dataset with its pipeline, ready to make loaders.
pub struct DetData {
    /// The annotations and images.
    pub dataset: Arc<CocoDataset>,
    pipeline: Arc<DetPipeline>,
    norm: Normalization,
    size_divisor: usize,
    /// The split's config.
    pub split: CocoSplit,
}

impl DetData {
    /// Opens a split (training filters images without annotations, as mmdetection does) and
    /// checks that every image file exists before any work starts.
    pub fn open(split: &CocoSplit, train: bool, with_masks: bool) -> Result<Self> {
        let DatasetType::CocoDataset = split.kind;
        ensure_builtin(&split.ann_file)?;
        let mut opts = if train { CocoOptions::TRAIN } else { CocoOptions::TEST };
        opts.with_masks = with_masks;
        let dataset = CocoDataset::open(&split.ann_file, &split.img_prefix, opts)?;
        dataset.validate_all()?;
        let pipeline = DetPipeline::new(&split.pipeline)?;
        let norm = pipeline
            .normalization()
            .with_context(|| format!("{}: the pipeline needs a Normalize step", split.ann_file.display()))?;
        let size_divisor = pipeline.size_divisor().unwrap_or(1);
        Ok(Self { dataset: Arc::new(dataset), pipeline: Arc::new(pipeline), norm, size_divisor, split: split.clone() })
    }

    /// A loader of collated batches. Training shuffles and groups by aspect ratio; a sample that
    /// a random crop rejects is redrawn with fresh randomness (mmdetection draws another image).
    pub fn loader(
        &self,
        batch_size: usize,
        workers: usize,
        shuffle: bool,
        seed: u64,
    ) -> Result<Loader<DetBatch, String>> {
        let (dataset, pipeline) = (self.dataset.clone(), self.pipeline.clone());
        let load = Arc::new(move |i: usize, rng: &mut rand::rngs::StdRng| -> Result<_, String> {
            let sample = dataset.load(i).map_err(|e| e.to_string())?;
            let mut last = String::new();
            for _ in 0..10 {
                match pipeline.apply(sample.clone(), rng) {
                    Ok(s) => return Ok(s),
                    Err(e @ TransformError::Rejected { .. }) => last = e.to_string(),
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err(format!("{last} (10 tries)"))
        });
        let (norm, divisor) = (self.norm, self.size_divisor);
        let collate_fn = Arc::new(move |samples| collate(samples, &norm, divisor).map_err(|e| e.to_string()));
        let cfg = LoaderConfig { batch_size, num_workers: workers, prefetch_batches: 2, shuffle, seed };
        let loader = Loader::new(self.dataset.len(), load, collate_fn, cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(if shuffle {
            loader.with_groups(self.dataset.aspect_ratio_flags()).map_err(|e| anyhow::anyhow!("{e}"))?
        } else {
            loader
        })
    }
}

/// The batch's images as `[N, 3, H, W]` and each image's targets (masks as `u8` `[G, H, W]`).
pub fn batch_inputs(batch: &DetBatch, with_masks: bool) -> Result<(Tensor, Vec<ImageTargets>)> {
    let [n, c, h, w] = batch.shape;
    let images = Tensor::from_slice(&batch.images, (n, c, h, w), &Device::Cpu)?;
    let mut targets = Vec::with_capacity(n);
    for s in &batch.samples {
        let masks = if with_masks {
            let mut data = Vec::with_capacity(s.masks.len() * h * w);
            for m in &s.masks {
                if m.width != w || m.height != h {
                    bail!("{}: mask of {}x{} in a batch of {w}x{h}", s.meta.file.display(), m.width, m.height);
                }
                data.extend_from_slice(&m.data);
            }
            Some(Tensor::from_vec(data, (s.masks.len(), h, w), &Device::Cpu)?.to_dtype(DType::U8)?)
        } else {
            None
        };
        targets.push(ImageTargets {
            boxes: s.boxes.clone(),
            labels: s.labels.clone(),
            masks,
            img_size: s.meta.img_size,
        });
    }
    Ok((images, targets))
}

/// What the heads need to map predictions back to each original image.
pub fn test_metas(batch: &DetBatch) -> Vec<TestMeta> {
    batch
        .samples
        .iter()
        .map(|s| TestMeta { img_size: s.meta.img_size, ori_size: s.meta.ori_size, scale_factor: s.meta.scale_factor })
        .collect()
}

/// A head's result as COCO detections of image `image_id` (masks run-length encoded).
pub fn to_detections(result: &InstanceResult, image_id: u64) -> Detections {
    let masks = result.masks.as_ref().map(|ms| {
        ms.iter().map(|m| Rle { height: m.height as u32, width: m.width as u32, counts: m.rle_counts() }).collect()
    });
    Detections {
        image_id,
        boxes: result.boxes.clone(),
        scores: result.scores.clone(),
        labels: result.labels.clone(),
        masks,
    }
}

/// A progress bar for `len` steps with a message.
pub fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(what.to_string());
    bar
}

/// Runs the detector over a split and returns its detections, image by image.
pub fn predict_split(model: &TwoStageDetector, data: &DetData, workers: usize) -> Result<Vec<Detections>> {
    let batch_size = data.split.samples_per_gpu.unwrap_or(1).max(1);
    let loader = data.loader(batch_size, workers, false, 0)?;
    let bar = progress(data.dataset.len(), "test");
    let mut out = Vec::with_capacity(data.dataset.len());
    for batch in loader.epoch(0) {
        let batch = batch.map_err(|e| anyhow::anyhow!("{e}"))?;
        let [n, c, h, w] = batch.shape;
        let images = Tensor::from_slice(&batch.images, (n, c, h, w), &Device::Cpu)?;
        let results = model.predict(&images, &test_metas(&batch))?;
        for (r, s) in results.iter().zip(&batch.samples) {
            out.push(to_detections(r, s.meta.image_id));
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Evaluates detections of a split against its annotation file.
pub fn evaluate(
    ann_file: &Path,
    dets: &[Detections],
    iou_types: &[IouType],
) -> Result<(CocoEvaluator, Vec<(IouType, CocoStats)>)> {
    let mut evaluator = CocoEvaluator::new(ann_file, iou_types)?;
    evaluator.extend(dets)?;
    let stats = evaluator.evaluate()?;
    Ok((evaluator, stats))
}

/// The metrics mmdetection logs for one evaluation: `bbox_mAP`, `bbox_mAP_50`, ... (first is the
/// one a run tracks as best).
pub fn metric_list(stats: &[(IouType, CocoStats)]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (t, s) in stats {
        for (name, key) in [("mAP", 0), ("mAP_50", 1), ("mAP_75", 2), ("mAP_s", 3), ("mAP_m", 4), ("mAP_l", 5)] {
            out.push((format!("{t}_{name}"), s.stats[key]));
        }
    }
    out
}
