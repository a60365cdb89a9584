//! The pointwise linear layers in candle ops: a matrix multiply with the transposed weight, and
//! the ConvNeXt block's fused bias, GELU and second linear.

use crate::autocast::{cast_in, cast_out};
use candle_core::{bail, Result, Tensor};

/// [`crate::linear_no_bias`] in candle ops: `x: [..., K]` times `weight: [N, K]` transposed,
/// giving `[..., N]`. Computes in the autocast dtype when autocast is on
/// ([`crate::autocast`]).
pub fn linear_no_bias(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&k) {
        bail!("linear: input {:?} does not end in the weight's {k} input features", x.dims());
    }
    let rows = x.elem_count() / k.max(1);
    let x2 = cast_in(&x.reshape((rows, k))?)?;
    let y = x2.matmul(&cast_in(weight)?.t()?)?;
    *dims.last_mut().expect("at least one dim") = n;
    cast_out(y, x.dtype())?.reshape(dims)
}

/// [`crate::gelu_linear()`] in candle ops: `gelu(h + bias) @ weight^T` for `h: [..., K]`,
/// `bias: [K]`, `weight: [N, K]`, with the exact (erf) GELU. Unlike the fused kernel, autograd
/// keeps the GELU output until the backward.
pub fn gelu_linear(h: &Tensor, bias: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let k = weight.dim(1)?;
    if h.dims().last() != Some(&k) {
        bail!("gelu_linear: input {:?} does not end in the weight's {k} input features", h.dims());
    }
    if bias.dims() != [k] {
        bail!("gelu_linear: bias {:?} does not fit the weight's {k} input features", bias.dims());
    }
    linear_no_bias(&super::bias_gelu(h, bias)?, weight)
}
