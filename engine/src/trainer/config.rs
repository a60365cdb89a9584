//! The `runner` section of a config: mmdetection's `runner`, `optimizer_config`,
//! `checkpoint_config`, `log_config` and `evaluation` in one place.

use serde::{Deserialize, Serialize};

fn one() -> usize {
    1
}

fn fifty() -> usize {
    50
}

fn yes() -> bool {
    true
}

/// The runner settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// Epochs to train.
    pub max_epochs: usize,
    /// Clip gradients to this global L2 norm (torch `clip_grad_norm_`); none by default.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Batches per optimizer step (gradient accumulation); the loss is divided by it.
    #[serde(default = "one")]
    pub accumulate: usize,
    /// Iterations per logged line.
    #[serde(default = "fifty")]
    pub log_interval: usize,
    /// Evaluate every N epochs (0: never).
    #[serde(default = "one")]
    pub eval_interval: usize,
    /// Save an epoch checkpoint every N epochs (0: only `final` at the end).
    #[serde(default = "one")]
    pub checkpoint_interval: usize,
    /// Keep the last K epoch checkpoints (0: all).
    #[serde(default)]
    pub keep_last: usize,
    /// EMA decay of the weights (timm `ModelEmaV2`); none by default.
    #[serde(default)]
    pub ema: Option<f64>,
    /// The run's seed.
    #[serde(default)]
    pub seed: u64,
    /// Also evaluate the EMA weights after each evaluation (ConvNeXt's `main.py --model_ema_eval`); their
    /// metrics are logged with an `ema_` prefix.
    #[serde(default)]
    pub ema_eval: bool,
    /// Catch Ctrl-C and save an `interrupted` checkpoint.
    #[serde(default = "yes")]
    pub catch_ctrlc: bool,
}

impl Default for TrainerConfig {
    /// mmdetection's 1x runner: 12 epochs, no clipping, a log line every 50 iterations, an
    /// evaluation and a checkpoint every epoch, all checkpoints kept, no EMA, seed 0.
    fn default() -> Self {
        Self {
            max_epochs: 12,
            grad_clip: None,
            accumulate: 1,
            log_interval: 50,
            eval_interval: 1,
            checkpoint_interval: 1,
            keep_last: 0,
            ema: None,
            seed: 0,
            ema_eval: false,
            catch_ctrlc: true,
        }
    }
}

impl TrainerConfig {
    /// Checks the values a run cannot start with; each error names the `runner` key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_epochs == 0 {
            return Err("runner.max_epochs: must be at least 1".into());
        }
        if self.accumulate == 0 {
            return Err("runner.accumulate: must be at least 1".into());
        }
        if self.log_interval == 0 {
            return Err("runner.log_interval: must be at least 1".into());
        }
        if let Some(c) = self.grad_clip {
            if !(c > 0.0 && c.is_finite()) {
                return Err(format!("runner.grad_clip: must be a positive number (or null for none), got {c}"));
            }
        }
        if let Some(d) = self.ema {
            if !(0.0..1.0).contains(&d) {
                return Err(format!("runner.ema: the decay must be in [0, 1), got {d}"));
            }
        }
        if self.ema_eval && self.ema.is_none() {
            return Err("runner.ema_eval: needs runner.ema (the decay of the weights' average)".into());
        }
        Ok(())
    }
}
