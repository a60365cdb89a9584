//! How far `precision: bf16` moves a trained classifier from its f32 answers: the same images
//! through the same network in both precisions, compared logit by logit and in their top-1 and
//! top-5 classes. `cargo run --release --example precision_drift -- CONFIG CHECKPOINT FOLDER`
//! (every image under FOLDER, at any depth, e.g. an ImageNet-style `val/` folder).

use anyhow::{bail, Context, Result};
use nextdet_ops::{set_inference_precision, Precision};
use std::path::{Path, PathBuf};

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [config, checkpoint, folder] = args.as_slice() else {
        bail!("usage: precision_drift CONFIG CHECKPOINT FOLDER")
    };
    if !nextdet_ops::bf16_supported() {
        bail!("this CPU has no AVX-512 BF16: bf16 inference would run in f32, so there is nothing to compare");
    }
    let cfg = nextdet_apis::load_config(config, &[])?;
    let classifier = nextdet_apis::init_classifier(&cfg, checkpoint)?;
    let mut images = Vec::new();
    collect_images(folder, &mut images)?;
    images.sort();
    if images.is_empty() {
        bail!("{}: no .png/.jpg/.jpeg images", folder.display());
    }
    let (mut max_abs, mut sum_abs, mut values, mut top1, mut top5) = (0f32, 0f64, 0usize, 0usize, 0usize);
    for batch in images.chunks(32) {
        let paths: Vec<&Path> = batch.iter().map(PathBuf::as_path).collect();
        set_inference_precision(Precision::F32);
        let f32_logits = classifier.logits_files(&paths)?.to_vec2::<f32>()?;
        set_inference_precision(Precision::Bf16);
        let bf16_logits = classifier.logits_files(&paths)?.to_vec2::<f32>()?;
        for (a, b) in f32_logits.iter().zip(&bf16_logits) {
            for (x, y) in a.iter().zip(b) {
                max_abs = max_abs.max((x - y).abs());
                sum_abs += f64::from((x - y).abs());
                values += 1;
            }
            let (ta, tb) = (nextdet_evaluation::top_k_indices(a, 5), nextdet_evaluation::top_k_indices(b, 5));
            top1 += usize::from(ta[0] == tb[0]);
            let (mut sa, mut sb) = (ta.clone(), tb.clone());
            sa.sort_unstable();
            sb.sort_unstable();
            top5 += usize::from(sa == sb);
        }
    }
    let n = images.len();
    println!("{n} images, {} classes", values / n);
    println!("logits |bf16 - f32|: max {max_abs:.4}, mean {:.5}", sum_abs / values as f64);
    println!("same top-1 class: {top1}/{n}; same top-5 set: {top5}/{n}");
    Ok(())
}

/// Every image file under `dir`, recursively.
fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        {
            out.push(path);
        }
    }
    Ok(())
}
