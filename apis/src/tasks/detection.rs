//! Detector training: the COCO loader feeds `TwoStageDetector::forward_train`, and every
//! `runner.eval_interval` epochs the val split is evaluated with COCO box (and mask) AP.
//!
//! On the ranks of a data-parallel run (the process's default group, [`nextdet_dist::world`]),
//! each rank trains on its shard of every epoch (mmdetection's `DistributedGroupSampler`,
//! `samples_per_gpu` images per rank and step) and predicts its share of the val split; rank 0
//! evaluates the gathered detections. Each image's anchor and RoI sampling draws from its own
//! generator, seeded by `(seed, epoch, image id)`, so it does not depend on the image's batch or
//! rank.

use crate::data::detection::{batch_images, batch_targets};
use crate::data::{DetData, DetDataConfig};
use crate::detector::{evaluate_detections, metric_list, predict_dataset_on};
use anyhow::{bail, Context, Result};
use nextdet_datasets::collate::DetBatch;
use nextdet_datasets::loader::{EpochIter, Loader};
use nextdet_dist::Collective;
use nextdet_engine::trainer::{iteration_seed, Metrics, TrainTask};
use nextdet_evaluation::IouType;
use nextdet_models::TwoStageDetector;
use nextdet_ops::{Losses, ParamStore};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;

/// Mixed into the run's seed for the per-image sampling generators (apart from the loader's).
const SAMPLING_SEED: u64 = 0x005E_ED0F_A1C4_0125;

/// A batch and the seed of each image's sampling randomness.
pub struct SeededBatch {
    batch: DetBatch,
    seeds: Vec<u64>,
}

/// The detection training task.
pub struct DetTask {
    model: Box<TwoStageDetector>,
    loader: Loader<DetBatch, String>,
    current: Option<(usize, usize, EpochIter<DetBatch, String>)>,
    val: Option<DetData>,
    workers: usize,
    seed: u64,
    group: Arc<dyn Collective>,
}

impl DetTask {
    /// The task of training `model` on `data.train` (evaluating on `data.val` when given) with
    /// the run's `seed`. The dataset's category count must be the model's class count.
    pub fn new(model: Box<TwoStageDetector>, data: &DetDataConfig, num_classes: usize, seed: u64) -> Result<Self> {
        let split = data.train.as_ref().context("data.train is missing")?;
        let train = DetData::open(split, true, model.with_masks())?;
        if train.dataset.num_classes() != num_classes {
            bail!(
                "model.roi_head.bbox_head.num_classes is {num_classes}, but {} has {} categories",
                split.ann_file.display(),
                train.dataset.num_classes()
            );
        }
        let val = match &data.val {
            Some(split) => Some(DetData::open(split, false, model.with_masks())?),
            None => None,
        };
        tracing::info!(
            "train: {} images ({}), {} classes; val: {} images",
            train.dataset.len(),
            split.ann_file.display(),
            train.dataset.num_classes(),
            val.as_ref().map_or(0, |v| v.dataset.len())
        );
        if data.samples_per_gpu == 0 {
            bail!("data.samples_per_gpu: must be at least 1");
        }
        let group = nextdet_dist::world();
        let loader = train
            .loader(data.samples_per_gpu, data.workers_per_gpu, true, seed)?
            .with_shard(group.rank(), group.world_size())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { model, loader, current: None, val, workers: data.workers_per_gpu, seed, group })
    }

    /// The iterator of `epoch`, positioned at batch `iter` (a resumed run skips the done ones).
    fn epoch_at(&mut self, epoch: usize, iter: usize) -> &mut EpochIter<DetBatch, String> {
        let reuse = matches!(&self.current, Some((e, i, _)) if *e == epoch && *i == iter);
        if !reuse {
            let mut it = self.loader.epoch(epoch as u64);
            for _ in 0..iter {
                it.next();
            }
            self.current = Some((epoch, iter, it));
        }
        let Some((_, next, it)) = self.current.as_mut() else { unreachable!("set above") };
        *next += 1;
        it
    }
}

impl TrainTask for DetTask {
    type Batch = SeededBatch;

    fn iters_per_epoch(&self) -> usize {
        self.loader.batch_indices(0).len()
    }

    fn batch(&mut self, epoch: usize, iter: usize) -> Result<SeededBatch> {
        let epoch_seed = iteration_seed(self.seed ^ SAMPLING_SEED, epoch, usize::MAX);
        let it = self.epoch_at(epoch, iter);
        let batch = it.next().context("the loader ended before the epoch did")?.map_err(|e| anyhow::anyhow!("{e}"))?;
        let seeds = batch.samples.iter().map(|s| iteration_seed(epoch_seed, 0, s.meta.image_id as usize)).collect();
        Ok(SeededBatch { batch, seeds })
    }

    fn batch_size(&self, batch: &SeededBatch) -> Option<usize> {
        Some(batch.batch.samples.len())
    }

    fn losses(&mut self, batch: &SeededBatch) -> Result<Losses> {
        let images = batch_images(&batch.batch)?;
        let targets = batch_targets(&batch.batch, self.model.with_masks())?;
        let mut rngs: Vec<StdRng> = batch.seeds.iter().map(|&s| StdRng::seed_from_u64(s)).collect();
        Ok(self.model.forward_train(&images, &targets, &mut rngs)?)
    }

    fn evaluate(&mut self, _epoch: usize) -> Result<Metrics> {
        let Some(val) = &self.val else { return Ok(Vec::new()) };
        let dets = predict_dataset_on(&self.model, val, self.workers, &*self.group)?;
        if !self.group.is_main() {
            // rank 0 evaluates; the trainer hands its metrics to every rank
            return Ok(Vec::new());
        }
        let types: Vec<IouType> =
            if self.model.with_masks() { vec![IouType::Bbox, IouType::Segm] } else { vec![IouType::Bbox] };
        let (_, stats) = evaluate_detections(&val.split.ann_file, &dets, &types)?;
        for (_, s) in &stats {
            for line in s.summary_lines() {
                eprintln!("{line}");
            }
        }
        Ok(metric_list(&stats))
    }

    fn params(&self) -> &ParamStore {
        self.model.params()
    }
}
