//! Training from a config, mmdetection's `train_detector` behind `tools/train.py`: the model,
//! its data, optimizer and schedule are built from the config's sections, and the engine's
//! loop trains it in a work dir.
//!
//! A work dir holds one run. Training into a folder that holds another run's checkpoints or
//! log without `resume` is refused (nothing of the old run is replaced); with `overwrite` the
//! old run's files are first moved into `previous_runs/<n>/` inside the folder. The run's
//! merged config is written to `config.yaml` once the run has started (so a failed resume
//! leaves the folder's `config.yaml` alone).
//!
//! Data-parallel training (mmdetection's `tools/dist_train.sh`): every rank of the process's
//! default group ([`nextdet_dist::world`], set by the launcher) calls [`train`] with the same
//! config; each trains on its share of the data with `samples_per_gpu` (detection) or
//! `batch_size` (classification) images per step, so the global batch is that times the world
//! size. Rank 0 alone checks and writes the work dir.

use crate::config::{initial_weights_path, model_config, work_dir};
use crate::data::{ClsDataConfig, DetDataConfig};
use crate::tasks::{ClsSetup, DetTask};
use crate::weights::load_initial_weights;
use anyhow::{bail, Context, Result};
use nextdet_engine::checkpoint::{BestMetric, LATEST};
use nextdet_engine::config::Config;
use nextdet_engine::loss_scale::LossScaleHook;
use nextdet_engine::optim::{Optimizer, OptimizerConfig};
use nextdet_engine::schedule::{LrSchedule, LrScheduleConfig};
use nextdet_engine::trainer::{FitOutcome, Hook, TrainError, TrainState, TrainTask, Trainer, TrainerConfig};
use nextdet_models::{ImageClassifier, ModelConfig, TwoStageDetector};
use nextdet_ops::ParamStore;
use std::path::{Path, PathBuf};

/// Where a run continues from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Resume {
    /// A new run.
    #[default]
    No,
    /// The work dir's `latest.safetensors`.
    Latest,
    /// This checkpoint.
    From(PathBuf),
}

/// How to run a training config (the command line's options).
#[derive(Default)]
pub struct TrainOptions {
    /// Where checkpoints, logs and curves go (default: the config's `work_dir`, else
    /// `work_dirs/<config stem>`).
    pub work_dir: Option<PathBuf>,
    /// Continue a run.
    pub resume: Resume,
    /// Initial weights (a pretrained backbone or detector), not their run state; overrides the
    /// config's `load_from`.
    pub load_from: Option<PathBuf>,
    /// Overrides the config's `runner.seed`.
    pub seed: Option<u64>,
    /// Move another run found in the work dir aside instead of refusing to start.
    pub overwrite: bool,
    /// Hooks added after the built-in ones.
    pub hooks: Vec<Box<dyn Hook>>,
}

/// How a training run ended.
#[derive(Debug)]
pub struct TrainReport {
    /// The run's folder.
    pub work_dir: PathBuf,
    /// Completed or interrupted, with the last checkpoint.
    pub outcome: FitOutcome,
    /// The best evaluation result.
    pub best: Option<BestMetric>,
}

/// The engine sections of a config: `optimizer`, `lr_config` and `runner`, checked.
struct EngineSections {
    optimizer: OptimizerConfig,
    schedule: LrScheduleConfig,
    runner: TrainerConfig,
}

impl EngineSections {
    fn from_config(cfg: &Config, seed: Option<u64>) -> Result<Self> {
        let mut runner: TrainerConfig = cfg.section("runner")?;
        if let Some(seed) = seed {
            runner.seed = seed;
        }
        runner.validate().map_err(|e| anyhow::anyhow!("{}: {e}", crate::config::origin_of(cfg, "runner")))?;
        Ok(Self { optimizer: cfg.section("optimizer")?, schedule: cfg.section("lr_config")?, runner })
    }
}

