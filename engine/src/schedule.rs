//! Learning-rate schedules: mmcv's step and fixed policies with warmup, and ConvNeXt's
//! per-iteration cosine.
//!
//! [`LrSchedule::lr_at`] returns the **absolute** learning rate of a group with `lr_scale` 1 at
//! a given iteration; the optimizer multiplies it by each group's scale, which is what both mmcv
//! (hooks scale each group's own initial lr) and ConvNeXt's `main.py` (`lr_schedule[it] * lr_scale`) do.
//!
//! Iterations are counted from 0 over the whole run: `global = epoch * iters_per_epoch + iter`,
//! with epochs counted from 0 as mmcv's `runner.epoch`. With gradient accumulation the trainer
//! counts optimizer steps, not batches, as ConvNeXt's `main.py` does.

use serde::{Deserialize, Serialize};

/// mmcv's warmup shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmupKind {
    /// `lr * (1 - (1 - i / iters) * (1 - ratio))`.
    Linear,
    /// `lr * ratio`.
    Constant,
    /// `lr * ratio ^ (1 - i / iters)`.
    Exp,
}

fn default_gamma() -> f64 {
    0.1
}

fn default_warmup_ratio() -> f64 {
    0.1
}

/// The `lr_config` section of a config. `policy` selects the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", deny_unknown_fields)]
pub enum LrScheduleConfig {
    /// mmcv `StepLrUpdaterHook` by epoch: `lr * gamma ^ (number of steps <= epoch)`, optional
    /// warmup over the first `warmup_iters` iterations.
    #[serde(rename = "step")]
    Step {
        /// Epoch indices (from 0) at which the rate is multiplied by `gamma`.
        step: Vec<usize>,
        /// Decay factor, greater than 0.
        #[serde(default = "default_gamma", deserialize_with = "gamma")]
        gamma: f64,
        /// Lower bound of the decayed rate, 0 or more.
        #[serde(default, deserialize_with = "optional_min_lr")]
        min_lr: Option<f64>,
        /// Warmup shape, none by default.
        #[serde(default)]
        warmup: Option<WarmupKind>,
        /// Warmup length in iterations.
        #[serde(default)]
        warmup_iters: usize,
        /// Warmup start ratio, in `(0, 1]`.
        #[serde(default = "default_warmup_ratio", deserialize_with = "warmup_ratio")]
        warmup_ratio: f64,
    },
    /// mmcv `FixedLrUpdaterHook`: the base rate, with optional warmup.
    #[serde(rename = "fixed")]
    Fixed {
        /// Warmup shape, none by default.
        #[serde(default)]
        warmup: Option<WarmupKind>,
        /// Warmup length in iterations.
        #[serde(default)]
        warmup_iters: usize,
        /// Warmup start ratio, in `(0, 1]`.
        #[serde(default = "default_warmup_ratio", deserialize_with = "warmup_ratio")]
        warmup_ratio: f64,
    },
    /// ConvNeXt's `utils.cosine_scheduler`: `np.linspace(start_warmup_value, lr, warmup)` over the warmup
    /// iterations, then `min_lr + 0.5 * (lr - min_lr) * (1 + cos(pi * i / n))` over the rest.
    #[serde(rename = "cosine")]
    Cosine {
        /// Final learning rate (absolute), 0 or more.
        #[serde(deserialize_with = "min_lr")]
        min_lr: f64,
        /// Warmup length in epochs.
        #[serde(default)]
        warmup_epochs: usize,
        /// Warmup length in iterations; overrides `warmup_epochs` when > 0.
        #[serde(default)]
        warmup_steps: usize,
        /// Learning rate at the first warmup iteration (absolute), 0 or more.
        #[serde(default, deserialize_with = "start_warmup_value")]
        start_warmup_value: f64,
    },
}

// Range checks, run while the section deserializes (see `optim::checks`). mmcv's
// `LrUpdaterHook` asserts `0 < warmup_ratio <= 1`; a learning rate, a lower bound or a decay
// factor below 0 has no meaning.

