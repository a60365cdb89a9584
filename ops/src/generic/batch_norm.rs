//! Training-mode batch normalization in candle ops.

use super::accumulation_dtype;
use crate::batch_norm::BatchStats;
use candle_core::{Result, Tensor};

/// [`crate::batch_norm_train`] in candle ops: `x: [N, C]` or `[N, C, H, W]` normalized with its
/// own per-channel mean and biased variance, then `* weight + bias` (`[C]` each). Returns the
/// output and the (detached) statistics. Autograd differentiates through the statistics, as
/// PyTorch's training mode does. 16-bit inputs are normalized in `f32`.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, BatchStats)> {
    let (n, c, spatial) = crate::batch_norm::train_geometry(x, weight, bias)?;
    let count = n * spatial;
    let dtype = accumulation_dtype(x.dtype());
    // [N, C, S]: statistics over dimensions 0 and 2.
    let xf = x.to_dtype(dtype)?.reshape((n, c, spatial))?;
    let mean = (xf.sum_keepdim(0)?.sum_keepdim(2)? / count as f64)?;
    let centered = xf.broadcast_sub(&mean)?;
    let var = (centered.sqr()?.sum_keepdim(0)?.sum_keepdim(2)? / count as f64)?;
    let scale = (&var + eps)?.sqrt()?.recip()?.broadcast_mul(&weight.to_dtype(dtype)?.reshape((1, c, 1))?)?;
    let y = centered.broadcast_mul(&scale)?.broadcast_add(&bias.to_dtype(dtype)?.reshape((1, c, 1))?)?;
    let y = y.reshape(x.shape())?.to_dtype(x.dtype())?;
    let stats = BatchStats { mean: mean.flatten_all()?.detach(), var: var.flatten_all()?.detach(), count };
    Ok((y, stats))
}
