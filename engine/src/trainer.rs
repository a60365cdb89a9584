//! The training loop, generic over a [`TrainTask`].
//!
//! Per iteration: the task's batch, its named losses (summed into the total), a backward pass of
//! the total divided by the accumulation count, and every `accumulate` iterations a gradient clip
//! by global norm (torch `clip_grad_norm_`), an optimizer step at the scheduled learning rate and
//! an EMA update. Around it: an indicatif progress bar (loss parts, lr, speed, ETA), one JSON line
//! per log interval and per evaluation in `work_dir/metrics.jsonl`, `work_dir/curves.png`,
//! epoch checkpoints with `latest` and pruning, exact resume, a stop on a non-finite loss that
//! names the iteration and the loss part (no checkpoint is written then, so the last good one
//! stays), and Ctrl-C, which saves `interrupted.safetensors` at the next step boundary.
//!
//! Exact resume: the loop keeps no random state of its own. A task that needs randomness derives
//! it from [`iteration_seed`]`(seed, epoch, iter)`, so a resumed run sees the same batches as an
//! uninterrupted one, and weights, optimizer state and EMA come back from the checkpoint.

use crate::checkpoint::{self, BestMetric, Checkpoint, CheckpointDir, CheckpointError, RunState};
use crate::ema::ModelEma;
use crate::optim::Optimizer;
use crate::plot::{plot_curves, Series};
use crate::schedule::LrSchedule;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nextdet_ops::params::ParamStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

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
    /// Named scalars of a batch: those whose name contains `loss` are summed into the total and
    /// trained; the others (an accuracy, say) are only logged.
    fn losses(&mut self, batch: &Self::Batch) -> anyhow::Result<Vec<(String, Tensor)>>;
    /// Named metrics after epoch `epoch` (from 1). The first one is tracked as the best metric.
    fn evaluate(&mut self, epoch: usize) -> anyhow::Result<Vec<(String, f64)>>;
    /// The parameters being trained (the optimizer's groups must hold the same vars).
    fn params(&self) -> &ParamStore;
}

fn one() -> usize {
    1
}

fn fifty() -> usize {
    50
}

fn yes() -> bool {
    true
}

/// The runner settings (mmdet's `runner`, `optimizer_config`, `checkpoint_config`,
/// `log_config`, `evaluation` in one section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// Epochs to train.
    pub max_epochs: usize,
    /// Clip gradients to this global L2 norm (torch `clip_grad_norm_`); none by default.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Batches per optimizer step (gradient accumulation); the loss is divided by it.
    #[serde(default = "one")]
    pub accumulate: usize,
    /// Iterations per logged line.
    #[serde(default = "fifty")]
    pub log_interval: usize,
    /// Evaluate every N epochs (0: never).
    #[serde(default = "one")]
    pub eval_interval: usize,
    /// Save an epoch checkpoint every N epochs (0: only `latest` at the end).
    #[serde(default = "one")]
    pub checkpoint_interval: usize,
    /// Keep the last K epoch checkpoints (0: all).
    #[serde(default)]
    pub keep_last: usize,
    /// EMA decay of the weights (timm `ModelEmaV2`); none by default.
    #[serde(default)]
    pub ema: Option<f64>,
    /// The run's seed.
    #[serde(default)]
    pub seed: u64,
    /// Also evaluate the EMA weights after each evaluation (CNX `--model_ema_eval`); their
    /// metrics are logged with an `ema_` prefix.
    #[serde(default)]
    pub ema_eval: bool,
    /// Catch Ctrl-C and save an `interrupted` checkpoint.
    #[serde(default = "yes")]
    pub catch_ctrlc: bool,
}

