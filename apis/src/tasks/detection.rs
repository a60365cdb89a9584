//! Detector training: the COCO loader feeds `TwoStageDetector::forward_train`, and every
//! `runner.eval_interval` epochs the val split is evaluated with COCO box (and mask) AP.

use crate::data::detection::{batch_images, batch_targets};
use crate::data::{DetData, DetDataConfig};
use crate::detector::{evaluate_detections, metric_list, predict_dataset};
use anyhow::{bail, Context, Result};
use nextdet_datasets::collate::DetBatch;
use nextdet_datasets::loader::{EpochIter, Loader};
use nextdet_engine::trainer::{iteration_seed, Metrics, TrainTask};
use nextdet_evaluation::IouType;
use nextdet_models::TwoStageDetector;
use nextdet_ops::{Losses, ParamStore};
use rand::SeedableRng;

/// A batch and the seed of its sampling randomness.
pub struct SeededBatch {
    batch: DetBatch,
    seed: u64,
}

/// The detection training task.
pub struct DetTask {
    model: Box<TwoStageDetector>,
    loader: Loader<DetBatch, String>,
    current: Option<(usize, usize, EpochIter<DetBatch, String>)>,
    val: Option<DetData>,
    workers: usize,
    seed: u64,
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
        let loader = train.loader(data.samples_per_gpu, data.workers_per_gpu, true, seed)?;
        Ok(Self { model, loader, current: None, val, workers: data.workers_per_gpu, seed })
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
        let seed = iteration_seed(self.seed, epoch, iter);
        let it = self.epoch_at(epoch, iter);
        let batch = it.next().context("the loader ended before the epoch did")?.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(SeededBatch { batch, seed })
    }

    fn batch_size(&self, batch: &SeededBatch) -> Option<usize> {
        Some(batch.batch.samples.len())
    }

    fn losses(&mut self, batch: &SeededBatch) -> Result<Losses> {
        let images = batch_images(&batch.batch)?;
        let targets = batch_targets(&batch.batch, self.model.with_masks())?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(batch.seed);
        Ok(self.model.forward_train(&images, &targets, &mut rng)?)
    }

    fn evaluate(&mut self, _epoch: usize) -> Result<Metrics> {
        let Some(val) = &self.val else { return Ok(Vec::new()) };
        let dets = predict_dataset(&self.model, val, self.workers)?;
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
