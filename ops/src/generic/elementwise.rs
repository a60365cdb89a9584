//! The elementwise ops in candle ops: bias add, ReLU, bias + GELU, stochastic depth and the
//! layer-scale residual.

use candle_core::{bail, Result, Tensor, D};

/// `[1, ..., 1, D]`: a `[D]` vector shaped to broadcast over the last dimension of `x`.
fn last_dim_vector(v: &Tensor, x: &Tensor) -> Result<Tensor> {
    let mut dims = vec![1; x.rank()];
    *dims.last_mut().expect("rank >= 1") = v.elem_count();
    v.to_dtype(x.dtype())?.reshape(dims)
}

/// [`crate::bias_add`] in candle ops: `x + bias` with `bias: [D]` over the rows of `[..., D]`.
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if bias.dims() != [d] {
        bail!("bias_add: bias {:?} does not fit last dim {d} of {:?}", bias.dims(), x.dims());
    }
    x.broadcast_add(&last_dim_vector(bias, x)?)
}

/// [`crate::relu`] in candle ops: `max(x, 0)` with PyTorch's gradient, 0 at 0 and below, and
/// NaN passed through. (candle 0.11's `relu` backward is 1 at 0.) The value comes from a
/// detached `where(x < 0, 0, x)`; the gradient flows only where `x > 0`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let zeros = x.zeros_like()?;
    let value = x.lt(&zeros)?.where_cond(&zeros, &x.detach())?;
    x.gt(&zeros)?.where_cond(x, &value)
}

/// [`crate::bias_gelu`] in candle ops: the exact (erf) GELU of `x + bias`, `bias: [D]`.
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if bias.dims() != [d] {
        bail!("bias_gelu: bias {:?} does not fit last dim {d}", bias.dims());
    }
    x.broadcast_add(&last_dim_vector(bias, x)?)?.gelu_erf()
}

/// `[N, 1, ..., 1]`: one scale per sample along dimension 0 of `x`.
fn sample_vector(scales: &[f32], x: &Tensor) -> Result<Tensor> {
    let mut dims = vec![1; x.rank()];
    dims[0] = scales.len();
    Tensor::from_slice(scales, dims, x.device())?.to_dtype(x.dtype())
}

/// Stochastic depth with given per-sample factors (what [`crate::drop_path()`] applies after
/// drawing them): sample `n` of `x` (a slice along dimension 0) times `scales[n]`.
pub fn drop_path_scaled(x: &Tensor, scales: &[f32]) -> Result<Tensor> {
    if scales.len() != x.dim(0)? {
        bail!("drop_path: {} sample scales for {} samples", scales.len(), x.dim(0)?);
    }
    x.broadcast_mul(&sample_vector(scales, x)?)
}

/// [`crate::layer_scale_drop_path_residual`] in candle ops:
/// `shortcut + s[n] * gamma * (y + bias)` over the last dimension `D`, `gamma: None` a scale of
/// one, `sample_scales: None` a factor of one for every sample.
pub fn layer_scale_drop_path_residual(
    y: &Tensor,
    bias: &Tensor,
    gamma: Option<&Tensor>,
    shortcut: &Tensor,
    sample_scales: Option<&[f32]>,
) -> Result<Tensor> {
    let d = y.dim(D::Minus1)?;
    if y.shape() != shortcut.shape() {
        bail!("layer_scale_residual: branch {:?} and shortcut {:?} differ", y.dims(), shortcut.dims());
    }
    if bias.dims() != [d] || gamma.is_some_and(|g| g.dims() != [d]) {
        bail!(
            "layer_scale_residual: bias {:?} / gamma {:?} do not fit last dim {d}",
            bias.dims(),
            gamma.map(|g| g.dims().to_vec())
        );
    }
    let mut branch = y.broadcast_add(&last_dim_vector(bias, y)?)?;
    if let Some(g) = gamma {
        branch = branch.broadcast_mul(&last_dim_vector(g, y)?)?;
    }
    if let Some(s) = sample_scales {
        branch = drop_path_scaled(&branch, s)?;
    }
    branch + shortcut
}
