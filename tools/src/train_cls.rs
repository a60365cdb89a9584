//! `nextdet train` for image classifiers: the ConvNeXt ImageNet recipe (CNX `main.py`) on any
//! `ImageFolder`.
//!
//! Per iteration the task takes the next `batch_size` images of the epoch's shuffled order
//! (the last incomplete batch is dropped, as CNX's `drop_last=True`), decodes and augments them
//! in parallel with the config's training transform, applies Mixup/CutMix (timm's batch mode)
//! or label smoothing, and scores the logits with soft-target cross-entropy (plain
//! cross-entropy without either), reported as `loss_cls`. After every `runner.eval_interval`
//! epochs it measures top-1 / top-5 on `data.test` with the evaluation transform.
//!
//! All randomness comes from [`iteration_seed`]: the epoch's order from `(seed, epoch)`, each
//! image's augmentation and the batch's mixing from `(seed, epoch, iter)`, so a resumed run sees
//! the same batches. Stochastic depth draws from the model's own generator, which a checkpoint
//! does not store.
//!
//! Evaluation uses the live weights: the trainer owns the EMA (`runner.ema`), which it saves in
//! every checkpoint but does not hand to the task.
//!
//! ```yaml
//! data:
//!   train:
//!     type: ImageFolder
//!     root: data/imagenet/train
//!     batch_size: 128
//!     transform: {input_size: 224}          # ClsTrainTransformConfig, ConvNeXt's defaults
//!     mixup: {mixup_alpha: 0.8, cutmix_alpha: 1.0}   # optional; absent: no mixing
//!     label_smoothing: 0.1
//!     workers: 0                            # loading threads; 0: the global pool
//!   test: {type: ImageFolder, root: ..., batch_size: 16, transform: {input_size: 224}}
//! ```

use crate::common::{initial_weights_path, load_initial_weights};
use crate::train::{fit, EngineSections, TrainOptions};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use nextdet_datasets::cls_augment::{ClsTrainTransform, ClsTrainTransformConfig};
use nextdet_datasets::mixup::{smooth_one_hot, Mixup, MixupConfig};
use nextdet_datasets::{load_rgb8, EvalTransform, ImageFolder};
use nextdet_engine::config::Config;
use nextdet_engine::trainer::{iteration_seed, TrainTask};
use nextdet_evaluation::TopKAccuracy;
use nextdet_heads::classifier::soft_target_cross_entropy;
use nextdet_heads::losses::cross_entropy;
use nextdet_models::{ImageClassifier, ModelConfig};
use nextdet_ops::ParamStore;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The built-in synthetic classification set, generated on first use.
const SHAPES_CLS_DIR: &str = "data/shapes_cls";

/// The `data` section of a classifier training config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClsData {
    /// Read by `nextdet classify` / `test`; accepted here.
    #[serde(default, rename = "class_names")]
    _class_names: Option<IgnoredAny>,
    /// The training split.
    train: TrainSplit,
    /// The evaluation split; without it the run trains only.
    #[serde(default)]
    test: Option<TestSplit>,
}

/// A training split, chosen by its `type` key.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum TrainSplit {
    /// One folder per class under `root`.
    ImageFolder(TrainFolder),
}

/// `data.train` of type `ImageFolder`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainFolder {
    root: PathBuf,
    /// Images per iteration (CNX's per-GPU `batch_size` times the GPUs; `runner.accumulate`
    /// multiplies it into the batch of one optimizer step).
    batch_size: usize,
    #[serde(default)]
    transform: ClsTrainTransformConfig,
    /// Mixup/CutMix; absent: none.
    #[serde(default)]
    mixup: Option<MixupSection>,
    /// Label smoothing (CNX `--smoothing`, also used inside Mixup's targets).
    #[serde(default)]
    label_smoothing: f64,
    /// Threads that decode and augment; 0 uses the global pool (`--threads`).
    #[serde(default)]
    workers: usize,
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

