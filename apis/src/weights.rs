//! Building a config's model and putting weights into it: strictly for inference and testing (a
//! checkpoint that does not fit is an error: a missing head would give random outputs), and
//! tolerantly for the initial weights of a fine-tune (`load_from`, `--load-from`).

use anyhow::{Context, Result};
use nextdet_backbones::weights::{describe_non_finite, load_checkpoint};
use nextdet_engine::config::Config;
use nextdet_models::{build_model, Model};
use nextdet_ops::ParamStore;
use std::path::Path;

/// Builds the config's model on its `device` (the CPU by default), parameters initialised from
/// `seed`.
pub fn build(cfg: &Config, seed: u64) -> Result<Model> {
    let device = crate::device::config_device(cfg)?;
    let model = build_model(&crate::config::model_config(cfg)?, &device, seed).context("building the model")?;
    model.params().set_autocast(crate::mixed_precision::autocast_for(cfg, &device)?);
    Ok(model)
}

/// Loads `path` into `params`, every tensor of the model and nothing else; notes (a stripped
/// prefix) go to the log.
pub fn load_strict(params: &ParamStore, path: &Path) -> Result<()> {
    let outcome = load_checkpoint(params, path, false)?;
    for note in &outcome.notes {
        tracing::info!("{}: {note}", path.display());
    }
    anyhow::ensure!(
        outcome.report.is_exact(),
        "{}: checkpoint does not fit this model: {}",
        path.display(),
        outcome.report.summary()
    );
    anyhow::ensure!(
        outcome.non_finite.is_empty(),
        "{}: {}; refusing to evaluate or run a model with them",
        path.display(),
        describe_non_finite(&outcome.non_finite)
    );
    Ok(())
}

/// Builds the config's model and loads `checkpoint` into it strictly.
pub fn build_with_checkpoint(cfg: &Config, checkpoint: &Path) -> Result<Model> {
    let model = build(cfg, 0)?;
    load_strict(model.params(), checkpoint)?;
    Ok(model)
}

/// Loads initial weights for a fine-tune or a pretrained backbone: tolerant of a missing or
/// re-sized head, and of a detector's neck and heads when only the backbone comes from the
/// file; what did not load is reported as a warning. A file none of whose tensors fits is an
/// error.
pub fn load_initial_weights(params: &ParamStore, path: &Path) -> Result<()> {
    let outcome = load_checkpoint(params, path, false)?;
    for note in &outcome.notes {
        tracing::info!("{}: {note}", path.display());
    }
    if !outcome.report.is_exact() {
        tracing::warn!("{}: {}", path.display(), outcome.report.summary());
    }
    if !outcome.non_finite.is_empty() {
        tracing::warn!(
            "{}: {}; training starts from them anyway",
            path.display(),
            describe_non_finite(&outcome.non_finite)
        );
    }
    anyhow::ensure!(
        outcome.report.missing.len() < params.tensors().len(),
        "{}: no tensor of the checkpoint fits this model ({})",
        path.display(),
        outcome.report.summary()
    );
    Ok(())
}

/// Converts any checkpoint nextdet reads (`.pth` or safetensors, official or timm names,
/// `module.` prefixes) to a safetensors file under the official names, written atomically.
/// Returns the number of tensors written and the notes of the conversion.
pub fn convert_weights(input: &Path, output: &Path) -> Result<(usize, Vec<String>)> {
    let (tensors, notes) = nextdet_backbones::weights::read_canonical(input)?;
    let tmp = output.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("moving {} into place", output.display()))?;
    Ok((tensors.len(), notes))
}
