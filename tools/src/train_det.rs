//! `nextdet train` for detectors: the COCO loader feeds `TwoStageDetector::forward_train`, and
//! every `runner.eval_interval` epochs the val split is evaluated with COCO box (and mask) AP.

use crate::common::{initial_weights_path, load_initial_weights};
use crate::detection::{batch_inputs, evaluate, metric_list, predict_split, DetData, DetDataConfig};
use crate::train::{fit, EngineSections, TrainOptions};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use nextdet_datasets::collate::DetBatch;
use nextdet_datasets::loader::{EpochIter, Loader};
use nextdet_engine::config::Config;
use nextdet_engine::trainer::{iteration_seed, TrainTask};
use nextdet_evaluation::IouType;
use nextdet_models::{build_model, Model, ModelConfig, TwoStageDetector};
use nextdet_ops::ParamStore;
use rand::SeedableRng;

/// A batch and the seed of its sampling randomness.
pub struct SeededBatch {
    batch: DetBatch,
    seed: u64,
}

/// The detection training task.
struct DetTask {
    model: Box<TwoStageDetector>,
    loader: Loader<DetBatch, String>,
    current: Option<(usize, usize, EpochIter<DetBatch, String>)>,
    val: Option<DetData>,
    workers: usize,
    seed: u64,
}

impl DetTask {
    /// The iterator of `epoch`, positioned at batch `iter` (a resumed run skips the done ones).
    fn epoch_at(&mut self, epoch: usize, iter: usize) -> Result<&mut EpochIter<DetBatch, String>> {
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
        Ok(it)
    }
}

impl TrainTask for DetTask {
    type Batch = SeededBatch;

    fn iters_per_epoch(&self) -> usize {
        self.loader.batch_indices(0).len()
    }

    fn batch(&mut self, epoch: usize, iter: usize) -> Result<SeededBatch> {
        let seed = iteration_seed(self.seed, epoch, iter);
        let it = self.epoch_at(epoch, iter)?;
        let batch = it.next().context("the loader ended before the epoch did")?.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(SeededBatch { batch, seed })
    }

    fn batch_size(&self, batch: &SeededBatch) -> Option<usize> {
        Some(batch.batch.samples.len())
    }

    fn losses(&mut self, batch: &SeededBatch) -> Result<Vec<(String, Tensor)>> {
        let (images, targets) = batch_inputs(&batch.batch, self.model.with_masks())?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(batch.seed);
        let pads: Vec<(usize, usize)> = batch.batch.samples.iter().map(|s| s.meta.pad_size).collect();
        Ok(self.model.forward_train(&images, &targets, &pads, &mut rng)?)
    }

    fn evaluate(&mut self, _epoch: usize) -> Result<Vec<(String, f64)>> {
        let Some(val) = &self.val else { return Ok(Vec::new()) };
        let dets = predict_split(&self.model, val, self.workers)?;
        let types: Vec<IouType> =
            if self.model.with_masks() { vec![IouType::Bbox, IouType::Segm] } else { vec![IouType::Bbox] };
        let (_, stats) = evaluate(&val.split.ann_file, &dets, &types)?;
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

/// Trains the detector a config describes.
pub fn run(cfg: &Config, opts: &TrainOptions) -> Result<()> {
    let sections = EngineSections::from_config(cfg, opts.seed)?;
    let seed = sections.runner.seed;
    let load_from = initial_weights_path(cfg, opts.load_from.as_deref())?;
    let model_cfg: ModelConfig = cfg.section("model")?;
    let Model::Detector(model) = build_model(&model_cfg, &Device::Cpu, seed).context("building the model")? else {
        anyhow::bail!("train_det needs a detector config");
    };
    if let Some(path) = &load_from {
        load_initial_weights(model.params(), path)?;
    }
    let data: DetDataConfig = cfg.section("data")?;
    let train_split = data.train.as_ref().context("data.train is missing")?;
    let train = DetData::open(train_split, true, model.with_masks())?;
    let val = match &data.val {
        Some(split) => Some(DetData::open(split, false, model.with_masks())?),
        None => None,
    };
    eprintln!(
        "train: {} images ({}), {} classes; val: {} images",
        train.dataset.len(),
        train_split.ann_file.display(),
        train.dataset.num_classes(),
        val.as_ref().map_or(0, |v| v.dataset.len())
    );
    let loader = train.loader(data.samples_per_gpu, data.workers_per_gpu, true, seed)?;
    let params = model.params().clone();
    let mut task = DetTask { model, loader, current: None, val, workers: data.workers_per_gpu, seed };
    fit(&mut task, &params, cfg, opts, sections)
}
