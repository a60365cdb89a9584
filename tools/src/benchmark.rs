//! `nextdet benchmark`: images per second, milliseconds per iteration and peak memory of a
//! config's model on random input, for side-by-side comparison with PyTorch
//! (`tests/reference/bench_convnext_tiny.py`).

use crate::common::{build_with_checkpoint, load_config, peak_memory_mib};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use nextdet_models::Model;
use std::path::Path;
use std::time::Instant;

/// What one iteration runs.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Mode {
    /// Forward pass in evaluation mode.
    Infer,
    /// Forward in training mode and backward of a scalar loss (the optimizer step comes with the
    /// training engine).
    Train,
}

/// The command-line knobs.
pub struct Options {
    pub mode: Mode,
    pub batch: usize,
    pub shape: String,
    pub iters: usize,
    pub warmup: usize,
    pub json: bool,
}

/// Parses `HxW`.
fn parse_shape(text: &str) -> Result<(usize, usize)> {
    let (h, w) = text.split_once('x').with_context(|| format!("--shape must be HxW, got `{text}`"))?;
    let parse = |v: &str| v.trim().parse::<usize>().with_context(|| format!("--shape must be HxW, got `{text}`"));
    Ok((parse(h)?, parse(w)?))
}

/// Runs the benchmark and prints one line (or a JSON document with `--json`).
pub fn run(config: &Path, checkpoint: Option<&Path>, opts: &Options, overrides: &[String]) -> Result<()> {
    let (h, w) = parse_shape(&opts.shape)?;
    if opts.batch == 0 || opts.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    let cfg = load_config(config, overrides)?;
    let model = build_with_checkpoint(&cfg, checkpoint)?;
    let Model::Classifier(net) = &model;
    let images = Tensor::randn(0f32, 1.0, (opts.batch, 3, h, w), &Device::Cpu)?;
    let step = || -> Result<()> {
        match opts.mode {
            Mode::Infer => {
                net.forward(&images, false)?;
            }
            Mode::Train => {
                let loss = net.forward(&images, true)?.sqr()?.mean_all()?;
                loss.backward()?;
            }
        }
        Ok(())
    };
    for _ in 0..opts.warmup {
        step()?;
    }
    let start = Instant::now();
    for _ in 0..opts.iters {
        step()?;
    }
    let secs = start.elapsed().as_secs_f64();
    let ms = secs * 1000.0 / opts.iters as f64;
    let ips = (opts.batch * opts.iters) as f64 / secs;
    let peak = peak_memory_mib();
    let threads = rayon::current_num_threads();
    if opts.json {
        let doc = serde_json::json!({
            "config": config, "mode": format!("{:?}", opts.mode).to_lowercase(), "batch": opts.batch,
            "shape": [h, w], "iters": opts.iters, "threads": threads,
            "ms_per_iter": ms, "images_per_s": ips, "peak_memory_mib": peak,
        });
        println!("{doc}");
    } else {
        let peak = peak.map_or("n/a".into(), |p| format!("{p:.0} MiB"));
        println!(
            "{} {:?} batch {} {}x{} threads {}: {ms:.1} ms/iter, {ips:.2} images/s, peak memory {peak}",
            config.display(),
            opts.mode,
            opts.batch,
            h,
            w,
            threads
        );
    }
    Ok(())
}
