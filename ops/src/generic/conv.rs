//! Convolutions in candle ops: the depthwise convolution as a sum of shifted, per-channel scaled
//! views, and the dense convolution through candle's `conv2d` on an explicitly padded input.

use crate::autocast::{cast_in, cast_out};
use crate::depthwise_conv::check_weight;
use candle_core::{bail, Result, Tensor};

/// [`crate::depthwise_conv2d_nhwc`] in candle ops: `x: [N, H, W, C]`, `weight: [C, 1, k, k]`
/// (odd `k`), `bias: [C]`, "same" zero padding, giving `[N, H, W, C]`.
///
/// The output is `bias + sum_ij x_pad[:, i.., j.., :] * weight[:, 0, i, j]` over the `k * k`
/// taps, each a strided view of the zero-padded input scaled along the channels: channels-last
/// with no per-channel loop (candle's grouped `conv2d` runs one small convolution per channel).
/// Autograd differentiates it in all three arguments; it keeps the `k * k` partial products
/// until the backward, which is why CUDA has its own kernel.
pub fn depthwise_conv2d_nhwc(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    check_weight(c, weight, bias)?;
    if x.elem_count() == 0 {
        return x.zeros_like();
    }
    let k = weight.dim(2)?;
    let p = k / 2;
    let xp = x.pad_with_zeros(1, p, p)?.pad_with_zeros(2, p, p)?;
    // [k * k, C]: row `i * k + j` holds tap (i, j) of every channel.
    let taps = weight.reshape((c, k * k))?.t()?.to_dtype(x.dtype())?;
    let mut acc = bias.to_dtype(x.dtype())?.reshape((1, 1, 1, c))?.broadcast_as((n, h, w, c))?;
    for i in 0..k {
        let rows = xp.narrow(1, i, h)?;
        for j in 0..k {
            let tap = taps.narrow(0, i * k + j, 1)?.reshape((1, 1, 1, c))?;
            acc = (acc + rows.narrow(2, j, w)?.broadcast_mul(&tap)?)?;
        }
    }
    Ok(acc)
}

/// [`crate::depthwise_conv2d_layer_norm_nhwc`] in candle ops: the depthwise convolution, then
/// a layer norm over the channels with `norm_weight`, `norm_bias: [C]`.
pub fn depthwise_conv2d_layer_norm_nhwc(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    norm_weight: &Tensor,
    norm_bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let y = depthwise_conv2d_nhwc(x, weight, bias)?;
    if y.elem_count() == 0 {
        return Ok(y);
    }
    super::layer_norm(&y, norm_weight, norm_bias, eps)
}

/// [`crate::conv2d::conv2d`] in candle ops: `x: [N, Cin, H, W]`, `weight: [Cout, Cin, k, k]`,
/// optional `bias: [Cout]`, zero `padding` on every side, `stride`; `[N, Cout, H', W']`.
///
/// The input is padded explicitly and cut to exactly the rows and columns the output reads
/// (`(H' - 1) * stride + k`), then convolved with no padding: candle 0.11's `conv2d` backward
/// derives one output padding for the transposed convolution from the height alone, which
/// gives a gradient of the wrong width when the height and width leave different remainders
/// under the stride; with an input the output reads exactly, that padding is zero on both axes.
/// Computes in the autocast dtype when autocast is on ([`crate::autocast`]).
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, cin, h, w) = x.dims4()?;
    let (cout, wcin, kh, kw) = weight.dims4()?;
    if wcin != cin || kh != kw {
        bail!("conv2d: weight {:?} does not fit input {:?} with a square kernel", weight.dims(), x.dims());
    }
    if stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
        bail!("conv2d: input {:?} too small for kernel {kh}, padding {padding}, stride {stride}", x.dims());
    }
    if let Some(b) = bias {
        if b.dims() != [cout] {
            bail!("conv2d: bias {:?} does not fit {cout} output channels", b.dims());
        }
    }
    let k = kh;
    let (ho, wo) = ((h + 2 * padding - k) / stride + 1, (w + 2 * padding - k) / stride + 1);
    let y = if n == 0 {
        Tensor::zeros((0, cout, ho, wo), x.dtype(), x.device())?
    } else {
        let xp = x.pad_with_zeros(2, padding, padding)?.pad_with_zeros(3, padding, padding)?;
        let xp = xp.narrow(2, 0, (ho - 1) * stride + k)?.narrow(3, 0, (wo - 1) * stride + k)?;
        let y = cast_in(&xp.contiguous()?)?.conv2d(&cast_in(weight)?, 0, stride, 1, 1)?;
        cast_out(y, x.dtype())?
    };
    match bias {
        Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?.reshape((1, cout, 1, 1))?),
        None => Ok(y),
    }
}