impl Default for TrainerConfig {
    /// mmdetection's 1x runner: 12 epochs, no clipping, a log line every 50 iterations, an
    /// evaluation and a checkpoint every epoch, all checkpoints kept, no EMA, seed 0.
    fn default() -> Self {
        Self {
            max_epochs: 12,
            grad_clip: None,
            accumulate: 1,
            log_interval: 50,
            eval_interval: 1,
            checkpoint_interval: 1,
            keep_last: 0,
            ema: None,
            seed: 0,
            ema_eval: false,
            catch_ctrlc: true,
        }
    }
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

/// Set by the Ctrl-C handler (installed once per process).
static CTRL_C: AtomicBool = AtomicBool::new(false);
static CTRL_C_INSTALLED: OnceLock<bool> = OnceLock::new();

fn install_ctrlc() {
    CTRL_C_INSTALLED.get_or_init(|| {
        ctrlc::set_handler(|| {
            if CTRL_C.swap(true, Ordering::SeqCst) {
                eprintln!("second Ctrl-C: exiting without saving");
                std::process::exit(130);
            }
            eprintln!("Ctrl-C: saving an `interrupted` checkpoint at the next step boundary (again to quit now)");
        })
        .is_ok()
    });
}

/// Loss parts accumulated over one log interval.
#[derive(Default)]
struct LogBuffer {
    sums: BTreeMap<String, f64>,
    order: Vec<String>,
    count: usize,
    samples: usize,
    counted_samples: bool,
    data_secs: f64,
    grad_norm: Option<(f64, usize)>,
    start: Option<Instant>,
}

/// The training loop (see the module docs).
pub struct Trainer {
    cfg: TrainerConfig,
    work_dir: PathBuf,
    optimizer: Optimizer,
    schedule: LrSchedule,
    ema: Option<ModelEma>,
    config_text: Option<String>,
    interrupt: Arc<AtomicBool>,
    best: Option<BestMetric>,
    loss_curves: BTreeMap<String, Vec<(f64, f64)>>,
    metric_curves: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Trainer {
    /// A trainer writing into `work_dir` with `optimizer` (whose groups hold the task's
    /// parameters) and `schedule`.
    pub fn new(cfg: TrainerConfig, work_dir: impl Into<PathBuf>, optimizer: Optimizer, schedule: LrSchedule) -> Self {
        Self {
            cfg,
            work_dir: work_dir.into(),
            optimizer,
            schedule,
            ema: None,
            config_text: None,
            interrupt: Arc::new(AtomicBool::new(false)),
            best: None,
            loss_curves: BTreeMap::new(),
            metric_curves: BTreeMap::new(),
        }
    }

    /// Stores the merged config text in every checkpoint's run state.
    pub fn with_config_text(mut self, yaml: impl Into<String>) -> Self {
        self.config_text = Some(yaml.into());
        self
    }

    /// A flag that, once set, stops the run at the next step boundary with an `interrupted`
    /// checkpoint, as Ctrl-C does.
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        self.interrupt.clone()
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// The EMA of the weights, once [`Trainer::fit`] has started with `ema` set.
    pub fn ema(&self) -> Option<&ModelEma> {
        self.ema.as_ref()
    }

    /// The best metric seen so far.
    pub fn best_metric(&self) -> Option<&BestMetric> {
        self.best.as_ref()
    }

    /// Trains `task` for the configured epochs, from scratch or from the checkpoint `resume`.
    pub fn fit<T: TrainTask>(&mut self, task: &mut T, resume: Option<&Path>) -> Result<FitOutcome, TrainError> {
        let accumulate = self.cfg.accumulate;
        if accumulate == 0 {
            return Err(TrainError::Config("accumulate must be at least 1".into()));
        }
        let iters = task.iters_per_epoch();
        if iters == 0 {
            return Err(TrainError::Config("the task has no iterations per epoch".into()));
        }
        if self.cfg.catch_ctrlc {
            install_ctrlc();
        }
        CTRL_C.store(false, Ordering::SeqCst);
        std::fs::create_dir_all(&self.work_dir).map_err(|e| self.output_err(&self.work_dir, e))?;
        let ckpts = CheckpointDir::new(&self.work_dir, self.cfg.keep_last);
        let steps_per_epoch = iters.div_ceil(accumulate);
        let params = task.params().clone();
        let ids: std::collections::HashSet<_> = params.trainable().iter().map(|(_, v)| v.as_tensor().id()).collect();
        for group in self.optimizer.groups() {
            if let Some((name, _)) = group.params.iter().find(|(_, v)| !ids.contains(&v.as_tensor().id())) {
                return Err(TrainError::Config(format!(
                    "optimizer parameter `{name}` (group `{}`) is not a trainable parameter of the task",
                    group.name
                )));
            }
        }
        self.ema = match self.cfg.ema {
            Some(decay) => Some(ModelEma::new(&params, decay)?),
            None => None,
        };
        let mut run = RunState { seed: self.cfg.seed, config: self.config_text.clone(), ..Default::default() };
        if let Some(path) = resume {
            run = self.restore(path, &params)?;
            if run.seed != self.cfg.seed {
                tracing::warn!(
                    "{}: saved with seed {}, resumed with seed {}: batches will differ",
                    path.display(),
                    run.seed,
                    self.cfg.seed
                );
                run.seed = self.cfg.seed;
            }
            run.config = self.config_text.clone().or(run.config);
        }
        self.trim_metrics(&run)?;

        let total = (self.cfg.max_epochs * iters) as u64;
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_position(run.global_iter.min(total));
        bar.reset_eta();
        let mut last_ckpt = None;
        let mut log = LogBuffer::default();

        while run.epoch < self.cfg.max_epochs {
            let epoch = run.epoch;
            bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.cfg.max_epochs));
            let mut pending: Option<GradStore> = None;
            let mut pending_count = 0usize;
            while run.iter < iters {
                let iter = run.iter;
                if pending.is_none() && (self.interrupt.load(Ordering::SeqCst) || CTRL_C.load(Ordering::SeqCst)) {
                    CTRL_C.store(false, Ordering::SeqCst);
                    self.interrupt.store(false, Ordering::SeqCst);
                    let path = ckpts.save_named("interrupted", &self.checkpoint(&params, &run)?)?;
                    bar.abandon_with_message(format!("interrupted; saved {}", path.display()));
                    self.plot();
                    return Ok(FitOutcome::Interrupted { checkpoint: path });
                }
                if log.start.is_none() {
                    log.start = Some(Instant::now());
                }
                let task_err = |source| TrainError::Task { epoch: epoch + 1, iter: iter + 1, source };
                let data_start = Instant::now();
                let batch = task.batch(epoch, iter).map_err(task_err)?;
                log.data_secs += data_start.elapsed().as_secs_f64();
                let size = task.batch_size(&batch);
                log.counted_samples |= size.is_some();
                log.samples += size.unwrap_or(1);
                let parts = task.losses(&batch).map_err(task_err)?;
                let mut sum: Option<Tensor> = None;
                for (name, loss) in &parts {
                    let value = loss.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
                    if !value.is_finite() {
                        bar.abandon();
                        return Err(TrainError::NonFinite {
                            epoch: epoch + 1,
                            iter: iter + 1,
                            global_iter: run.global_iter + 1,
                            part: name.clone(),
                            value,
                        });
                    }
                    if !log.sums.contains_key(name) {
                        log.order.push(name.clone());
                    }
                    *log.sums.entry(name.clone()).or_default() += value;
                    // mmdetection's `parse_losses`: parts named `*loss*` make the total; the
                    // others (`acc`) are logged only.
                    if !name.contains("loss") {
                        continue;
                    }
                    let l = loss.sum_all()?;
                    sum = Some(match sum {
                        Some(s) => (s + l)?,
                        None => l,
                    });
                }
                let Some(total_loss) = sum else {
                    return Err(task_err(anyhow::anyhow!("the task returned no losses")));
                };
                *log.sums.entry("loss".into()).or_default() += total_loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                log.count += 1;
                // the last group of an epoch may be short: divide by its real size, as mmcv does
                let group_start = iter / accumulate * accumulate;
                let group_len = accumulate.min(iters - group_start);
                let grads = (total_loss / group_len as f64)?.backward()?;
                pending = Some(match pending.take() {
                    None => keep_vars(grads, &params),
                    Some(mut acc) => {
                        for (_, var) in params.trainable() {
                            if let Some(g) = grads.get(var.as_tensor()) {
                                let sum = match acc.get(var.as_tensor()) {
                                    Some(a) => (a + g)?,
                                    None => g.clone(),
                                };
                                acc.insert(var.as_tensor(), sum);
                            }
                        }
                        acc
                    }
                });
                pending_count += 1;
                run.iter += 1;
                run.global_iter += 1;
                let mut lr = f64::NAN;
                if pending_count == group_len {
                    let mut grads = pending.take().expect("pending gradients");
                    pending_count = 0;
                    if let Some(max_norm) = self.cfg.grad_clip {
                        let norm = clip_grad_norm(&mut grads, &params, max_norm)?;
                        let (sum, n) = log.grad_norm.unwrap_or((0.0, 0));
                        log.grad_norm = Some((sum + norm, n + 1));
                    }
                    lr = self.schedule.lr_at(epoch, iter / accumulate, steps_per_epoch);
                    self.optimizer.step(&grads, lr)?;
                    if let Some(ema) = &mut self.ema {
                        ema.update(&params)?;
                    }
                    run.global_step += 1;
                }
                bar.inc(1);
                if run.iter.is_multiple_of(self.cfg.log_interval.max(1)) || run.iter == iters {
                    let lr =
                        if lr.is_nan() { self.schedule.lr_at(epoch, iter / accumulate, steps_per_epoch) } else { lr };
                    self.log_train(&mut log, &run, lr, &bar)?;
                }
            }
            // epoch done
            run.epoch += 1;
            run.iter = 0;
            let done = run.epoch;
            let last = done == self.cfg.max_epochs;
            let interval = self.cfg.checkpoint_interval;
            if (interval > 0 && done.is_multiple_of(interval)) || last {
                let ckpt = self.checkpoint(&params, &run)?;
                last_ckpt = Some(if interval > 0 {
                    ckpts.save_epoch(done, &ckpt)?
                } else {
                    ckpts.save_named("final", &ckpt)?
                });
            }
            if self.cfg.eval_interval > 0 && (done.is_multiple_of(self.cfg.eval_interval) || last) {
                let metrics =
                    task.evaluate(done).map_err(|source| TrainError::Task { epoch: done, iter: 0, source })?;
                let mut metrics = metrics;
                if let (true, Some(ema)) = (self.cfg.ema_eval, &self.ema) {
                    let own: std::collections::HashMap<String, Tensor> = params
                        .tensors()
                        .into_iter()
                        .map(|(n, t)| Ok((n, t.copy()?)))
                        .collect::<candle_core::Result<_>>()?;
                    params.load(&ema.state())?;
                    let ema_metrics = task.evaluate(done);
                    params.load(&own)?;
                    let ema_metrics =
                        ema_metrics.map_err(|source| TrainError::Task { epoch: done, iter: 0, source })?;
                    metrics.extend(ema_metrics.into_iter().map(|(k, v)| (format!("ema_{k}"), v)));
                }
                self.log_eval(done, &metrics)?;
                if let Some((name, value)) = metrics.first() {
                    if self.best.as_ref().is_none_or(|b| *value > b.value) {
                        self.best = Some(BestMetric { name: name.clone(), value: *value, epoch: done });
                    }
                }
            }
            self.plot();
        }
        bar.finish();
        Ok(FitOutcome::Completed { checkpoint: last_ckpt })
    }