/// `data.train.mixup`: timm's `Mixup` settings (CNX defaults); the smoothing and the class count
/// come from the split and the model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MixupSection {
    #[serde(default = "d_mixup_alpha")]
    mixup_alpha: f64,
    #[serde(default = "d_one")]
    cutmix_alpha: f64,
    #[serde(default = "d_one")]
    prob: f64,
    #[serde(default = "d_half")]
    switch_prob: f64,
    #[serde(default = "d_true")]
    correct_lam: bool,
}

/// An evaluation split, chosen by its `type` key (the same shape `nextdet test` reads).
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum TestSplit {
    /// One folder per class under `root`.
    ImageFolder(TestFolder),
}

fn d_test_batch() -> usize {
    16
}

/// `data.test` of type `ImageFolder`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFolder {
    root: PathBuf,
    #[serde(default = "d_test_batch")]
    batch_size: usize,
    transform: EvalTransform,
}

/// How the targets of a batch are made.
enum TargetMode {
    /// Class indices, plain cross-entropy.
    Hard,
    /// Smoothed one-hot rows.
    Smooth(f64),
    /// Mixup/CutMix with smoothed targets.
    Mix(Mixup),
}

/// The targets of one batch.
enum Targets {
    Hard(Vec<usize>),
    Soft(Tensor),
}

/// One training batch: normalized images `[N, 3, S, S]` and their targets.
pub struct ClsBatch {
    images: Tensor,
    targets: Targets,
    len: usize,
}

/// The test split, ready to evaluate.
struct EvalSet {
    folder: ImageFolder,
    transform: EvalTransform,
    batch_size: usize,
}

/// The classification training task.
struct ClsTask {
    net: ImageClassifier,
    samples: Vec<(PathBuf, usize)>,
    transform: ClsTrainTransform,
    batch_size: usize,
    targets: TargetMode,
    num_classes: usize,
    seed: u64,
    pool: Option<rayon::ThreadPool>,
    /// The shuffled order of one epoch, kept while that epoch runs.
    order: Option<(usize, Vec<usize>)>,
    test: Option<EvalSet>,
}

/// Generates the built-in shapes set when `root` lies under `data/shapes_cls` and it is missing.
fn ensure_shapes(root: &Path) -> Result<()> {
    let rel = root.strip_prefix(".").unwrap_or(root);
    if rel.starts_with(SHAPES_CLS_DIR) {
        nextdet_datasets::shapes::ensure_classification(Path::new(SHAPES_CLS_DIR))
            .with_context(|| format!("generating {SHAPES_CLS_DIR}"))?;
    }
    Ok(())
}