/// Trains the model `cfg` describes (see the module docs). Every section is read and the data
/// opened before the model is built, so a bad config fails at once.
pub fn train(cfg: &Config, mut opts: TrainOptions) -> Result<TrainReport> {
    let sections = EngineSections::from_config(cfg, opts.seed)?;
    if opts.resume != Resume::No && opts.load_from.is_some() {
        bail!("--load-from and --resume exclude each other: a resumed run continues from its checkpoint's weights");
    }
    let dir = work_dir(cfg, opts.work_dir.as_deref())?;
    let group = nextdet_dist::world();
    let resume = match &opts.resume {
        Resume::No => {
            if group.is_main() {
                guard_work_dir(&dir, opts.overwrite)?;
            }
            // the other ranks start once rank 0 has cleared the folder (or failed)
            group.barrier()?;
            None
        }
        Resume::Latest => {
            let latest = dir.join(LATEST);
            anyhow::ensure!(latest.exists(), "--resume: no {} to resume from", latest.display());
            Some(latest)
        }
        Resume::From(path) => Some(path.clone()),
    };
    let load_from = if resume.is_some() { None } else { initial_weights_path(cfg, opts.load_from.as_deref())? };
    let seed = sections.runner.seed;
    let hooks = std::mem::take(&mut opts.hooks);
    let model_cfg = model_config(cfg)?;
    let device = crate::device::config_device(cfg)?;
    let autocast = crate::mixed_precision::autocast_for(cfg, &device)?;
    if let Some((c, kind)) = model_cfg.detector() {
        let data: DetDataConfig = cfg.section("data")?;
        let model =
            TwoStageDetector::new(c, kind, ParamStore::new(&device, seed), seed).context("building the model")?;
        model.params().set_autocast(autocast);
        let mut task = DetTask::new(Box::new(model), &data, c.roi_head.num_classes(), seed)
            .with_context(|| crate::config::config_file(cfg))?;
        return fit(&mut task, cfg, &dir, sections, resume.as_deref(), load_from.as_deref(), hooks);
    }
    let ModelConfig::ImageClassifier(model_cfg) = model_cfg else { unreachable!("not a detector") };
    let data: ClsDataConfig = cfg.section("data")?;
    let setup = ClsSetup::new(&data, model_cfg.num_classes).with_context(|| crate::config::config_file(cfg))?;
    let net = ImageClassifier::new(&model_cfg, ParamStore::new(&device, seed), seed).context("building the model")?;
    net.params().set_autocast(autocast);
    let mut task = setup.into_task(net, seed)?;
    fit(&mut task, cfg, &dir, sections, resume.as_deref(), load_from.as_deref(), hooks)
}

/// Builds optimizer, schedule and trainer for the task's parameters and trains it.
fn fit<T: TrainTask>(
    task: &mut T,
    cfg: &Config,
    dir: &Path,
    sections: EngineSections,
    resume: Option<&Path>,
    load_from: Option<&Path>,
    hooks: Vec<Box<dyn Hook>>,
) -> Result<TrainReport> {
    if let Some(path) = load_from {
        load_initial_weights(task.params(), path)?;
    }
    let config_text = cfg.to_yaml_string()?;
    let optimizer = Optimizer::from_config(&sections.optimizer, task.params()).context("building the optimizer")?;
    let schedule = LrSchedule::new(sections.schedule, sections.optimizer.lr, sections.runner.max_epochs);
    let mut trainer = Trainer::new(sections.runner, dir, optimizer, schedule)
        .with_config_text(config_text.clone())
        .with_hook(Box::new(WriteConfig { text: config_text }));
    let loss_scale = crate::mixed_precision::mixed_precision(cfg)?.and_then(|p| p.loss_scale);
    if let (Some(mode), false) = (loss_scale, task.params().device().is_cpu()) {
        trainer = trainer.with_hook(Box::new(LossScaleHook::new(mode)));
    }
    for h in hooks {
        trainer = trainer.with_hook(h);
    }
    let outcome = trainer.fit(task, resume)?;
    Ok(TrainReport { work_dir: dir.to_path_buf(), outcome, best: trainer.best_metric().cloned() })
}

/// Writes the run's merged config to `config.yaml` once the run has started (rank 0).
struct WriteConfig {
    text: String,
}

impl Hook for WriteConfig {
    fn before_train(&mut self, state: &mut TrainState) -> Result<(), TrainError> {
        if !state.group.is_main() {
            return Ok(());
        }
        let path = state.work_dir.join("config.yaml");
        std::fs::write(&path, &self.text).map_err(|e| TrainError::Output { path, msg: e.to_string() })
    }
}

/// The files of a run in its work dir.
fn run_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_run_file = name.ends_with(".safetensors")
            || matches!(name, "metrics.jsonl" | "curves.png" | "config.yaml")
            || name.ends_with(".safetensors.tmp");
        if is_run_file && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Refuses to start a new run in a folder that holds another one (checkpoints or a log), or
/// with `overwrite` moves that run's files into `previous_runs/<n>/`.
fn guard_work_dir(dir: &Path, overwrite: bool) -> Result<()> {
    let files = run_files(dir)?;
    let holds_run =
        files.iter().any(|f| f.extension().is_some_and(|e| e == "safetensors") || f.ends_with("metrics.jsonl"));
    if !holds_run {
        return Ok(());
    }
    if !overwrite {
        bail!(
            "{} holds another run ({} files, e.g. {}); continue it with --resume, train into another --work-dir, \
             or pass --overwrite to move the old run into {}/previous_runs/ first",
            dir.display(),
            files.len(),
            files[0].file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned()),
            dir.display()
        );
    }
    let previous = dir.join("previous_runs");
    let n = (1..).find(|n| !previous.join(n.to_string()).exists()).expect("a free number");
    let target = previous.join(n.to_string());
    std::fs::create_dir_all(&target).with_context(|| format!("cannot create {}", target.display()))?;
    for f in &files {
        let to = target.join(f.file_name().expect("a file"));
        std::fs::rename(f, &to).with_context(|| format!("cannot move {} to {}", f.display(), to.display()))?;
    }
    tracing::warn!("moved the previous run in {} ({} files) to {}", dir.display(), files.len(), target.display());
    Ok(())
}
