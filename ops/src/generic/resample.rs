//! Separable resampling in candle ops: each axis is one or two `index_select`s of the input
//! (candle differentiates `index_select` with an `index_add`), weighted and summed.

use crate::resample::{check_nchw, check_size, Taps};
use candle_core::{Result, Tensor};

/// Resamples `x: [N, C, H, W]` along `axis` (2 or 3) as `taps` says: output index `d` is
/// `w0[d] * x[i0[d]] + w1[d] * x[i1[d]]`, or the plain copy `x[i0[d]]` for single taps.
fn resample_axis(x: &Tensor, axis: usize, taps: &Taps) -> Result<Tensor> {
    let out = taps.i0.len();
    let index = |i: &[usize]| Tensor::from_iter(i.iter().map(|&v| v as u32), x.device());
    let first = x.index_select(&index(&taps.i0)?, axis)?;
    if taps.single {
        return Ok(first);
    }
    let second = x.index_select(&index(&taps.i1)?, axis)?;
    let mut dims = [1usize; 4];
    dims[axis] = out;
    let weight = |w: &[f32]| Tensor::from_slice(w, &dims[..], x.device())?.to_dtype(x.dtype());
    first.broadcast_mul(&weight(&taps.w0)?)? + second.broadcast_mul(&weight(&taps.w1)?)?
}

/// Columns first, then rows: the fast kernel's order of operations.
fn resample(x: &Tensor, rows: &Taps, cols: &Taps) -> Result<Tensor> {
    resample_axis(&resample_axis(x, 3, cols)?, 2, rows)
}

/// [`crate::resize_nearest`] in candle ops (PyTorch's `F.interpolate(mode='nearest', size=...)`).
pub fn resize_nearest(x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    let (_, _, h, w) = check_nchw("resize_nearest", x)?;
    check_size("resize_nearest", size)?;
    resample(x, &Taps::nearest(h, size.0), &Taps::nearest(w, size.1))
}

/// [`crate::subsample_stride2`] in candle ops (`x[:, :, ::2, ::2]`).
pub fn subsample_stride2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = check_nchw("subsample_stride2", x)?;
    resample(x, &Taps::stride2(h), &Taps::stride2(w))
}

/// [`crate::resize_bilinear`] in candle ops (PyTorch's `F.interpolate(mode='bilinear',
/// align_corners=False, size=...)`; candle 0.11's own bilinear upsample has no backward).
pub fn resize_bilinear(x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    let (_, _, h, w) = check_nchw("resize_bilinear", x)?;
    check_size("resize_bilinear", size)?;
    resample(x, &Taps::bilinear(h, size.0), &Taps::bilinear(w, size.1))
}
