//! Layer norm over the last dimension in candle ops.

use super::accumulation_dtype;
use candle_core::{bail, Result, Tensor, D};

/// [`crate::layer_norm()`] in candle ops: `x` normalized over its last dimension `D` (mean and
/// biased variance, PyTorch's `F.layer_norm`), then `* weight + bias` (`[D]` each).
///
/// Built from means, a square, a square root and broadcasts, all of which candle 0.11
/// differentiates (its fused `candle_nn` layer norm has no backward on contiguous input).
/// 16-bit inputs are normalized in `f32` and the result cast back.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if weight.dims() != [d] || bias.dims() != [d] {
        bail!("layer_norm: weight {:?} / bias {:?} do not fit last dim {d}", weight.dims(), bias.dims());
    }
    if x.elem_count() == 0 {
        return x.zeros_like();
    }
    let dtype = accumulation_dtype(x.dtype());
    let xf = x.to_dtype(dtype)?;
    let centered = xf.broadcast_sub(&xf.mean_keepdim(D::Minus1)?)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_mul(&(var + eps)?.sqrt()?.recip()?)?;
    let y = normed.broadcast_mul(&weight.to_dtype(dtype)?)?.broadcast_add(&bias.to_dtype(dtype)?)?;
    y.to_dtype(x.dtype())
}