    /// Loads a checkpoint into the parameters, optimizer and EMA; returns its run state.
    fn restore(&mut self, path: &Path, params: &ParamStore) -> Result<RunState, TrainError> {
        let resume_err = |msg: String| TrainError::Resume { path: path.to_path_buf(), msg };
        let ckpt = checkpoint::load(path, params.device())?;
        let run =
            ckpt.run.clone().ok_or_else(|| resume_err("no run state: a weights-only file cannot be resumed".into()))?;
        let report = params.load(&ckpt.weights)?;
        if !report.is_exact() {
            return Err(resume_err(format!(
                "weights do not fit the model: missing {:?}, unexpected {:?}, mismatched {:?}",
                report.missing, report.unexpected, report.mismatched
            )));
        }
        self.optimizer.load_state(&ckpt.optimizer).map_err(|e| resume_err(e.to_string()))?;
        if let Some(ema) = &mut self.ema {
            if ckpt.ema.is_empty() {
                // as CNX: start the average from the loaded weights
                *ema = ModelEma::new(params, ema.decay())?;
            } else {
                ema.load(&ckpt.ema).map_err(|e| resume_err(e.to_string()))?;
            }
        }
        self.best = run.best_metric.clone();
        Ok(run)
    }

    /// A checkpoint of the current state.
    fn checkpoint(&self, params: &ParamStore, run: &RunState) -> Result<Checkpoint, TrainError> {
        let mut run = run.clone();
        run.best_metric = self.best.clone();
        Ok(Checkpoint {
            weights: params.tensors().into_iter().collect(),
            optimizer: self.optimizer.state_tensors()?.into_iter().collect(),
            ema: self.ema.as_ref().map(|e| e.state()).unwrap_or_default(),
            run: Some(run),
        })
    }

