//! `nextdet classify` (top-k classes of a few images) and `nextdet test` for classifiers
//! (top-1 / top-5 on an ImageFolder validation set), with the official evaluation
//! preprocessing from the config's `data.test.transform`.

use crate::common::{build_classifier, load_config};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use nextdet_datasets::{load_rgb8, EvalTransform, ImageFolder};
use nextdet_engine::config::Config;
use nextdet_evaluation::{top_k_indices, TopKAccuracy};
use nextdet_models::ImageClassifier;
use rayon::prelude::*;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The ImageNet-1k class names, in index order.
const IMAGENET1K_CLASSES: &str = include_str!("../assets/imagenet1k_classes.txt");

/// The `data` section of a classification config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassificationData {
    /// `imagenet1k` (shipped), or a text file with one class name per line.
    #[serde(default)]
    class_names: Option<String>,
    /// The evaluation split.
    #[serde(default)]
    test: Option<TestSplit>,
    /// The training split, read by `nextdet train` (`train_cls`); ignored here.
    #[serde(default, rename = "train")]
    _train: Option<serde::de::IgnoredAny>,
}

/// An evaluation split, chosen by its `type` key.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum TestSplit {
    /// One folder per class under `root`.
    ImageFolder(ImageFolderSplit),
}

/// `{type: ImageFolder, root, batch_size, transform}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageFolderSplit {
    root: PathBuf,
    #[serde(default = "default_batch_size")]
    batch_size: usize,
    transform: EvalTransform,
}

fn default_batch_size() -> usize {
    16
}

/// The classifier, its class names and its evaluation transform, from a config and checkpoint.
struct Setup {
    net: ImageClassifier,
    names: Vec<String>,
    transform: EvalTransform,
    data: ClassificationData,
}

fn setup(cfg: &Config, checkpoint: &Path) -> Result<Setup> {
    let net = build_classifier(cfg, Some(checkpoint))?;
    let data: ClassificationData = cfg.section::<Option<ClassificationData>>("data")?.unwrap_or(ClassificationData {
        class_names: None,
        test: None,
        _train: None,
    });
    let names = class_names(data.class_names.as_deref(), net.num_classes())?;
    let transform = match &data.test {
        Some(TestSplit::ImageFolder(split)) => split.transform.clone(),
        None => EvalTransform::new(224),
    };
    transform.validate()?;
    Ok(Setup { net, names, transform, data })
}

/// Class names from the config's `data.class_names`, or `class_<i>` when none are given.
fn class_names(source: Option<&str>, num_classes: usize) -> Result<Vec<String>> {
    let names: Vec<String> = match source {
        None => return Ok((0..num_classes).map(|i| format!("class_{i}")).collect()),
        Some("imagenet1k") => IMAGENET1K_CLASSES.lines().map(str::to_string).collect(),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading class names from {path}"))?
            .lines()
            .map(str::to_string)
            .collect(),
    };
    if names.len() != num_classes {
        bail!(
            "data.class_names `{}` has {} names but the model has {num_classes} classes",
            source.unwrap_or(""),
            names.len()
        );
    }
    Ok(names)
}

/// Decodes and transforms images in parallel into one `[N, 3, S, S]` batch.
fn load_batch(paths: &[PathBuf], transform: &EvalTransform) -> Result<Tensor> {
    let arrays = paths
        .par_iter()
        .map(|p| {
            let img = load_rgb8(p)?;
            transform.apply(&img).with_context(|| format!("{}: preprocessing", p.display()))
        })
        .collect::<Result<Vec<Vec<f32>>>>()?;
    let [c, h, w] = transform.output_shape();
    let flat: Vec<f32> = arrays.into_iter().flatten().collect();
    Ok(Tensor::from_vec(flat, (paths.len(), c, h, w), &Device::Cpu)?)
}

/// Softmax of each row of logits.
fn softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(logits
        .to_vec2::<f32>()?
        .into_iter()
        .map(|row| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.into_iter().map(|e| e / sum).collect()
        })
        .collect())
}

/// `nextdet classify`: prints the top-k classes of each image.
pub fn classify(
    config: &Path,
    checkpoint: &Path,
    images: &[PathBuf],
    k: usize,
    json: bool,
    overrides: &[String],
) -> Result<()> {
    let cfg = load_config(config, overrides)?;
    let s = setup(&cfg, checkpoint)?;
    let mut results = Vec::new();
    for chunk in images.chunks(8) {
        let probs = softmax_rows(&s.net.forward(&load_batch(chunk, &s.transform)?, false)?)?;
        for (path, p) in chunk.iter().zip(probs) {
            let top: Vec<(usize, f32)> = top_k_indices(&p, k).into_iter().map(|i| (i, p[i])).collect();
            if !json {
                println!("{}", path.display());
                for (rank, (i, prob)) in top.iter().enumerate() {
                    println!("  {:>2}. {prob:.4}  {} ({i})", rank + 1, s.names[*i]);
                }
            }
            let top: Vec<_> =
                top.iter().map(|(i, p)| serde_json::json!({"class": i, "name": s.names[*i], "prob": p})).collect();
            results.push(serde_json::json!({"image": path, "topk": top}));
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(results));
    }
    Ok(())
}

/// `nextdet test` for classifiers: top-1 / top-5 accuracy over the config's test split.
pub fn test(
    config: &Path,
    checkpoint: &Path,
    eval: &[String],
    out: Option<&Path>,
    json: bool,
    overrides: &[String],
) -> Result<()> {
    if let Some(other) = eval.iter().find(|m| !matches!(m.as_str(), "top1" | "top5" | "accuracy")) {
        bail!("--eval {other}: a classifier reports `top1` (with top-5); `bbox`/`segm` need a detector config");
    }
    let cfg = load_config(config, overrides)?;
    let s = setup(&cfg, checkpoint)?;
    let Some(TestSplit::ImageFolder(split)) = &s.data.test else {
        bail!("{}: no `data.test` split to evaluate on", config.display());
    };
    let folder = ImageFolder::open(&split.root)?;
    if folder.classes().len() != s.net.num_classes() {
        bail!(
            "{}: {} class folders, but the model has {} classes",
            split.root.display(),
            folder.classes().len(),
            s.net.num_classes()
        );
    }
    let bar = ProgressBar::new(folder.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} images  {per_sec}  eta {eta}  {msg}")?);
    let mut accuracy = TopKAccuracy::default();
    let start = Instant::now();
    for chunk in folder.samples().chunks(split.batch_size.max(1)) {
        let paths: Vec<PathBuf> = chunk.iter().map(|(p, _)| p.clone()).collect();
        let logits = s.net.forward(&load_batch(&paths, &s.transform)?, false)?.to_vec2::<f32>()?;
        for (row, (_, label)) in logits.iter().zip(chunk) {
            accuracy.update(row, *label);
        }
        bar.inc(chunk.len() as u64);
        bar.set_message(format!("top1 {:.2}%", accuracy.top1()));
    }
    bar.finish_and_clear();
    let metrics = serde_json::json!({
        "top1": accuracy.top1(),
        "top5": accuracy.top5(),
        "images": accuracy.seen(),
        "seconds": start.elapsed().as_secs_f64(),
        "config": config, "checkpoint": checkpoint,
    });
    if let Some(path) = out {
        std::fs::write(path, serde_json::to_string_pretty(&metrics)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!("{metrics}");
    } else {
        eprintln!("top-1 {:.2}%  top-5 {:.2}%  on {} images", accuracy.top1(), accuracy.top5(), accuracy.seen());
    }
    Ok(())
}
