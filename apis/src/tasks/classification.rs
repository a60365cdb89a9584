//! Classifier training: the ConvNeXt ImageNet recipe (`facebookresearch/ConvNeXt main.py`) on
//! any `ImageFolder`.
//!
//! Per iteration the task takes the next `batch_size` images of the epoch's shuffled order
//! (the last incomplete batch is dropped, as ConvNeXt's `drop_last=True`), decodes and augments
//! them in parallel with the config's training transform, applies Mixup/CutMix (timm's batch
//! mode) or label smoothing, and scores the logits with soft-target cross-entropy (plain
//! cross-entropy without either), reported as `loss_cls`. After every `runner.eval_interval`
//! epochs it measures top-1 / top-5 on `data.test` with the evaluation transform.
//!
//! All randomness comes from [`iteration_seed`]: the epoch's order from `(seed, epoch)`, each
//! image's augmentation from `(seed, epoch, dataset index)` and the batch's mixing from `(seed,
//! epoch, global batch index)`, so a resumed run sees the same batches. Stochastic depth draws
//! from the model's own generator, which a checkpoint does not store. Evaluation uses the live
//! weights (the trainer evaluates the EMA itself).
//!
//! On the ranks of a data-parallel run (the process's default group, [`nextdet_dist::world`]),
//! rank `r` takes its share of the epoch's order as torch's `DistributedSampler` deals it (every
//! `world`-th image from position `r`, ConvNeXt's `main.py`), `batch_size` images per rank and
//! step; the images of step `i` on all ranks together are those of step `i` of one process with
//! `world * batch_size` images per batch, each with the same augmentation, so without Mixup,
//! CutMix or stochastic depth the averaged gradient is that process's. Evaluation splits the test
//! folder's batches over the ranks and sums the counts.

use crate::classifier::evaluate_topk_on;
use crate::data::classification::{
    load_parallel, open_folder, stack, ClsDataConfig, ClsTestSplit, ClsTrainSplit, TestFolder,
};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use nextdet_datasets::cls_augment::ClsTrainTransform;
use nextdet_datasets::mixup::{smooth_one_hot, Mixup, MixupConfig};
use nextdet_datasets::sampler::distributed_shard;
use nextdet_datasets::{load_rgb8, ImageFolder};
use nextdet_dist::Collective;
use nextdet_engine::trainer::{iteration_seed, Metrics, TrainTask};
use nextdet_heads::classifier::soft_target_cross_entropy;
use nextdet_heads::losses::cross_entropy;
use nextdet_models::ImageClassifier;
use nextdet_ops::{Losses, ParamStore};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    split: TestFolder,
}

/// The classification training task.
pub struct ClsTask {
    net: ImageClassifier,
    samples: Vec<(PathBuf, usize)>,
    transform: ClsTrainTransform,
    batch_size: usize,
    targets: TargetMode,
    num_classes: usize,
    seed: u64,
    pool: Option<rayon::ThreadPool>,
    /// This rank's share of the shuffled order of one epoch, kept while that epoch runs.
    order: Option<(usize, Vec<usize>)>,
    test: Option<EvalSet>,
    group: Arc<dyn Collective>,
}

/// A classification data section checked before the model is built: every value, both
/// folders and their class counts.
pub struct ClsSetup {
    folder: ImageFolder,
    transform: ClsTrainTransform,
    batch_size: usize,
    targets: TargetMode,
    workers: usize,
    test: Option<EvalSet>,
}

