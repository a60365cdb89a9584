//! Images per second, milliseconds per iteration and peak memory of a config's model on random
//! input, for side-by-side comparison with PyTorch (`tests/reference/bench_convnext_tiny.py`,
//! `tests/reference/bench_mask_rcnn.py`).
//!
//! Classifiers: a forward pass, or a training step (forward, cross entropy on random labels,
//! backward, AdamW step). Detectors: inference on random images (RPN proposals, box head, NMS,
//! mask head and paste), or a training step on random images with three random boxes and box
//! masks per image, as the PyTorch script does.

use crate::weights::{build, build_with_checkpoint};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use nextdet_engine::config::Config;
use nextdet_engine::optim::{Optimizer, OptimizerConfig, OptimizerType};
use nextdet_heads::{ImageMeta, ImageTargets};
use nextdet_models::Model;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

/// What one iteration runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchMode {
    /// Forward pass in evaluation mode.
    Infer,
    /// A training step: forward in training mode, the loss, backward and an AdamW step.
    Train,
}

/// The benchmark's settings.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Infer or train.
    pub mode: BenchMode,
    /// Images per iteration.
    pub batch: usize,
    /// Input `(height, width)`.
    pub shape: (usize, usize),
    /// Timed iterations.
    pub iters: usize,
    /// Untimed iterations first.
    pub warmup: usize,
}

/// What the benchmark measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Milliseconds per iteration.
    pub ms_per_iter: f64,
    /// Images per second.
    pub images_per_s: f64,
    /// Peak resident memory of the process in MiB, where the platform reports it.
    pub peak_memory_mib: Option<f64>,
    /// Worker threads.
    pub threads: usize,
}

/// The largest input side the benchmark accepts (larger images belong to no model here).
pub const MAX_SIDE: usize = 8192;

/// Parses `HxW` (each side 1..=[`MAX_SIDE`]).
pub fn parse_shape(text: &str) -> Result<(usize, usize)> {
    let bad = || anyhow::anyhow!("--shape must be HxW with sides from 1 to {MAX_SIDE}, got `{text}`");
    let (h, w) = text.split_once('x').ok_or_else(bad)?;
    let side = |v: &str| v.trim().parse::<usize>().ok().filter(|s| (1..=MAX_SIDE).contains(s)).ok_or_else(bad);
    Ok((side(h)?, side(w)?))
}

/// Checks the settings: positive counts, and an input that fits in memory.
fn validate(opts: &BenchOptions) -> Result<()> {
    if opts.batch == 0 || opts.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    let (h, w) = opts.shape;
    if h == 0 || w == 0 || h > MAX_SIDE || w > MAX_SIDE {
        bail!("--shape: sides must be from 1 to {MAX_SIDE}, got {h}x{w}");
    }
    let input_bytes = (opts.batch as u128) * 3 * (h as u128) * (w as u128) * 4;
    if let Some(available) = available_memory_bytes() {
        if input_bytes * 8 > available as u128 {
            bail!(
                "--batch {} --shape {h}x{w}: the input alone is {:.1} GiB and the model needs several times that; \
                 {:.1} GiB of memory is available",
                opts.batch,
                input_bytes as f64 / (1u64 << 30) as f64,
                available as f64 / (1u64 << 30) as f64
            );
        }
    }
    Ok(())
}

/// Memory the kernel says is available (Linux `MemAvailable`).
fn available_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if the platform reports it.
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Times the model of `cfg` (with `checkpoint`'s weights, or random ones). The iterations run on
/// the global pool's threads ([`nextdet_ops::on_pool`]): set the pool up first
/// ([`crate::runtime::configure_threads`]), whose thread stacks hold a detector's backward pass.
pub fn benchmark(cfg: &Config, checkpoint: Option<&Path>, opts: &BenchOptions) -> Result<BenchReport> {
    validate(opts)?;
    crate::config::apply_precision(cfg)?;
    let model = match checkpoint {
        Some(path) => build_with_checkpoint(cfg, path)?,
        None => build(cfg, 0)?,
    };
    let (h, w) = opts.shape;
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
        BenchMode::Train => Some(Optimizer::from_config(&adamw, model.params())?),
        BenchMode::Infer => None,
    };
    let mut rng = StdRng::seed_from_u64(0);
    let targets = random_targets(opts.batch, h, w, &mut rng)?;
    let metas = vec![ImageMeta::of_input((h, w)); opts.batch];
    let mut step = || -> Result<()> {
        let loss = match (&model, opts.mode) {
            (Model::Classifier(net), BenchMode::Infer) => {
                net.forward(&images, false)?;
                return Ok(());
            }
            (Model::Detector(det), BenchMode::Infer) => {
                det.predict(&images, &metas)?;
                return Ok(());
            }
            (Model::Classifier(net), BenchMode::Train) => {
                let logits = net.forward(&images, true)?;
                let labels: Vec<usize> = (0..opts.batch).map(|i| i % net.num_classes()).collect();
                nextdet_heads::losses::cross_entropy(&logits, &labels)?.mean_all()?
            }
            (Model::Detector(det), BenchMode::Train) => {
                let mut rngs: Vec<StdRng> = (0..targets.len() as u64).map(StdRng::seed_from_u64).collect();
                det.forward_train(&images, &targets, &mut rngs)?.total()?.expect("a detector has loss terms")
            }
        };
        let grads = loss.backward()?;
        if let Some(opt) = optimizer.as_mut() {
            opt.step(&grads, 1e-4)?;
        }
        Ok(())
    };
    let secs = nextdet_ops::on_pool(|| -> Result<f64> {
        for _ in 0..opts.warmup {
            step()?;
        }
        let start = Instant::now();
        for _ in 0..opts.iters {
            step()?;
        }
        Ok(start.elapsed().as_secs_f64())
    })?;
    Ok(BenchReport {
        ms_per_iter: secs * 1000.0 / opts.iters as f64,
        images_per_s: (opts.batch * opts.iters) as f64 / secs,
        peak_memory_mib: peak_memory_mib(),
        threads: rayon::current_num_threads(),
    })
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
        let mut t = ImageTargets::new(boxes, labels, (h, w));
        t.masks = Some(Tensor::from_vec(masks, (3, h, w), &Device::Cpu)?);
        out.push(t);
    }
    Ok(out)
}
