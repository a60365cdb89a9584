//! What several subcommands share: loading a config, building its model, loading a checkpoint.

use anyhow::{Context, Result};
use candle_core::Device;
use nextdet_backbones::weights::{describe, load_checkpoint};
use nextdet_engine::config::Config;
use nextdet_models::{build_model, Model, ModelConfig};
use std::path::{Path, PathBuf};

/// Loads a config file with its bases and applies `--cfg-options`.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<Config> {
    let mut cfg = Config::from_file(path)?;
    cfg.apply_overrides(overrides)?;
    Ok(cfg)
}

/// Builds the config's model on the CPU with seed 0 and, if given, loads a checkpoint into it.
/// For inference the checkpoint must fit exactly (a missing head would give random outputs);
/// notes such as a stripped prefix go to stderr.
pub fn build_with_checkpoint(cfg: &Config, checkpoint: Option<&Path>) -> Result<Model> {
    let model_cfg: ModelConfig = cfg.section("model")?;
    let model = build_model(&model_cfg, &Device::Cpu, 0).context("building the model")?;
    if let Some(path) = checkpoint {
        let outcome = load_checkpoint(model.params(), path, false)?;
        for note in &outcome.notes {
            eprintln!("{}: {note}", path.display());
        }
        if !outcome.report.is_exact() {
            anyhow::bail!("{}: checkpoint does not fit this model: {}", path.display(), describe(&outcome.report));
        }
    }
    Ok(model)
}

/// [`build_with_checkpoint`] for commands that need a classifier.
pub fn build_classifier(cfg: &Config, checkpoint: Option<&Path>) -> Result<nextdet_models::ImageClassifier> {
    match build_with_checkpoint(cfg, checkpoint)? {
        Model::Classifier(c) => Ok(c),
        Model::Detector(_) => anyhow::bail!("this command needs a classifier config (model.type: ImageClassifier)"),
    }
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if the platform reports it.
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// What a config's `model.type` asks for, to pick the training and testing path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// `ImageClassifier`.
    Classifier,
    /// `MaskRCNN` or `CascadeRCNN`.
    Detector,
}

/// Reads `model.type` without building anything.
pub fn model_kind(cfg: &Config) -> Result<ModelKind> {
    let kind: String = cfg.section("model.type")?;
    Ok(match kind.as_str() {
        "ImageClassifier" => ModelKind::Classifier,
        "MaskRCNN" | "CascadeRCNN" => ModelKind::Detector,
        other => anyhow::bail!("model.type `{other}` is not one of ImageClassifier, MaskRCNN, CascadeRCNN"),
    })
}

/// The initial weights of a training run: `--load-from` when given, else the config's
/// `load_from`. A config path that does not exist is an error naming where it was set and how
/// to start from scratch, raised before the model is built so a missing file fails fast.
pub fn initial_weights_path(cfg: &Config, cli: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(path) = cli {
        return Ok(Some(path.to_path_buf()));
    }
    let from_config = cfg.section::<Option<PathBuf>>("load_from")?;
    if let Some(path) = &from_config {
        anyhow::ensure!(
            path.is_file(),
            "{}: `load_from: {}` does not exist; train the model that writes it first (the shapes configs name \
             the command in their header), or start from scratch with --cfg-options load_from=null",
            cfg.origin("load_from").map_or_else(|| "the config".to_string(), |o| o.to_string()),
            path.display()
        );
    }
    Ok(from_config)
}

/// Loads initial weights for a fine-tune or a pretrained backbone (`--load-from`, `load_from`):
/// tolerant of a missing or re-sized head, and of a detector's neck and heads when only the
/// backbone comes from the file; what did not load is printed.
pub fn load_initial_weights(params: &nextdet_ops::ParamStore, path: &Path) -> Result<()> {
    let outcome = load_checkpoint(params, path, false)?;
    for note in &outcome.notes {
        eprintln!("{}: {note}", path.display());
    }
    if !outcome.report.is_exact() {
        eprintln!("{}: {}", path.display(), describe(&outcome.report));
    }
    anyhow::ensure!(
        outcome.report.missing.len() < params.tensors().len(),
        "{}: no tensor of the checkpoint fits this model ({})",
        path.display(),
        describe(&outcome.report)
    );
    Ok(())
}
