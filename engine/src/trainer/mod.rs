//! The training loop, generic over a [`TrainTask`], with its concerns in [`hooks`].
//!
//! Per iteration: the task's batch, its [`Losses`] (the terms are summed into the total), a
//! backward pass of the total divided by the accumulation count, and every `accumulate`
//! iterations a gradient clip by global norm (torch `clip_grad_norm_`) and an optimizer step at
//! the scheduled learning rate. Everything around that (the learning-rate schedule, the EMA,
//! logging to `metrics.jsonl` and `curves.png`, checkpoints with `latest` and pruning,
//! evaluation, the stop on a non-finite loss, Ctrl-C) is a [`Hook`] called at fixed points of
//! the loop, as detectron2's `HookBase`; a library user adds one with [`Trainer::with_hook`].
//!
//! Data-parallel training: the trainer runs on every rank of its process group (by default
//! [`nextdet_dist::world`]); with more than one rank a [`hooks::DistributedHook`] broadcasts rank
//! 0's weights at the start, averages the logged values and the gradients over the ranks every
//! step, and only rank 0 writes logs and checkpoints (mmcv's `DistSamplerSeedHook`-free design:
//! the task shards its own data).
//!
//! Exact resume: the loop keeps no random state of its own. A task that needs randomness derives
//! it from [`iteration_seed`]`(seed, epoch, iter)`, so a resumed run sees the same batches as an
//! uninterrupted one, and weights, optimizer state and EMA come back from the checkpoint.

mod config;
pub mod hooks;
mod state;

pub use config::TrainerConfig;
pub use hooks::Hook;
pub use state::{StepRecord, TrainState};

use crate::checkpoint::{self, BestMetric, CheckpointDir, CheckpointError, RunState};
use crate::ema::ModelEma;
use crate::optim::Optimizer;
use crate::schedule::LrSchedule;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use nextdet_dist::Collective;
use nextdet_ops::params::ParamStore;
use nextdet_ops::Losses;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// The metrics of one evaluation, in order; the first is tracked as the best.
pub type Metrics = Vec<(String, f64)>;

/// What the loop trains: batches, losses, evaluation and the parameters.
pub trait TrainTask {
    /// One batch of training data.
    type Batch;
    /// Batches per epoch.
    fn iters_per_epoch(&self) -> usize;
    /// Batch `iter` (from 0) of epoch `epoch` (from 0). Randomness should derive from
    /// [`iteration_seed`] so that a resumed run is identical.
    fn batch(&mut self, epoch: usize, iter: usize) -> anyhow::Result<Self::Batch>;
    /// Images (or samples) in a batch, for the img/s display; `None` shows it/s.
    fn batch_size(&self, _batch: &Self::Batch) -> Option<usize> {
        None
    }
    /// The loss terms (summed and trained) and metrics (logged only) of a batch.
    fn losses(&mut self, batch: &Self::Batch) -> anyhow::Result<Losses>;
    /// Named metrics after epoch `epoch` (from 1). The first one is tracked as the best metric.
    fn evaluate(&mut self, epoch: usize) -> anyhow::Result<Metrics>;
    /// The parameters being trained (the optimizer's groups must hold the same vars).
    fn params(&self) -> &ParamStore;
}

/// Why a run stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A loss part is NaN or infinite.
    #[error("non-finite loss at epoch {epoch}, iteration {iter} (global iteration {global_iter}): `{part}` = {value}; stopped without saving, the last checkpoint is intact")]
    NonFinite {
        /// Epoch (from 1).
        epoch: usize,
        /// Iteration in the epoch (from 1).
        iter: usize,
        /// Iteration in the run (from 1).
        global_iter: u64,
        /// The loss part.
        part: String,
        /// Its value.
        value: f64,
    },
    /// The task failed.
    #[error("epoch {epoch}, iteration {iter}: {source:#}")]
    Task {
        /// Epoch (from 1).
        epoch: usize,
        /// Iteration in the epoch (from 1; 0 for evaluation).
        iter: usize,
        /// The task's error.
        source: anyhow::Error,
    },
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A resume checkpoint does not fit the model or the optimizer.
    #[error("{}: {msg}", path.display())]
    Resume {
        /// The checkpoint.
        path: PathBuf,
        /// What does not fit.
        msg: String,
    },
    /// A tensor operation failed.
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
    /// A log or plot file could not be written.
    #[error("{}: {msg}", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// A bad setting.
    #[error("trainer config: {0}")]
    Config(String),
    /// A collective operation between the ranks failed.
    #[error("data-parallel: {0}")]
    Dist(#[from] nextdet_dist::DistError),
}

