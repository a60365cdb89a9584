//! What several subcommands share: loading a config, building its model, loading a checkpoint.

use anyhow::{Context, Result};
use candle_core::Device;
use nextdet_backbones::weights::{describe, load_checkpoint};
use nextdet_engine::config::Config;
use nextdet_models::{build_model, Model, ModelConfig};
use std::path::Path;

/// Loads a config file with its bases and applies `--cfg-options`.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<Config> {
    let mut cfg = Config::from_file(path)?;
    cfg.apply_overrides(overrides)?;
    Ok(cfg)
}

/// Builds the config's model on the CPU with seed 0 and, if given, loads a checkpoint into it
/// (strictly for a full checkpoint; notes such as a dropped head go to stderr).
pub fn build_with_checkpoint(cfg: &Config, checkpoint: Option<&Path>) -> Result<Model> {
    let model_cfg: ModelConfig = cfg.section("model")?;
    let model = build_model(&model_cfg, &Device::Cpu, 0).context("building the model")?;
    if let Some(path) = checkpoint {
        let Model::Classifier(c) = &model;
        let outcome = load_checkpoint(c.params(), path, false)?;
        for note in &outcome.notes {
            eprintln!("{}: {note}", path.display());
        }
        if !outcome.report.is_exact() {
            let only_new_head = outcome.report.unexpected.is_empty()
                && outcome.report.mismatched.is_empty()
                && outcome.report.missing.iter().all(|n| n.starts_with("head.") || n.starts_with("fc."));
            if !only_new_head {
                anyhow::bail!("{}: checkpoint does not fit this model: {}", path.display(), describe(&outcome.report));
            }
        }
    }
    Ok(model)
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if the platform reports it.
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
