//! `nextdet train CONFIG`: builds the config's model, its data, optimizer and schedule, and runs
//! the engine's training loop (`nextdet_engine::trainer`). Classifiers and detectors each bring
//! a [`nextdet_engine::trainer::TrainTask`]; what they share (sections, work dir, resume and
//! load-from) is here.

use anyhow::{Context, Result};
use nextdet_engine::config::Config;
use nextdet_engine::optim::{Optimizer, OptimizerConfig};
use nextdet_engine::schedule::{LrSchedule, LrScheduleConfig};
use nextdet_engine::trainer::{FitOutcome, TrainTask, Trainer, TrainerConfig};
use nextdet_ops::ParamStore;
use std::path::{Path, PathBuf};

/// The command-line options of `nextdet train`.
pub struct TrainOptions {
    /// The config file (its stem names the default work dir).
    pub config: PathBuf,
    /// Where checkpoints, logs and curves go (default `work_dirs/<config stem>`).
    pub work_dir: Option<PathBuf>,
    /// Resume from this checkpoint, or from the work dir's `latest` when `Some(None)`.
    pub resume: Option<Option<PathBuf>>,
    /// Initial weights only (a pretrained backbone or a detector checkpoint).
    pub load_from: Option<PathBuf>,
    /// Overrides the config's `train.seed`.
    pub seed: Option<u64>,
}

impl TrainOptions {
    /// The work dir: `--work-dir`, the config's `work_dir`, or `work_dirs/<config stem>`.
    pub fn work_dir(&self, cfg: &Config) -> PathBuf {
        if let Some(dir) = &self.work_dir {
            return dir.clone();
        }
        if let Ok(dir) = cfg.section::<PathBuf>("work_dir") {
            return dir;
        }
        let stem = self.config.file_stem().map_or("run".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("work_dirs").join(stem)
    }

    /// The checkpoint to resume from, if any (`--resume` alone takes `latest.safetensors`).
    pub fn resume_path(&self, work_dir: &Path) -> Result<Option<PathBuf>> {
        match &self.resume {
            None => Ok(None),
            Some(Some(p)) => Ok(Some(p.clone())),
            Some(None) => {
                let latest = work_dir.join("latest.safetensors");
                anyhow::ensure!(latest.exists(), "--resume: no {} to resume from", latest.display());
                Ok(Some(latest))
            }
        }
    }
}

/// The engine sections of a config: `optimizer`, `lr_config` and `runner`.
pub struct EngineSections {
    /// `optimizer:`
    pub optimizer: OptimizerConfig,
    /// `lr_config:`
    pub schedule: LrScheduleConfig,
    /// `runner:`
    pub runner: TrainerConfig,
}

impl EngineSections {
    /// Reads the three sections, naming the file and key of any error.
    pub fn from_config(cfg: &Config, seed: Option<u64>) -> Result<Self> {
        let mut runner: TrainerConfig = cfg.section("runner")?;
        if let Some(seed) = seed {
            runner.seed = seed;
        }
        Ok(Self { optimizer: cfg.section("optimizer")?, schedule: cfg.section("lr_config")?, runner })
    }
}

/// Builds optimizer, schedule and trainer for `params` and trains `task`, then prints where the
/// results are.
pub fn fit<T: TrainTask>(
    task: &mut T,
    params: &ParamStore,
    cfg: &Config,
    opts: &TrainOptions,
    sections: EngineSections,
) -> Result<()> {
    let work_dir = opts.work_dir(cfg);
    std::fs::create_dir_all(&work_dir).with_context(|| format!("cannot create {}", work_dir.display()))?;
    let config_text = cfg.to_yaml_string()?;
    std::fs::write(work_dir.join("config.yaml"), &config_text)
        .with_context(|| format!("cannot write {}", work_dir.join("config.yaml").display()))?;
    let optimizer = Optimizer::from_config(&sections.optimizer, params).context("building the optimizer")?;
    let schedule = LrSchedule::new(sections.schedule, sections.optimizer.lr, sections.runner.max_epochs);
    let resume = opts.resume_path(&work_dir)?;
    let mut trainer = Trainer::new(sections.runner, &work_dir, optimizer, schedule).with_config_text(config_text);
    let outcome = trainer.fit(task, resume.as_deref())?;
    match outcome {
        FitOutcome::Interrupted { .. } => {
            eprintln!("interrupted; resume with `nextdet train {} --resume`", opts.config.display())
        }
        _ => eprintln!("done; checkpoints, metrics.jsonl and curves.png are in {}", work_dir.display()),
    }
    if let Some(best) = trainer.best_metric() {
        eprintln!("best {}: {:.4} (epoch {})", best.name, best.value, best.epoch);
    }
    Ok(())
}