/// How a run ended without error.
#[derive(Debug, Clone, PartialEq)]
pub enum FitOutcome {
    /// All epochs ran.
    Completed {
        /// The last checkpoint written, if any.
        checkpoint: Option<PathBuf>,
    },
    /// Stopped by Ctrl-C or [`Trainer::interrupt_flag`]; the state is in `checkpoint`.
    Interrupted {
        /// The `interrupted.safetensors` file.
        checkpoint: PathBuf,
    },
}

/// A seed for the randomness of iteration `iter` of epoch `epoch`, mixed from the run's seed
/// (SplitMix64 finalizer), so that no random state has to be saved to resume exactly.
pub fn iteration_seed(seed: u64, epoch: usize, iter: usize) -> u64 {
    let mut z =
        seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (iter as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    for _ in 0..2 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// The training loop (see the module docs): the state it trains and the hooks around it.
pub struct Trainer {
    cfg: TrainerConfig,
    work_dir: PathBuf,
    optimizer: Option<Optimizer>,
    schedule: Option<LrSchedule>,
    config_text: Option<String>,
    interrupt: Arc<AtomicBool>,
    extra_hooks: Vec<Box<dyn Hook>>,
    state: Option<TrainState>,
    group: Option<Arc<dyn Collective>>,
}

impl Trainer {
    /// A trainer writing into `work_dir` with `optimizer` (whose groups hold the task's
    /// parameters) and `schedule`.
    pub fn new(cfg: TrainerConfig, work_dir: impl Into<PathBuf>, optimizer: Optimizer, schedule: LrSchedule) -> Self {
        Self {
            cfg,
            work_dir: work_dir.into(),
            optimizer: Some(optimizer),
            schedule: Some(schedule),
            config_text: None,
            interrupt: Arc::new(AtomicBool::new(false)),
            extra_hooks: Vec::new(),
            state: None,
            group: None,
        }
    }

    /// Trains on the ranks of `group` instead of the process's default group
    /// ([`nextdet_dist::world`]).
    pub fn with_group(mut self, group: Arc<dyn Collective>) -> Self {
        self.group = Some(group);
        self
    }

    /// Stores the merged config text in every checkpoint's run state.
    pub fn with_config_text(mut self, yaml: impl Into<String>) -> Self {
        self.config_text = Some(yaml.into());
        self
    }

    /// Adds a hook, called after the built-in ones at each point of the loop.
    pub fn with_hook(mut self, hook: Box<dyn Hook>) -> Self {
        self.extra_hooks.push(hook);
        self
    }

    /// A flag that, once set, stops the run at the next step boundary with an `interrupted`
    /// checkpoint, as Ctrl-C does.
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        self.interrupt.clone()
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &Optimizer {
        match (&self.state, &self.optimizer) {
            (Some(s), _) => &s.optimizer,
            (None, Some(o)) => o,
            (None, None) => unreachable!("the optimizer is in the trainer or in its state"),
        }
    }

    /// The EMA of the weights, once [`Trainer::fit`] has started with `ema` set.
    pub fn ema(&self) -> Option<&ModelEma> {
        self.state.as_ref().and_then(|s| s.ema.as_ref())
    }

    /// The best metric seen so far.
    pub fn best_metric(&self) -> Option<&BestMetric> {
        self.state.as_ref().and_then(|s| s.best.as_ref())
    }

    /// Trains `task` for the configured epochs, from scratch or from the checkpoint `resume`.
    /// A trainer fits once.
    pub fn fit<T: TrainTask>(&mut self, task: &mut T, resume: Option<&Path>) -> Result<FitOutcome, TrainError> {
        self.cfg.validate().map_err(TrainError::Config)?;
        let iters = task.iters_per_epoch();
        if iters == 0 {
            return Err(TrainError::Config("the task has no iterations per epoch".into()));
        }
        let (Some(optimizer), Some(schedule)) = (self.optimizer.take(), self.schedule.take()) else {
            return Err(TrainError::Config("a trainer fits once; build a new one for another run".into()));
        };
        let params = task.params().clone();
        check_optimizer_params(&optimizer, &params)?;
        std::fs::create_dir_all(&self.work_dir)
            .map_err(|e| TrainError::Output { path: self.work_dir.clone(), msg: e.to_string() })?;
        let group = self.group.clone().unwrap_or_else(nextdet_dist::world);
        let mut state = TrainState::new(
            self.cfg.clone(),
            &self.work_dir,
            params,
            optimizer,
            iters,
            self.config_text.clone(),
            group.clone(),
        )?;
        let mut hooks = hooks::default_hooks(&self.cfg, schedule, self.interrupt.clone(), group.is_distributed());
        let built_in = hooks.len();
        hooks.append(&mut self.extra_hooks);
        if let Some(path) = resume {
            state.restore(path)?;
        }
        for h in &mut hooks {
            h.before_train(&mut state)?;
        }
        let result = run_epochs(task, &mut state, &mut hooks);
        for h in &mut hooks {
            h.after_train(&mut state)?;
        }
        self.extra_hooks = hooks.split_off(built_in);
        self.state = Some(state);
        let state = self.state.as_ref().expect("just set");
        result?;
        Ok(match &state.interrupted {
            Some(path) => FitOutcome::Interrupted { checkpoint: path.clone() },
            None => FitOutcome::Completed { checkpoint: state.last_checkpoint.clone() },
        })
    }
}

/// Every optimizer parameter must be one of the task's trainable parameters.
fn check_optimizer_params(optimizer: &Optimizer, params: &ParamStore) -> Result<(), TrainError> {
    let ids: std::collections::HashSet<_> = params.trainable().iter().map(|(_, v)| v.as_tensor().id()).collect();
    for group in optimizer.groups() {
        if let Some((name, _)) = group.params.iter().find(|(_, v)| !ids.contains(&v.as_tensor().id())) {
            return Err(TrainError::Config(format!(
                "optimizer parameter `{name}` (group `{}`) is not a trainable parameter of the task",
                group.name
            )));
        }
    }
    Ok(())
}

/// The epochs from the state's position to the end, or to an interruption.
fn run_epochs<T: TrainTask>(
    task: &mut T,
    state: &mut TrainState,
    hooks: &mut [Box<dyn Hook>],
) -> Result<(), TrainError> {
    let iters = state.iters_per_epoch;
    let accumulate = state.cfg.accumulate;
    while state.run.epoch < state.cfg.max_epochs {
        let epoch = state.run.epoch;
        let mut pending: Option<GradStore> = None;
        let mut pending_count = 0usize;
        while state.run.iter < iters {
            let iter = state.run.iter;
            state.step = StepRecord { epoch, iter, pending_grads: pending.is_some(), ..Default::default() };
            for h in hooks.iter_mut() {
                h.before_step(state)?;
            }
            if state.interrupted.is_some() {
                return Ok(());
            }
            let task_err = |source| TrainError::Task { epoch: epoch + 1, iter: iter + 1, source };
            let data_start = Instant::now();
            let batch = task.batch(epoch, iter).map_err(task_err)?;
            state.step.data_secs = data_start.elapsed().as_secs_f64();
            state.step.samples = task.batch_size(&batch);
            let losses = task.losses(&batch).map_err(task_err)?;
            for item in losses.items() {
                let value = item.value.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
                state.step.values.push((item.name.clone(), value));
            }
            let Some(total) = losses.total()? else {
                return Err(task_err(anyhow::anyhow!("the task returned no loss terms")));
            };
            state.step.total = total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            for h in hooks.iter_mut() {
                h.after_forward(state)?;
            }
            // the last group of an epoch may be short: divide by its real size, as mmcv does
            let group_start = iter / accumulate * accumulate;
            let group_len = accumulate.min(iters - group_start);
            let total = match state.step.loss_scale {
                Some(scale) => (total * scale)?,
                None => total,
            };
            let grads = (total / group_len as f64)?.backward()?;
            drop(losses);
            pending = Some(match pending.take() {
                None => keep_vars(grads, &state.params),
                Some(acc) => add_grads(acc, &grads, &state.params)?,
            });
            pending_count += 1;
            state.run.iter += 1;
            state.run.global_iter += 1;
            if pending_count == group_len {
                let mut grads = pending.take().expect("pending gradients");
                pending_count = 0;
                for h in hooks.iter_mut() {
                    h.after_backward(state, &mut grads)?;
                }
                if let Some(max_norm) = state.cfg.grad_clip {
                    state.step.grad_norm = Some(clip_grad_norm(&mut grads, &state.params, max_norm)?);
                }
                let lr = state.step.lr;
                state.optimizer.step(&grads, lr)?;
                state.step.stepped = true;
                state.run.global_step += 1;
            }
            for h in hooks.iter_mut() {
                h.after_step(state)?;
            }
        }
        state.run.epoch += 1;
        state.run.iter = 0;
        let mut evaluate = |epoch: usize| task.evaluate(epoch);
        for h in hooks.iter_mut() {
            h.after_epoch(state, &mut evaluate)?;
        }
    }
    Ok(())
}

/// Keeps only the gradients of the parameters (the backward pass also holds every
/// intermediate's gradient, which accumulation should not keep alive).
fn keep_vars(grads: GradStore, params: &ParamStore) -> GradStore {
    let mut kept = GradStore::default();
    for (_, var) in params.trainable() {
        if let Some(g) = grads.get(var.as_tensor()) {
            kept.insert(var.as_tensor(), g.clone());
        }
    }
    kept
}

/// `acc + grads` for every parameter (gradient accumulation).
fn add_grads(mut acc: GradStore, grads: &GradStore, params: &ParamStore) -> candle_core::Result<GradStore> {
    for (_, var) in params.trainable() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let sum = match acc.get(var.as_tensor()) {
                Some(a) => (a + g)?,
                None => g.clone(),
            };
            acc.insert(var.as_tensor(), sum);
        }
    }
    Ok(acc)
}

