//! The `data` section of a classification config, one type for every command: `train` (an
//! ImageFolder with the ConvNeXt training transform, Mixup/CutMix, label smoothing), `test` (an
//! ImageFolder with the evaluation transform) and the class names.
//!
//! ```yaml
//! data:
//!   class_names: imagenet1k                 # or a text file, one name per line
//!   train:
//!     type: ImageFolder
//!     root: data/imagenet/train
//!     batch_size: 128
//!     transform: {input_size: 224}          # ConvNeXt's training transform defaults
//!     mixup: {mixup_alpha: 0.8, cutmix_alpha: 1.0}   # optional; absent: no mixing
//!     label_smoothing: 0.1
//!     workers: 0                            # loading threads; 0: the global pool
//!   test: {type: ImageFolder, root: ..., batch_size: 16, transform: {input_size: 224}}
//! ```

use super::builtin::ensure_builtin;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use nextdet_datasets::cls_augment::ClsTrainTransformConfig;
use nextdet_datasets::{load_rgb8, EvalTransform, ImageFolder};
use rayon::prelude::*;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The ImageNet-1k class names, in index order.
const IMAGENET1K_CLASSES: &str = include_str!("../../assets/imagenet1k_classes.txt");

/// `data:` of a classifier config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClsDataConfig {
    /// `imagenet1k` (shipped), or a text file with one class name per line.
    #[serde(default)]
    pub class_names: Option<String>,
    /// The training split.
    #[serde(default)]
    pub train: Option<ClsTrainSplit>,
    /// The evaluation split.
    #[serde(default)]
    pub test: Option<ClsTestSplit>,
}

/// A training split, chosen by its `type` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum ClsTrainSplit {
    /// One folder per class under `root`.
    ImageFolder(TrainFolder),
}

/// `data.train` of type `ImageFolder`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainFolder {
    /// The folder of class folders.
    pub root: PathBuf,
    /// Images per iteration (ConvNeXt's per-GPU `batch_size` times the GPUs; `runner.accumulate`
    /// multiplies it into the batch of one optimizer step).
    pub batch_size: usize,
    /// The training transform.
    #[serde(default)]
    pub transform: ClsTrainTransformConfig,
    /// Mixup/CutMix; absent: none.
    #[serde(default)]
    pub mixup: Option<MixupSection>,
    /// Label smoothing (ConvNeXt's `--smoothing`, also used inside Mixup's targets).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Threads that decode and augment; 0 uses the global pool (`--threads`).
    #[serde(default)]
    pub workers: usize,
}

fn d_mixup_alpha() -> f64 {
    0.8
}
fn d_one() -> f64 {
    1.0
}
fn d_half() -> f64 {
    0.5
}
fn d_true() -> bool {
    true
}

/// `data.train.mixup`: timm's `Mixup` settings (ConvNeXt's defaults); the smoothing and the class
/// count come from the split and the model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixupSection {
    /// Beta parameter of Mixup (0: off).
    #[serde(default = "d_mixup_alpha")]
    pub mixup_alpha: f64,
    /// Beta parameter of CutMix (0: off).
    #[serde(default = "d_one")]
    pub cutmix_alpha: f64,
    /// Probability of mixing a batch at all.
    #[serde(default = "d_one")]
    pub prob: f64,
    /// Probability of CutMix instead of Mixup when both are on.
    #[serde(default = "d_half")]
    pub switch_prob: f64,
    /// Correct the CutMix ratio for the clipped box.
    #[serde(default = "d_true")]
    pub correct_lam: bool,
}

/// An evaluation split, chosen by its `type` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum ClsTestSplit {
    /// One folder per class under `root`.
    ImageFolder(TestFolder),
}

fn d_test_batch() -> usize {
    16
}

/// `data.test` of type `ImageFolder`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFolder {
    /// The folder of class folders.
    pub root: PathBuf,
    /// Images per evaluation batch.
    #[serde(default = "d_test_batch")]
    pub batch_size: usize,
    /// The evaluation transform.
    pub transform: EvalTransform,
}

impl ClsDataConfig {
    /// The evaluation transform: the test split's, else ConvNeXt's at 224.
    pub fn eval_transform(&self) -> Result<EvalTransform> {
        let t = match &self.test {
            Some(ClsTestSplit::ImageFolder(split)) => split.transform.clone(),
            None => EvalTransform::new(224),
        };
        t.validate().context("data.test.transform")?;
        Ok(t)
    }

    /// The class names: `class_names` when given (their count must be `num_classes`), else
    /// `class_<i>`.
    pub fn class_names(&self, num_classes: usize) -> Result<Vec<String>> {
        let names: Vec<String> = match self.class_names.as_deref() {
            None => return Ok((0..num_classes).map(|i| format!("class_{i}")).collect()),
            Some("imagenet1k") => IMAGENET1K_CLASSES.lines().map(str::to_string).collect(),
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading class names from {path}"))?
                .lines()
                .map(str::to_string)
                .collect(),
        };
        if names.len() != num_classes {
            bail!(
                "data.class_names `{}` has {} names but the model has {num_classes} classes",
                self.class_names.as_deref().unwrap_or(""),
                names.len()
            );
        }
        Ok(names)
    }
}

/// Opens an `ImageFolder` split (the built-in shapes set is generated on first use) and checks
/// its class count against the model's.
pub fn open_folder(root: &Path, key: &str, num_classes: usize) -> Result<ImageFolder> {
    ensure_builtin(root)?;
    let folder = ImageFolder::open(root).with_context(|| format!("data.{key}.root"))?;
    if folder.classes().len() != num_classes {
        bail!(
            "data.{key}.root {}: {} class folders, but model.num_classes is {num_classes}",
            root.display(),
            folder.classes().len()
        );
    }
    Ok(folder)
}

/// Decodes images and applies `f` to each in parallel (in `pool` when given), in order.
pub fn load_parallel<T: Send>(
    pool: Option<&rayon::ThreadPool>,
    paths: &[&Path],
    f: impl Fn(usize, &Path) -> Result<T> + Sync + Send,
) -> Result<Vec<T>> {
    let work = || paths.par_iter().enumerate().map(|(j, p)| f(j, p)).collect::<Result<Vec<T>>>();
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// Stacks `[3, H, W]` buffers into one `[N, 3, H, W]` tensor.
pub fn stack(buffers: Vec<Vec<f32>>, shape: [usize; 3]) -> Result<Tensor> {
    let n = buffers.len();
    let flat: Vec<f32> = buffers.into_iter().flatten().collect();
    Ok(Tensor::from_vec(flat, (n, shape[0], shape[1], shape[2]), &Device::Cpu)?)
}

/// Decodes and transforms image files with the evaluation transform into one batch.
pub fn eval_batch(pool: Option<&rayon::ThreadPool>, paths: &[&Path], transform: &EvalTransform) -> Result<Tensor> {
    let buffers = load_parallel(pool, paths, |_, path| {
        let img = load_rgb8(path)?;
        transform.apply(&img).with_context(|| format!("{}: evaluation transform", path.display()))
    })?;
    stack(buffers, transform.output_shape())
}
