//! Reading a run's config: its file with `_base_` merges and `--cfg-options` overrides, the
//! check that every top-level key is one nextdet knows, and what the `model` section asks for.

use anyhow::{Context, Result};
use nextdet_engine::config::Config;
use nextdet_models::ModelConfig;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The top-level keys of a config; any other is a typo (`load_form`, `optimzer`) and an error
/// naming the closest of these. Each section is read into its own typed struct where it is used.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TopLevel {
    model: IgnoredAny,
    #[serde(default)]
    data: Option<IgnoredAny>,
    #[serde(default)]
    optimizer: Option<IgnoredAny>,
    #[serde(default)]
    lr_config: Option<IgnoredAny>,
    #[serde(default)]
    runner: Option<IgnoredAny>,
    #[serde(default)]
    load_from: Option<IgnoredAny>,
    #[serde(default)]
    work_dir: Option<IgnoredAny>,
    #[serde(default)]
    classes: Option<IgnoredAny>,
    #[serde(default)]
    device: Option<IgnoredAny>,
    #[serde(default)]
    fp16: Option<IgnoredAny>,
    #[serde(default)]
    precision: Option<IgnoredAny>,
}

/// Loads a config file with its bases, applies `overrides` (`a.b.c=value`) and checks its
/// top-level keys.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<Config> {
    let mut cfg = Config::from_file(path)?;
    cfg.apply_overrides(overrides)?;
    cfg.section::<TopLevel>("")?;
    crate::device::device_spec(&cfg)?;
    crate::mixed_precision::mixed_precision(&cfg)?;
    Ok(cfg)
}

/// What a config's `model.type` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// `ImageClassifier`.
    Classifier,
    /// `MaskRCNN` or `CascadeRCNN`.
    Detector,
}

/// The config's typed `model` section.
pub fn model_config(cfg: &Config) -> Result<ModelConfig> {
    Ok(cfg.section("model")?)
}

/// Which kind of model the config describes.
pub fn model_kind(cfg: &Config) -> Result<ModelKind> {
    Ok(match model_config(cfg)? {
        ModelConfig::ImageClassifier(_) => ModelKind::Classifier,
        ModelConfig::MaskRCNN(_) | ModelConfig::CascadeRCNN(_) => ModelKind::Detector,
    })
}

/// The config's file, for error messages ("the config" for one made in memory).
pub fn config_file(cfg: &Config) -> String {
    cfg.file().map_or_else(|| "the config".to_string(), |p| p.display().to_string())
}

/// Where a key was set, for error messages: the file (or the command line), else "the config".
pub fn origin_of(cfg: &Config, key: &str) -> String {
    cfg.origin(key).map_or_else(|| "the config".to_string(), |o| o.to_string())
}

/// The initial weights of a training run: `cli` (`--load-from`) when given, else the config's
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
            origin_of(cfg, "load_from"),
            path.display()
        );
    }
    Ok(from_config)
}

/// The work dir of a run: `explicit` (`--work-dir`), the config's `work_dir`, or
/// `work_dirs/<config file stem>`.
pub fn work_dir(cfg: &Config, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = cfg.section::<Option<PathBuf>>("work_dir")? {
        return Ok(dir);
    }
    let stem = cfg.file().and_then(|f| f.file_stem()).map_or("run".into(), |s| s.to_string_lossy().into_owned());
    Ok(PathBuf::from("work_dirs").join(stem))
}

/// Reads an optional section, with a context line naming it.
pub fn optional_section<T: serde::de::DeserializeOwned>(cfg: &Config, key: &str) -> Result<Option<T>> {
    cfg.section::<Option<T>>(key).with_context(|| format!("reading `{key}`"))
}

/// The inference precision a config asks for (`precision: f32 | bf16`, default `f32`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionConfig {
    /// Single precision.
    #[default]
    F32,
    /// bf16 inputs, f32 sums in the pointwise layers (see `nextdet_ops::Precision`).
    Bf16,
}

/// Sets the process's inference precision from the config's `precision` key; asking for bf16
/// on a CPU without AVX-512 BF16 keeps f32 with a warning.
pub fn apply_precision(cfg: &Config) -> Result<()> {
    let p = cfg.section::<Option<PrecisionConfig>>("precision")?.unwrap_or_default();
    if p == PrecisionConfig::Bf16 && !nextdet_ops::bf16_supported() {
        tracing::warn!("precision: bf16 needs AVX-512 BF16, which this CPU lacks; inference stays f32");
    }
    nextdet_ops::set_inference_precision(match p {
        PrecisionConfig::F32 => nextdet_ops::Precision::F32,
        PrecisionConfig::Bf16 => nextdet_ops::Precision::Bf16,
    });
    Ok(())
}