/// torch `clip_grad_norm_` (L2): scales every gradient by `min(1, max_norm / (norm + 1e-6))`
/// where `norm` is the L2 norm of all gradients together; returns that norm.
pub fn clip_grad_norm(grads: &mut GradStore, params: &ParamStore, max_norm: f64) -> candle_core::Result<f64> {
    let vars = params.trainable();
    let mut sq = 0.0f64;
    for (_, var) in &vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            sq += sum_sq(g)?;
        }
    }
    let norm = sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for (_, var) in &vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = g.affine(coef, 0.0)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// The sum of squares of a tensor's elements, in f64 (one parallel pass over CPU f32 data).
fn sum_sq(t: &Tensor) -> candle_core::Result<f64> {
    use candle_core::{CpuStorage, Storage};
    use rayon::prelude::*;
    if t.device().is_cpu() && t.dtype() == DType::F32 {
        let t = t.contiguous()?;
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            // per-chunk sums added in a fixed order, so the result does not depend on scheduling
            let parts: Vec<f64> =
                v[a..b].par_chunks(1 << 14).map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum()).collect();
            return Ok(parts.iter().sum());
        }
    }
    t.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()
}

/// Restores weights, optimizer state and EMA from a checkpoint; returns its run state.
fn restore_into(state: &mut TrainState, path: &Path) -> Result<RunState, TrainError> {
    let resume_err = |msg: String| TrainError::Resume { path: path.to_path_buf(), msg };
    let ckpt = checkpoint::load(path, state.params.device())?;
    let run =
        ckpt.run.clone().ok_or_else(|| resume_err("no run state: a weights-only file cannot be resumed".into()))?;
    let report = state.params.load(&ckpt.weights)?;
    if !report.is_exact() {
        return Err(resume_err(format!("weights do not fit the model: {}", report.summary())));
    }
    state.optimizer.load_state(&ckpt.optimizer).map_err(|e| resume_err(e.to_string()))?;
    if let Some(ema) = &mut state.ema {
        if ckpt.ema.is_empty() {
            // as ConvNeXt's main.py: start the average from the loaded weights
            *ema = ModelEma::new(&state.params, ema.decay())?;
        } else {
            ema.load(&ckpt.ema).map_err(|e| resume_err(e.to_string()))?;
        }
    }
    Ok(run)
}

/// The checkpoint folder of a state.
fn checkpoint_dir(cfg: &TrainerConfig, work_dir: &Path) -> CheckpointDir {
    CheckpointDir::new(work_dir, cfg.keep_last)
}
