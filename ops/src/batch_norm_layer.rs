//! Batch normalization with PyTorch's parameters and buffers (`weight`, `bias`, `running_mean`,
//! `running_var`, `num_batches_tracked`), the layer of the Cascade box heads' `SyncBN` and of the
//! roadmap backbone's batch-norm steps: a synced
//! layer ([`BatchNorm::synced`]) takes its training statistics over every rank of the default
//! process group (`nextdet_dist::world`), torch's `SyncBatchNorm`; in one process it is plain
//! `BatchNorm`.
//!
//! Training mode normalizes with the batch's own statistics (biased variance), differentiably,
//! and moves the running statistics towards them with momentum 0.1 (the running variance takes
//! the unbiased variance, as PyTorch does). Evaluation mode uses the running statistics.

use crate::{batch_norm_train, sync_batch_norm_train, Init, Scope};
use candle_core::{bail, DType, Result, Tensor};

/// `nn.BatchNorm1d` (`[N, C]`) and `nn.BatchNorm2d` (`[N, C, H, W]`) in one type: the
/// statistics are per channel (dimension 1) over every other dimension.
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
    /// Added to the variance before the square root (PyTorch: 1e-5).
    pub eps: f64,
    /// Weight of the new batch in the running statistics (PyTorch: 0.1).
    pub momentum: f64,
    sync: bool,
}

/// `nn.BatchNorm2d`: statistics over `N, H, W` of `[N, C, H, W]`.
pub type BatchNorm2d = BatchNorm;
/// `nn.BatchNorm1d`: statistics over `N` of `[N, C]`.
pub type BatchNorm1d = BatchNorm;

impl BatchNorm {
    /// `scope.weight` (ones) and `scope.bias` (zeros) trainable; `running_mean` (zeros),
    /// `running_var` (ones) and `num_batches_tracked` (a scalar 0) as buffers.
    pub fn new(scope: &Scope, channels: usize) -> Result<Self> {
        Ok(Self {
            weight: scope.param("weight", channels, Init::Const(1.0))?,
            bias: scope.param("bias", channels, Init::Const(0.0))?,
            running_mean: scope.buffer("running_mean", channels, Init::Const(0.0))?,
            running_var: scope.buffer("running_var", channels, Init::Const(1.0))?,
            num_batches_tracked: scope.buffer("num_batches_tracked", (), Init::Const(0.0))?,
            eps: 1e-5,
            momentum: 0.1,
            sync: false,
        })
    }

    /// With `sync`, training takes the statistics of every rank's batch (`SyncBatchNorm`).
    pub fn synced(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Whether training statistics are synchronized over the ranks.
    pub fn is_synced(&self) -> bool {
        self.sync
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The running mean (a view of the buffer; it changes after a training-mode forward).
    pub fn running_mean(&self) -> &Tensor {
        &self.running_mean
    }

    /// The running (unbiased) variance.
    pub fn running_var(&self) -> &Tensor {
        &self.running_var
    }

    /// How many training-mode batches have updated the running statistics.
    pub fn num_batches_tracked(&self) -> Result<f32> {
        self.num_batches_tracked.to_dtype(DType::F32)?.to_scalar::<f32>()
    }

    /// Normalizes `x` (`[N, C]` or `[N, C, H, W]`). With `train`, uses the batch statistics and
    /// updates the running ones (at least two values per channel are needed, as in PyTorch).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.channels();
        let shape: Vec<usize> = match x.dims() {
            &[_, ch] if ch == c => vec![1, c],
            &[_, ch, _, _] if ch == c => vec![1, c, 1, 1],
            dims => bail!("batch norm over {c} channels: expected [N, {c}] or [N, {c}, H, W], got {dims:?}"),
        };
        if train {
            let (y, stats) = if self.sync {
                sync_batch_norm_train(x, &self.weight, &self.bias, self.eps, &nextdet_dist::world())?
            } else {
                batch_norm_train(x, &self.weight, &self.bias, self.eps)?
            };
            self.update_running(&stats.mean, &stats.var, stats.count)?;
            return Ok(y);
        }
        let mean = self.running_mean.reshape(shape.as_slice())?;
        let inv_std = (self.running_var.reshape(shape.as_slice())? + self.eps)?.sqrt()?.recip()?;
        let scale = self.weight.reshape(shape.as_slice())?.broadcast_mul(&inv_std)?;
        x.broadcast_sub(&mean)?.broadcast_mul(&scale)?.broadcast_add(&self.bias.reshape(shape.as_slice())?)
    }

    /// `running = (1 - m) * running + m * batch`, the variance unbiased by `count / (count - 1)`;
    /// written in place into the buffers so that the parameter store sees and saves them.
    fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let m = self.momentum;
        let unbiased = (var * (count as f64 / (count - 1) as f64))?;
        let new_mean = ((&self.running_mean * (1.0 - m))? + (mean * m)?)?;
        let new_var = ((&self.running_var * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.slice_set(&new_mean.contiguous()?, 0, 0)?;
        self.running_var.slice_set(&new_var.contiguous()?, 0, 0)?;
        let tracked = self.num_batches_tracked.reshape(1)?;
        tracked.slice_set(&(tracked.copy()? + 1.0)?, 0, 0)
    }
}
