//! What the loop and its hooks share: the parameters, the optimizer, the EMA, the run's
//! position, and the record of the current iteration.

use super::{checkpoint_dir, restore_into, TrainError, TrainerConfig};
use crate::checkpoint::{BestMetric, Checkpoint, CheckpointDir, RunState};
use crate::ema::ModelEma;
use crate::optim::Optimizer;
use nextdet_dist::Collective;
use nextdet_ops::params::ParamStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One iteration as the hooks see it.
#[derive(Clone, Debug, Default)]
pub struct StepRecord {
    /// Epoch (from 0).
    pub epoch: usize,
    /// Iteration in the epoch (from 0).
    pub iter: usize,
    /// Whether gradients of earlier iterations wait for this one (accumulation): the state is
    /// then between two optimizer steps and cannot be checkpointed.
    pub pending_grads: bool,
    /// The learning rate of this iteration's step (set by the schedule hook before the step).
    pub lr: f64,
    /// Seconds spent getting the batch.
    pub data_secs: f64,
    /// Samples in the batch, when the task counts them.
    pub samples: Option<usize>,
    /// Every loss term and metric of the batch, summed to a number, in the task's order.
    pub values: Vec<(String, f64)>,
    /// The total loss (the sum of the terms).
    pub total: f64,
    /// The global gradient norm, when gradients were clipped at this step.
    pub grad_norm: Option<f64>,
    /// Whether this iteration ended with an optimizer step.
    pub stepped: bool,
    /// The factor the loss is multiplied by before the backward pass (f16 loss scaling, set by
    /// [`crate::loss_scale::LossScaleHook`]); `None` is 1.
    pub loss_scale: Option<f64>,
}

/// The state of a run, owned by the loop and handed to every hook.
pub struct TrainState {
    /// The runner settings.
    pub cfg: TrainerConfig,
    /// Where the run writes.
    pub work_dir: PathBuf,
    /// The parameters being trained.
    pub params: ParamStore,
    /// The optimizer over them.
    pub optimizer: Optimizer,
    /// The EMA of the weights (`runner.ema`).
    pub ema: Option<ModelEma>,
    /// The run's position, saved in every checkpoint.
    pub run: RunState,
    /// Iterations per epoch.
    pub iters_per_epoch: usize,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
    /// The best evaluation result so far.
    pub best: Option<BestMetric>,
    /// The current iteration.
    pub step: StepRecord,
    /// The metrics of the evaluation at the end of this epoch (empty when none ran).
    pub eval_metrics: Vec<(String, f64)>,
    /// The run's checkpoint folder.
    pub checkpoints: CheckpointDir,
    /// The last checkpoint written at an epoch end.
    pub last_checkpoint: Option<PathBuf>,
    /// Set when the run stopped early with this `interrupted` checkpoint.
    pub interrupted: Option<PathBuf>,
    /// The ranks training together (a world of one without a launcher); rank 0 writes the logs
    /// and checkpoints.
    pub group: Arc<dyn Collective>,
}

impl TrainState {
    /// A fresh run's state.
    pub(super) fn new(
        cfg: TrainerConfig,
        work_dir: &Path,
        params: ParamStore,
        optimizer: Optimizer,
        iters_per_epoch: usize,
        config_text: Option<String>,
        group: Arc<dyn Collective>,
    ) -> Result<Self, TrainError> {
        let ema = match cfg.ema {
            Some(decay) => Some(ModelEma::new(&params, decay)?),
            None => None,
        };
        Ok(Self {
            run: RunState { seed: cfg.seed, config: config_text, world_size: group.world_size(), ..Default::default() },
            steps_per_epoch: iters_per_epoch.div_ceil(cfg.accumulate),
            checkpoints: checkpoint_dir(&cfg, work_dir),
            cfg,
            work_dir: work_dir.to_path_buf(),
            params,
            optimizer,
            ema,
            iters_per_epoch,
            best: None,
            step: StepRecord::default(),
            eval_metrics: Vec::new(),
            last_checkpoint: None,
            interrupted: None,
            group,
        })
    }

    /// Loads the checkpoint at `path` into the parameters, optimizer and EMA and continues its
    /// run (with this run's seed and config text, warning when the seed differs). A run saved
    /// mid-epoch by another number of ranks restarts that epoch from its first iteration (its
    /// iteration index counts batches of another size), with a warning.
    pub(super) fn restore(&mut self, path: &Path) -> Result<(), TrainError> {
        let mut run = restore_into(self, path)?;
        let main = self.group.is_main();
        let (saved, now) = (run.world_size.max(1), self.group.world_size());
        if run.iter != 0 && saved != now {
            if main {
                tracing::warn!(
                    "{}: saved at epoch {}, iteration {} by {saved} rank(s); {now} rank(s) split an epoch into other \
                     batches, so epoch {} restarts from its first iteration",
                    path.display(),
                    run.epoch + 1,
                    run.iter,
                    run.epoch + 1
                );
            }
            run.global_iter = run.global_iter.saturating_sub(run.iter as u64);
            run.global_step = run.global_step.saturating_sub(run.iter.div_ceil(self.cfg.accumulate) as u64);
            run.iter = 0;
        }
        run.world_size = now;
        if run.seed != self.cfg.seed && main {
            tracing::warn!(
                "{}: saved with seed {}, resumed with seed {}: batches will differ",
                path.display(),
                run.seed,
                self.cfg.seed
            );
        }
        run.seed = self.cfg.seed;
        run.config = self.run.config.clone().or(run.config);
        self.best = run.best_metric.clone();
        self.run = run;
        Ok(())
    }

    /// A checkpoint of the current state.
    pub fn checkpoint(&self) -> Result<Checkpoint, TrainError> {
        let mut run = self.run.clone();
        run.best_metric = self.best.clone();
        Ok(Checkpoint {
            weights: self.params.tensors().into_iter().collect(),
            optimizer: self.optimizer.state_tensors()?.into_iter().collect(),
            ema: self.ema.as_ref().map(|e| e.state()).unwrap_or_default(),
            run: Some(run),
        })
    }
}