    fn metrics_path(&self) -> PathBuf {
        self.work_dir.join("metrics.jsonl")
    }

    fn output_err(&self, path: &Path, e: impl std::fmt::Display) -> TrainError {
        TrainError::Output { path: path.to_path_buf(), msg: e.to_string() }
    }

    /// Drops log lines past the resume point (a resumed run logs them again) and reloads the
    /// curves from the rest.
    fn trim_metrics(&mut self, run: &RunState) -> Result<(), TrainError> {
        let path = self.metrics_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.output_err(&path, e)),
        };
        let mut kept = String::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let keep = match v.get("mode").and_then(|m| m.as_str()) {
                Some("train") => v.get("global_iter").and_then(|g| g.as_u64()).is_some_and(|g| g <= run.global_iter),
                Some("val") => v.get("epoch").and_then(|g| g.as_u64()).is_some_and(|e| e as usize <= run.epoch),
                _ => false,
            };
            if keep {
                self.add_curves(&v);
                kept.push_str(line);
                kept.push('\n');
            }
        }
        checkpoint::write_atomic(&path, kept.as_bytes())?;
        Ok(())
    }

    /// Adds one metrics line to the plotted curves.
    fn add_curves(&mut self, v: &serde_json::Value) {
        let Some(obj) = v.as_object() else { return };
        let train = obj.get("mode").and_then(|m| m.as_str()) == Some("train");
        let x = if train { obj.get("global_iter") } else { obj.get("epoch") }.and_then(|x| x.as_f64());
        let Some(x) = x else { return };
        for (k, val) in obj {
            let Some(y) = val.as_f64() else { continue };
            if train && (k == "loss" || k.starts_with("loss_")) {
                self.loss_curves.entry(k.clone()).or_default().push((x, y));
            } else if !train && k != "epoch" {
                self.metric_curves.entry(k.clone()).or_default().push((x, y));
            }
        }
    }

    fn append_line(&mut self, line: serde_json::Value) -> Result<(), TrainError> {
        let path = self.metrics_path();
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| self.output_err(&path, e))?;
        writeln!(f, "{line}").map_err(|e| self.output_err(&path, e))?;
        self.add_curves(&line);
        Ok(())
    }

    fn log_train(&mut self, log: &mut LogBuffer, run: &RunState, lr: f64, bar: &ProgressBar) -> Result<(), TrainError> {
        let n = log.count.max(1) as f64;
        let secs = log.start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
        let mut line = serde_json::Map::new();
        line.insert("mode".into(), "train".into());
        line.insert("epoch".into(), (run.epoch + 1).into());
        line.insert("iter".into(), run.iter.into());
        line.insert("global_iter".into(), run.global_iter.into());
        line.insert("lr".into(), lr.into());
        let mut msg = String::new();
        for name in std::iter::once("loss".to_string()).chain(log.order.iter().cloned()) {
            let mean = log.sums.get(&name).copied().unwrap_or(0.0) / n;
            line.insert(name.clone(), mean.into());
            msg.push_str(&format!("{name} {mean:.4} "));
        }
        if let Some((sum, count)) = log.grad_norm {
            line.insert("grad_norm".into(), (sum / count.max(1) as f64).into());
        }
        line.insert("time".into(), (secs / n).into());
        line.insert("data_time".into(), (log.data_secs / n).into());
        let speed = if secs > 0.0 { log.samples as f64 / secs } else { 0.0 };
        line.insert("speed".into(), speed.into());
        let unit = if log.counted_samples { "img/s" } else { "it/s" };
        msg.push_str(&format!("lr {lr:.3e} {speed:.2} {unit}"));
        bar.set_message(msg.clone());
        if bar.is_hidden() {
            // No terminal (a log file, CI): one text line per log interval, as mmdetection prints.
            let eta = bar.eta().as_secs();
            eprintln!(
                "epoch {} iter {}: {msg} eta {}:{:02}:{:02}",
                run.epoch + 1,
                run.iter,
                eta / 3600,
                eta / 60 % 60,
                eta % 60
            );
        }
        *log = LogBuffer::default();
        self.append_line(serde_json::Value::Object(line))
    }

    fn log_eval(&mut self, epoch: usize, metrics: &[(String, f64)]) -> Result<(), TrainError> {
        let mut line = serde_json::Map::new();
        line.insert("mode".into(), "val".into());
        line.insert("epoch".into(), epoch.into());
        for (k, v) in metrics {
            line.insert(k.clone(), (*v).into());
        }
        tracing::info!("epoch {epoch} evaluation: {metrics:?}");
        self.append_line(serde_json::Value::Object(line))
    }

    /// Redraws `curves.png`; a drawing failure is reported, not fatal.
    fn plot(&self) {
        let to_series = |m: &BTreeMap<String, Vec<(f64, f64)>>| -> Vec<Series> {
            m.iter().map(|(k, v)| Series { name: k.clone(), points: v.clone() }).collect()
        };
        let path = self.work_dir.join("curves.png");
        if let Err(e) = plot_curves(&path, &to_series(&self.loss_curves), &to_series(&self.metric_curves)) {
            tracing::warn!("{e}");
        }
    }
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
