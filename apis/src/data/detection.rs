//! The `data` section of a detection config (mmdetection's shape) and what it builds: COCO
//! datasets with their pipelines, loaders of collated batches, and the tensors and targets the
//! detector takes.

use super::builtin::ensure_builtin;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use nextdet_datasets::coco::{CocoDataset, CocoOptions};
use nextdet_datasets::collate::{collate, DetBatch};
use nextdet_datasets::loader::{Loader, LoaderConfig};
use nextdet_datasets::transforms::{DetPipeline, DetTransformConfig, Normalization, TransformError};
use nextdet_heads::ImageTargets;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

fn two() -> usize {
    2
}

/// `data: {samples_per_gpu, workers_per_gpu, train, val, test}`.
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

impl DetDataConfig {
    /// The split `test` evaluates: `data.test`, else `data.val`.
    pub fn test_split(&self) -> Result<&CocoSplit> {
        self.test.as_ref().or(self.val.as_ref()).context("the config has no data.test or data.val split")
    }
}

/// The dataset types of a detection split.
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

/// A split's pipeline with what collating needs from it.
#[derive(Clone)]
pub struct Pipeline {
    /// The transforms.
    pub transforms: Arc<DetPipeline>,
    /// Its `Normalize` step.
    pub norm: Normalization,
    /// Its `Pad` divisor (1 without padding).
    pub size_divisor: usize,
}

impl Pipeline {
    /// The pipeline of `split`, which must normalize.
    pub fn of(split: &CocoSplit) -> Result<Self> {
        let transforms = DetPipeline::new(&split.pipeline)?;
        let norm = transforms
            .normalization()
            .with_context(|| format!("{}: the pipeline needs a Normalize step", split.ann_file.display()))?;
        let size_divisor = transforms.size_divisor().unwrap_or(1);
        Ok(Self { transforms: Arc::new(transforms), norm, size_divisor })
    }
}

/// A dataset with its pipeline, ready to make loaders.
pub struct DetData {
    /// The annotations and images.
    pub dataset: Arc<CocoDataset>,
    /// The split's transforms.
    pub pipeline: Pipeline,
    /// The split's config.
    pub split: CocoSplit,
}

impl DetData {
    /// Opens a split (training filters images without annotations, as mmdetection does) and
    /// checks that every image file exists before any work starts; the built-in shapes set is
    /// generated on first use.
    pub fn open(split: &CocoSplit, train: bool, with_masks: bool) -> Result<Self> {
        let DatasetType::CocoDataset = split.kind;
        ensure_builtin(&split.ann_file)?;
        let mut opts = if train { CocoOptions::TRAIN } else { CocoOptions::TEST };
        opts.with_masks = with_masks;
        let dataset = CocoDataset::open(&split.ann_file, &split.img_prefix, opts)?;
        dataset.validate_all()?;
        Ok(Self { dataset: Arc::new(dataset), pipeline: Pipeline::of(split)?, split: split.clone() })
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
        let (dataset, transforms) = (self.dataset.clone(), self.pipeline.transforms.clone());
        let load = Arc::new(move |i: usize, rng: &mut rand::rngs::StdRng| -> Result<_, String> {
            let sample = dataset.load(i).map_err(|e| e.to_string())?;
            let mut last = String::new();
            for _ in 0..10 {
                match transforms.apply(sample.clone(), rng) {
                    Ok(s) => return Ok(s),
                    Err(e @ TransformError::Rejected { .. }) => last = e.to_string(),
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err(format!("{last} (10 tries)"))
        });
        let (norm, divisor) = (self.pipeline.norm, self.pipeline.size_divisor);
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

/// A batch's images as one `[N, 3, H, W]` tensor.
pub fn batch_images(batch: &DetBatch) -> Result<Tensor> {
    let [n, c, h, w] = batch.shape;
    Ok(Tensor::from_slice(&batch.images, (n, c, h, w), &Device::Cpu)?)
}

/// Each image's ground truth and meta (masks as `u8` `[G, H, W]` at the batch's padded size
/// when `with_masks`).
pub fn batch_targets(batch: &DetBatch, with_masks: bool) -> Result<Vec<ImageTargets>> {
    let [_, _, h, w] = batch.shape;
    let mut targets = Vec::with_capacity(batch.samples.len());
    for s in &batch.samples {
        let masks = if with_masks {
            let mut data = Vec::with_capacity(s.masks.len() * h * w);
            for m in &s.masks {
                if m.width != w || m.height != h {
                    bail!("{}: mask of {}x{} in a batch of {w}x{h}", s.meta.file.display(), m.width, m.height);
                }
                data.extend_from_slice(&m.data);
            }
            Some(Tensor::from_vec(data, (s.masks.len(), h, w), &Device::Cpu)?)
        } else {
            None
        };
        targets.push(ImageTargets {
            boxes: s.boxes.clone(),
            labels: s.labels.clone(),
            ignore_boxes: s.ignore_boxes.clone(),
            masks,
            meta: s.meta.clone(),
        });
    }
    Ok(targets)
}
