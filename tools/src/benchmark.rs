//! `nextdet benchmark`: images per second, milliseconds per iteration and peak memory of a
//! config's model on random input, for side-by-side comparison with PyTorch
//! (`tests/reference/bench_convnext_tiny.py`, `tests/reference/bench_mask_rcnn.py`).
//!
//! Classifiers: a forward pass, or a training step (forward, cross entropy on random labels,
//! backward, AdamW step). Detectors: inference on random images (RPN proposals, box head, NMS,
//! mask head and paste), or a training step on random images with three random boxes and box
//! masks per image, as the PyTorch script does.

use crate::common::{build_with_checkpoint, load_config, peak_memory_mib};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use nextdet_engine::optim::{Optimizer, OptimizerConfig, OptimizerType};
use nextdet_heads::{ImageTargets, TestMeta};
use nextdet_models::Model;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

/// What one iteration runs.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Mode {
    /// Forward pass in evaluation mode.
    Infer,
    /// A training step: forward in training mode, the loss, backward and an AdamW step.
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
    let images = Tensor::randn(0f32, 1.0, (opts.batch, 3, h, w), &Device::Cpu)?;
    let adamw = OptimizerConfig {
        kind: OptimizerType::AdamW,
        lr: 1e-4,
        weight_decay: 0.05,
        betas: [0.9, 0.999],
        eps: 1e-8,
        momentum: 0.0,
        nesterov: false,
        paramwise: None,
    };
    let mut optimizer = match opts.mode {
        Mode::Train => Some(Optimizer::from_config(&adamw, model.params())?),
        Mode::Infer => None,
    };
    let mut rng = StdRng::seed_from_u64(0);
    let targets = random_targets(opts.batch, h, w, &mut rng)?;
    let metas: Vec<TestMeta> =
        (0..opts.batch).map(|_| TestMeta { img_size: (h, w), ori_size: (h, w), scale_factor: [1.0, 1.0] }).collect();
    let mut step = || -> Result<()> {
        let loss = match (&model, opts.mode) {
            (Model::Classifier(net), Mode::Infer) => {
                net.forward(&images, false)?;
                return Ok(());
            }
            (Model::Detector(det), Mode::Infer) => {
                det.predict(&images, &metas)?;
                return Ok(());
            }
            (Model::Classifier(net), Mode::Train) => {
                let logits = net.forward(&images, true)?;
                let labels: Vec<usize> = (0..opts.batch).map(|i| i % net.num_classes()).collect();
                nextdet_heads::losses::cross_entropy(&logits, &labels)?.mean_all()?
            }
            (Model::Detector(det), Mode::Train) => {
                let pads = vec![(h, w); opts.batch];
                let losses = det.forward_train(&images, &targets, &pads, &mut rng)?;
                let mut total = losses[0].1.clone();
                for (_, l) in &losses[1..] {
                    total = (total + l)?;
                }
                total
            }
        };
        let grads = loss.backward()?;
        if let Some(opt) = optimizer.as_mut() {
            opt.step(&grads, 1e-4)?;
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

/// Three random boxes per image, 40 to 240 pixels wide, with box-shaped masks and random labels
/// (what `tests/reference/bench_mask_rcnn.py` trains on).
fn random_targets(n: usize, h: usize, w: usize, rng: &mut StdRng) -> Result<Vec<ImageTargets>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut boxes = Vec::new();
        let mut masks = vec![0u8; 3 * h * w];
        for mask in masks.chunks_exact_mut(h * w) {
            let x0 = rng.gen_range(0.0..(w as f32 * 0.6));
            let y0 = rng.gen_range(0.0..(h as f32 * 0.6));
            let (bw, bh) = (rng.gen_range(40.0..240.0f32), rng.gen_range(40.0..240.0f32));
            let b = [x0, y0, (x0 + bw).min(w as f32), (y0 + bh).min(h as f32)];
            for y in b[1] as usize..b[3] as usize {
                mask[y * w + b[0] as usize..y * w + b[2] as usize].fill(1);
            }
            boxes.push(b);
        }
        let labels = (0..3).map(|_| rng.gen_range(0..3)).collect();
        let masks = Some(Tensor::from_vec(masks, (3, h, w), &Device::Cpu)?);
        out.push(ImageTargets { boxes, labels, masks, img_size: (h, w) });
    }
    Ok(out)
}