/// Decodes images and applies `f` to each in parallel (in `pool` when given), in order.
fn load_parallel<T: Send>(
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
fn stack(buffers: Vec<Vec<f32>>, shape: [usize; 3]) -> Result<Tensor> {
    let n = buffers.len();
    let flat: Vec<f32> = buffers.into_iter().flatten().collect();
    Ok(Tensor::from_vec(flat, (n, shape[0], shape[1], shape[2]), &Device::Cpu)?)
}

impl ClsTask {
    /// The shuffled sample order of `epoch`.
    fn order(&mut self, epoch: usize) -> &[usize] {
        let stale = !matches!(&self.order, Some((e, _)) if *e == epoch);
        if stale {
            let mut order: Vec<usize> = (0..self.samples.len()).collect();
            order.shuffle(&mut StdRng::seed_from_u64(iteration_seed(self.seed, epoch, usize::MAX)));
            self.order = Some((epoch, order));
        }
        self.order.as_ref().map_or(&[], |(_, o)| o.as_slice())
    }
}

impl TrainTask for ClsTask {
    type Batch = ClsBatch;

    fn iters_per_epoch(&self) -> usize {
        self.samples.len() / self.batch_size
    }

    fn batch(&mut self, epoch: usize, iter: usize) -> Result<ClsBatch> {
        let bs = self.batch_size;
        let picked: Vec<usize> = self.order(epoch)[iter * bs..(iter + 1) * bs].to_vec();
        let paths: Vec<&Path> = picked.iter().map(|&i| self.samples[i].0.as_path()).collect();
        let labels: Vec<usize> = picked.iter().map(|&i| self.samples[i].1).collect();
        let batch_seed = iteration_seed(self.seed, epoch, iter);
        let transform = &self.transform;
        let buffers = load_parallel(self.pool.as_ref(), &paths, |j, path| {
            let img = load_rgb8(path)?;
            let mut rng = StdRng::seed_from_u64(iteration_seed(batch_seed, 1, j));
            transform.apply(&img, &mut rng).with_context(|| format!("{}: training transform", path.display()))
        })?;
        let [c, h, w] = transform.output_shape();
        let n = buffers.len();
        let targets = match &self.targets {
            TargetMode::Hard => Targets::Hard(labels),
            TargetMode::Smooth(s) => {
                let soft = smooth_one_hot(&labels, self.num_classes, *s)?;
                Targets::Soft(Tensor::from_vec(soft, (n, self.num_classes), &Device::Cpu)?)
            }
            TargetMode::Mix(mixup) => {
                let mut flat: Vec<f32> = buffers.into_iter().flatten().collect();
                let mut rng = StdRng::seed_from_u64(iteration_seed(batch_seed, 2, 0));
                let soft = mixup.apply(&mut flat, [n, c, h, w], &labels, &mut rng)?;
                let images = Tensor::from_vec(flat, (n, c, h, w), &Device::Cpu)?;
                let targets = Targets::Soft(Tensor::from_vec(soft, (n, self.num_classes), &Device::Cpu)?);
                return Ok(ClsBatch { images, targets, len: n });
            }
        };
        Ok(ClsBatch { images: stack(buffers, [c, h, w])?, targets, len: n })
    }

    fn batch_size(&self, batch: &ClsBatch) -> Option<usize> {
        Some(batch.len)
    }

    fn losses(&mut self, batch: &ClsBatch) -> Result<Vec<(String, Tensor)>> {
        let logits = self.net.forward(&batch.images, true)?;
        let loss = match &batch.targets {
            Targets::Hard(labels) => cross_entropy(&logits, labels)?.mean_all()?,
            Targets::Soft(t) => soft_target_cross_entropy(&logits, t)?,
        };
        Ok(vec![("loss_cls".to_string(), loss)])
    }

    fn evaluate(&mut self, epoch: usize) -> Result<Vec<(String, f64)>> {
        let Some(test) = &self.test else { return Ok(Vec::new()) };
        let mut accuracy = TopKAccuracy::default();
        for chunk in test.folder.samples().chunks(test.batch_size.max(1)) {
            let paths: Vec<&Path> = chunk.iter().map(|(p, _)| p.as_path()).collect();
            let buffers = load_parallel(self.pool.as_ref(), &paths, |_, path| {
                let img = load_rgb8(path)?;
                test.transform.apply(&img).with_context(|| format!("{}: evaluation transform", path.display()))
            })?;
            let images = stack(buffers, test.transform.output_shape())?;
            let logits = self.net.forward(&images, false)?.to_vec2::<f32>()?;
            for (row, (_, label)) in logits.iter().zip(chunk) {
                accuracy.update(row, *label);
            }
        }
        eprintln!(
            "epoch {epoch}: top-1 {:.2}%  top-5 {:.2}%  on {} images",
            accuracy.top1(),
            accuracy.top5(),
            accuracy.seen()
        );
        Ok(vec![("top1".into(), accuracy.top1()), ("top5".into(), accuracy.top5())])
    }

    fn params(&self) -> &ParamStore {
        self.net.params()
    }
}

/// Opens an `ImageFolder` split and checks its class count against the model's.
fn open_split(root: &Path, key: &str, num_classes: usize) -> Result<ImageFolder> {
    ensure_shapes(root)?;
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

/// `nextdet train` for a config whose `model.type` is `ImageClassifier`. Every section is read
/// and the data folders opened before the model is built, so a bad config fails at once.
pub fn run(cfg: &Config, opts: &TrainOptions) -> Result<()> {
    let sections = EngineSections::from_config(cfg, opts.seed)?;
    let seed = sections.runner.seed;
    let file = cfg.file().map_or("<config>".into(), |p| p.display().to_string());
    let model_cfg = match cfg.section::<ModelConfig>("model")? {
        ModelConfig::ImageClassifier(c) => c,
        _ => bail!("{file}: model.type must be ImageClassifier for classification training"),
    };
    let num_classes = model_cfg.num_classes;
    let data: ClsData = cfg.section("data")?;
    let TrainSplit::ImageFolder(train) = data.train;
    if train.batch_size == 0 {
        bail!("{file}: data.train.batch_size must be at least 1");
    }
    let transform = ClsTrainTransform::new(train.transform).with_context(|| format!("{file}: data.train.transform"))?;
    if !(0.0..=1.0).contains(&train.label_smoothing) {
        bail!("{file}: data.train.label_smoothing must be in [0, 1], got {}", train.label_smoothing);
    }
    let targets = match train.mixup {
        Some(m) => {
            if !train.batch_size.is_multiple_of(2) {
                bail!("{file}: data.train.batch_size must be even with mixup, got {}", train.batch_size);
            }
            let config = MixupConfig {
                mixup_alpha: m.mixup_alpha,
                cutmix_alpha: m.cutmix_alpha,
                prob: m.prob,
                switch_prob: m.switch_prob,
                label_smoothing: train.label_smoothing,
                correct_lam: m.correct_lam,
                num_classes,
            };
            TargetMode::Mix(Mixup::new(config).with_context(|| format!("{file}: data.train.mixup"))?)
        }
        None if train.label_smoothing > 0.0 => TargetMode::Smooth(train.label_smoothing),
        None => TargetMode::Hard,
    };
    let test_split = match data.test {
        Some(TestSplit::ImageFolder(t)) => {
            t.transform.validate().with_context(|| format!("{file}: data.test.transform"))?;
            Some(t)
        }
        None => None,
    };
    let load_from = initial_weights_path(cfg, opts.load_from.as_deref())?;
    let folder = open_split(&train.root, "train", num_classes)?;
    if folder.len() < train.batch_size {
        bail!(
            "{file}: data.train.batch_size {} is larger than the {} images of {}",
            train.batch_size,
            folder.len(),
            train.root.display()
        );
    }
    let test = match test_split {
        Some(t) => {
            let folder = open_split(&t.root, "test", num_classes)?;
            Some(EvalSet { folder, transform: t.transform, batch_size: t.batch_size })
        }
        None => None,
    };
    let pool = match train.workers {
        0 => None,
        n => Some(rayon::ThreadPoolBuilder::new().num_threads(n).build().context("data.train.workers")?),
    };
    let net =
        ImageClassifier::new(&model_cfg, ParamStore::new(&Device::Cpu, seed), seed).context("building the model")?;
    if let Some(path) = &load_from {
        load_initial_weights(net.params(), path)?;
    }
    eprintln!(
        "training on {} images of {} classes ({} per batch, {} batches per epoch){}",
        folder.len(),
        num_classes,
        train.batch_size,
        folder.len() / train.batch_size,
        test.as_ref().map_or(String::new(), |t| format!("; evaluating on {} images", t.folder.len()))
    );
    let params = net.params().clone();
    let mut task = ClsTask {
        net,
        samples: folder.samples().to_vec(),
        transform,
        batch_size: train.batch_size,
        targets,
        num_classes,
        seed,
        pool,
        order: None,
        test,
    };
    fit(&mut task, &params, cfg, opts, sections)
}