fn gamma<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    crate::optim::checks::number(d, "gamma", crate::optim::checks::positive, "must be greater than 0")
}

fn warmup_ratio<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    crate::optim::checks::number(d, "warmup_ratio", |v| v > 0.0 && v <= 1.0, "must be in (0, 1]")
}

fn min_lr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    crate::optim::checks::number(d, "min_lr", crate::optim::checks::non_negative, "must be 0 or more")
}

fn optional_min_lr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        Some(v) if !crate::optim::checks::non_negative(v) => {
            Err(serde::de::Error::custom(format!("`min_lr` must be 0 or more, got {v}")))
        }
        v => Ok(v),
    }
}

fn start_warmup_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    crate::optim::checks::number(d, "start_warmup_value", crate::optim::checks::non_negative, "must be 0 or more")
}

/// A schedule resolved against a base learning rate and a run length.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    config: LrScheduleConfig,
    base_lr: f64,
    max_epochs: usize,
}

impl LrSchedule {
    /// The schedule of `config` for base rate `base_lr` over `max_epochs` epochs.
    pub fn new(config: LrScheduleConfig, base_lr: f64, max_epochs: usize) -> Self {
        Self { config, base_lr, max_epochs }
    }

    /// The config this schedule was built from.
    pub fn config(&self) -> &LrScheduleConfig {
        &self.config
    }

    /// The base learning rate.
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    /// The absolute learning rate (for `lr_scale` 1) at iteration `iter_in_epoch` (from 0) of
    /// epoch `epoch` (from 0), with `iters_per_epoch` iterations per epoch.
    pub fn lr_at(&self, epoch: usize, iter_in_epoch: usize, iters_per_epoch: usize) -> f64 {
        let global = epoch * iters_per_epoch + iter_in_epoch;
        match &self.config {
            LrScheduleConfig::Step { step, gamma, min_lr, warmup, warmup_iters, warmup_ratio } => {
                let exp = step.iter().position(|&s| epoch < s).unwrap_or(step.len());
                let mut lr = self.base_lr * gamma.powf(exp as f64);
                if let Some(m) = min_lr {
                    lr = lr.max(*m);
                }
                warmed(lr, global, *warmup, *warmup_iters, *warmup_ratio)
            }
            LrScheduleConfig::Fixed { warmup, warmup_iters, warmup_ratio } => {
                warmed(self.base_lr, global, *warmup, *warmup_iters, *warmup_ratio)
            }
            LrScheduleConfig::Cosine { min_lr, warmup_epochs, warmup_steps, start_warmup_value } => {
                let total = self.max_epochs * iters_per_epoch;
                let warm = if *warmup_steps > 0 { *warmup_steps } else { warmup_epochs * iters_per_epoch };
                let i = global.min(total.saturating_sub(1));
                if i < warm {
                    // np.linspace(start, base, warm): i * step + start, the last value exactly
                    // `base`, except that a single value is `start`
                    if warm == 1 {
                        return *start_warmup_value;
                    }
                    if i + 1 == warm {
                        return self.base_lr;
                    }
                    let step = (self.base_lr - start_warmup_value) / (warm - 1) as f64;
                    return i as f64 * step + start_warmup_value;
                }
                let n = (total - warm) as f64;
                let j = (i - warm) as f64;
                min_lr + 0.5 * (self.base_lr - min_lr) * (1.0 + (std::f64::consts::PI * j / n).cos())
            }
        }
    }
}

/// mmcv's `get_warmup_lr` applied to the regular rate while `global < warmup_iters`.
fn warmed(regular: f64, global: usize, warmup: Option<WarmupKind>, iters: usize, ratio: f64) -> f64 {
    match warmup {
        Some(kind) if global < iters => {
            let t = global as f64 / iters as f64;
            match kind {
                WarmupKind::Linear => regular * (1.0 - (1.0 - t) * (1.0 - ratio)),
                WarmupKind::Constant => regular * ratio,
                WarmupKind::Exp => regular * ratio.powf(1.0 - t),
            }
        }
        _ => regular,
    }
}