impl ClsSetup {
    /// Reads and checks `data` for a model of `num_classes` classes, opening the folders (and
    /// generating the built-in shapes set on first use).
    pub fn new(data: &ClsDataConfig, num_classes: usize) -> Result<Self> {
        let Some(ClsTrainSplit::ImageFolder(train)) = &data.train else { bail!("data.train is missing") };
        if train.batch_size == 0 {
            bail!("data.train.batch_size: must be at least 1");
        }
        let transform = ClsTrainTransform::new(train.transform.clone()).context("data.train.transform")?;
        if !(0.0..=1.0).contains(&train.label_smoothing) {
            bail!("data.train.label_smoothing: must be in [0, 1], got {}", train.label_smoothing);
        }
        let targets = match &train.mixup {
            Some(m) => {
                if !train.batch_size.is_multiple_of(2) {
                    bail!("data.train.batch_size: must be even with mixup, got {}", train.batch_size);
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
                TargetMode::Mix(Mixup::new(config).context("data.train.mixup")?)
            }
            None if train.label_smoothing > 0.0 => TargetMode::Smooth(train.label_smoothing),
            None => TargetMode::Hard,
        };
        let test_split = match &data.test {
            Some(ClsTestSplit::ImageFolder(t)) => {
                t.transform.validate().context("data.test.transform")?;
                Some(t.clone())
            }
            None => None,
        };
        let folder = open_folder(&train.root, "train", num_classes)?;
        if folder.len() < train.batch_size {
            bail!(
                "data.train.batch_size: {} is larger than the {} images of {}",
                train.batch_size,
                folder.len(),
                train.root.display()
            );
        }
        let test = match test_split {
            Some(split) => Some(EvalSet { folder: open_folder(&split.root, "test", num_classes)?, split }),
            None => None,
        };
        Ok(Self { folder, transform, batch_size: train.batch_size, targets, workers: train.workers, test })
    }

    /// The training task for `net` with the run's `seed`.
    pub fn into_task(self, net: ImageClassifier, seed: u64) -> Result<ClsTask> {
        let group = nextdet_dist::world();
        let pool = match self.workers {
            0 => None,
            n => Some(rayon::ThreadPoolBuilder::new().num_threads(n).build().context("data.train.workers")?),
        };
        let per_rank = self.folder.len().div_ceil(group.world_size());
        if per_rank < self.batch_size {
            bail!(
                "data.train.batch_size: {} per rank is larger than the {per_rank} images each of {} ranks gets",
                self.batch_size,
                group.world_size()
            );
        }
        tracing::info!(
            "training on {} images of {} classes ({} per batch{}, {} batches per epoch){}",
            self.folder.len(),
            net.num_classes(),
            self.batch_size,
            if group.is_distributed() { format!(" on each of {} ranks", group.world_size()) } else { String::new() },
            per_rank / self.batch_size,
            self.test.as_ref().map_or(String::new(), |t| format!("; evaluating on {} images", t.folder.len()))
        );
        Ok(ClsTask {
            num_classes: net.num_classes(),
            net,
            samples: self.folder.samples().to_vec(),
            transform: self.transform,
            batch_size: self.batch_size,
            targets: self.targets,
            seed,
            pool,
            order: None,
            test: self.test,
            group,
        })
    }
}

impl ClsTask {
    /// This rank's share of the shuffled sample order of `epoch` (the whole order in one
    /// process).
    fn order(&mut self, epoch: usize) -> &[usize] {
        let stale = !matches!(&self.order, Some((e, _)) if *e == epoch);
        if stale {
            let mut order: Vec<usize> = (0..self.samples.len()).collect();
            order.shuffle(&mut StdRng::seed_from_u64(iteration_seed(self.seed, epoch, usize::MAX)));
            let shard = distributed_shard(&order, self.group.rank(), self.group.world_size());
            self.order = Some((epoch, shard));
        }
        self.order.as_ref().map_or(&[], |(_, o)| o.as_slice())
    }
}

/// The seed of dataset image `index`'s augmentation in `epoch`.
fn augment_seed(seed: u64, epoch: usize, index: usize) -> u64 {
    iteration_seed(iteration_seed(seed, epoch, usize::MAX - 1), 1, index)
}

impl TrainTask for ClsTask {
    type Batch = ClsBatch;

    fn iters_per_epoch(&self) -> usize {
        self.samples.len().div_ceil(self.group.world_size()) / self.batch_size
    }

    fn batch(&mut self, epoch: usize, iter: usize) -> Result<ClsBatch> {
        let bs = self.batch_size;
        let picked: Vec<usize> = self.order(epoch)[iter * bs..(iter + 1) * bs].to_vec();
        let paths: Vec<&Path> = picked.iter().map(|&i| self.samples[i].0.as_path()).collect();
        let labels: Vec<usize> = picked.iter().map(|&i| self.samples[i].1).collect();
        // the mixing of a batch: one draw per rank's batch, the one-process draw with one rank
        let batch_seed = iteration_seed(self.seed, epoch, iter * self.group.world_size() + self.group.rank());
        let (seed, transform) = (self.seed, &self.transform);
        let buffers = load_parallel(self.pool.as_ref(), &paths, |j, path| {
            let img = load_rgb8(path)?;
            let mut rng = StdRng::seed_from_u64(augment_seed(seed, epoch, picked[j]));
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

    fn losses(&mut self, batch: &ClsBatch) -> Result<Losses> {
        let logits = self.net.forward(&batch.images, true)?;
        let loss = match &batch.targets {
            Targets::Hard(labels) => cross_entropy(&logits, labels)?.mean_all()?,
            Targets::Soft(t) => soft_target_cross_entropy(&logits, t)?,
        };
        let mut losses = Losses::new();
        losses.push_term("loss_cls", loss);
        Ok(losses)
    }

    fn evaluate(&mut self, epoch: usize) -> Result<Metrics> {
        let Some(test) = &self.test else { return Ok(Vec::new()) };
        let acc = evaluate_topk_on(
            &self.net,
            &test.folder,
            &test.split.transform,
            test.split.batch_size,
            self.pool.as_ref(),
            false,
            &*self.group,
        )?;
        if !self.group.is_main() {
            return Ok(Vec::new());
        }
        eprintln!("epoch {epoch}: top-1 {:.2}%  top-5 {:.2}%  on {} images", acc.top1(), acc.top5(), acc.seen());
        Ok(vec![("top1".into(), acc.top1()), ("top5".into(), acc.top5())])
    }

    fn params(&self) -> &ParamStore {
        self.net.params()
    }
}
