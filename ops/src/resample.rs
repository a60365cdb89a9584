//! Differentiable spatial resampling of `[N, C, H, W]` `f32` tensors, as the FPN needs them and
//! candle lacks them (candle's bilinear upsample has no backward, and its `max_pool2d` backward
//! needs kernel == stride in candle 0.11).
//!
//! - [`resize_nearest`]: `F.interpolate(x, size=(h, w), mode='nearest')`, the FPN top-down path.
//! - [`subsample_stride2`]: `F.max_pool2d(x, 1, stride=2)`, i.e. `x[:, :, ::2, ::2]`, the
//!   extra P6 level of mmdet's FPN (`add_extra_convs=False`).
//! - [`resize_bilinear`]: `F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)`
//!   without antialiasing.
//!
//! All three are separable: every output row reads at most two input rows and every output
//! column at most two input columns, with weights that depend on the index only. Each op is
//! described by one `Taps` table per axis, computed with PyTorch's `f32` index arithmetic, and
//! shares one forward kernel (a gather, parallel over output rows) and one backward kernel (the
//! transposed scatter-add, parallel over `N * C` planes and sequential inside a plane, so the
//! gradient has the same bits whatever the thread count).

use crate::cpu::{as_f32, rows_per_task};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Nearest-neighbour resize of `x: [N, C, H, W]` to `size = (out_h, out_w)`, with PyTorch's
/// `F.interpolate(mode='nearest', size=...)` index rule: along an axis of input length `in`
/// and output length `out`, `scale = (in as f32) / (out as f32)` and output index `d` reads
/// input index `min(floor((d as f32) * scale), in - 1)`, all in `f32` (so the result can differ
/// from the exact rational `floor(d * in / out)`; PyTorch's rule is the one matched).
///
/// Only the `size=` form is provided: PyTorch's `scale_factor=` form uses `1 / scale_factor` as
/// the scale, which gives other indices for non-integer factors. Differentiable: the input
/// gradient sums the output gradients of the pixels that read each input pixel.
pub fn resize_nearest(x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    let (_, _, h, w) = check_nchw("resize_nearest", x)?;
    check_size("resize_nearest", size)?;
    if !crate::generic::fast_cpu(x) {
        return crate::generic::resize_nearest(x, size);
    }
    let op = Resample::new("resize-nearest", Taps::nearest(h, size.0), Taps::nearest(w, size.1));
    x.contiguous()?.apply_op1(op)
}

/// Stride-2 subsampling of `x: [N, C, H, W]`, `x[:, :, ::2, ::2]`, which is what mmdet's FPN
/// computes as `F.max_pool2d(x, 1, stride=2)` for its extra level. The output is
/// `[N, C, ceil(H / 2), ceil(W / 2)]`. Differentiable: the gradient lands on the even-indexed
/// pixels, the others get zero.
pub fn subsample_stride2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = check_nchw("subsample_stride2", x)?;
    if !crate::generic::fast_cpu(x) {
        return crate::generic::subsample_stride2(x);
    }
    let op = Resample::new("subsample-stride2", Taps::stride2(h), Taps::stride2(w));
    x.contiguous()?.apply_op1(op)
}

/// Bilinear resize of `x: [N, C, H, W]` to `size = (out_h, out_w)` with PyTorch's
/// `F.interpolate(mode='bilinear', align_corners=False, antialias=False, size=...)` semantics:
/// along each axis `scale = in / out` (`f32`), source coordinate
/// `s = max(scale * (d + 0.5) - 0.5, 0)`, taps `i0 = min(floor(s), in - 1)` and
/// `i1 = min(i0 + 1, in - 1)` with weights `1 - l` and `l = clamp(s - i0, 0, 1)`; an axis whose
/// size does not change is copied. Downsampling does not antialias (it reads two taps, as
/// PyTorch does without `antialias=True`). Differentiable: the backward scatters each output
/// gradient to its four taps with the same weights.
pub fn resize_bilinear(x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    let (_, _, h, w) = check_nchw("resize_bilinear", x)?;
    check_size("resize_bilinear", size)?;
    if !crate::generic::fast_cpu(x) {
        return crate::generic::resize_bilinear(x, size);
    }
    let op = Resample::new("resize-bilinear", Taps::bilinear(h, size.0), Taps::bilinear(w, size.1));
    x.contiguous()?.apply_op1(op)
}

/// The `(N, C, H, W)` of a rank-4 tensor with non-empty spatial dimensions.
pub(crate) fn check_nchw(op: &str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    let Ok((n, c, h, w)) = x.dims4() else {
        bail!("{op}: expected an [N, C, H, W] tensor, got shape {:?}", x.dims());
    };
    if h == 0 || w == 0 {
        bail!("{op}: input has an empty spatial size {h}x{w}");
    }
    Ok((n, c, h, w))
}

pub(crate) fn check_size(op: &str, (h, w): (usize, usize)) -> Result<()> {
    if h == 0 || w == 0 {
        bail!("{op}: output size {h}x{w} must be non-empty");
    }
    Ok(())
}

/// How one axis of the output reads the input: output index `d` is
/// `w0[d] * in[i0[d]] + w1[d] * in[i1[d]]`, or just `in[i0[d]]` when `single`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Taps {
    /// Input length along the axis.
    pub(crate) input: usize,
    pub(crate) i0: Vec<usize>,
    pub(crate) i1: Vec<usize>,
    pub(crate) w0: Vec<f32>,
    pub(crate) w1: Vec<f32>,
    /// One tap of weight one per output index (nearest, stride): a plain copy, which also keeps
    /// non-finite values out of other pixels (`0 * inf` would be NaN).
    pub(crate) single: bool,
}

impl Taps {
    fn single(input: usize, idx: Vec<usize>) -> Self {
        let n = idx.len();
        Taps { input, i1: idx.clone(), i0: idx, w0: vec![1.0; n], w1: vec![0.0; n], single: true }
    }

    /// PyTorch's `nearest_neighbor_compute_source_index` with the `f32` scale of
    /// `compute_scales_value` (no scale given).
    pub(crate) fn nearest(input: usize, output: usize) -> Self {
        let scale = input as f32 / output as f32;
        let idx = (0..output).map(|d| ((d as f32 * scale).floor() as usize).min(input - 1)).collect();
        Taps::single(input, idx)
    }

    pub(crate) fn stride2(input: usize) -> Self {
        Taps::single(input, (0..input.div_ceil(2)).map(|d| 2 * d).collect())
    }

    /// PyTorch's `compute_source_index_and_lambda` (align_corners=False, not cubic), in `f32`.
    pub(crate) fn bilinear(input: usize, output: usize) -> Self {
        if input == output {
            return Taps::single(input, (0..output).collect());
        }
        let scale = input as f32 / output as f32;
        let mut t = Taps {
            input,
            i0: Vec::with_capacity(output),
            i1: Vec::with_capacity(output),
            w0: Vec::with_capacity(output),
            w1: Vec::with_capacity(output),
            single: false,
        };
        for d in 0..output {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            t.i0.push(i0);
            t.i1.push(if i0 < input - 1 { i0 + 1 } else { i0 });
            t.w0.push(1.0 - l1);
            t.w1.push(l1);
        }
        t
    }

    fn output(&self) -> usize {
        self.i0.len()
    }
}

/// The forward op: a separable resampling given by one [`Taps`] per spatial axis.
#[derive(Clone)]
struct Resample {
    name: &'static str,
    rows: Arc<Taps>,
    cols: Arc<Taps>,
}

impl Resample {
    fn new(name: &'static str, rows: Taps, cols: Taps) -> Self {
        Resample { name, rows: Arc::new(rows), cols: Arc::new(cols) }
    }
}

impl CustomOp1 for Resample {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name, storage, layout)?;
        let (n, c, h, w) = layout.shape().dims4()?;
        let (rt, ct) = (&*self.rows, &*self.cols);
        if (h, w) != (rt.input, ct.input) {
            bail!("{}: input {h}x{w} does not fit the op built for {}x{}", self.name, rt.input, ct.input);
        }
        let (oh, ow) = (rt.output(), ct.output());
        let mut out = vec![0f32; n * c * oh * ow];
        let rows = rows_per_task(ow, 1 << 14);
        out.par_chunks_mut(ow * rows).enumerate().for_each(|(task, chunk)| {
            for (k, orow) in chunk.chunks_exact_mut(ow).enumerate() {
                let r = task * rows + k;
                let (plane, oy) = (r / oh, r % oh);
                let xp = &x[plane * h * w..(plane + 1) * h * w];
                let r0 = &xp[rt.i0[oy] * w..(rt.i0[oy] + 1) * w];
                if rt.single && ct.single {
                    orow.iter_mut().zip(&ct.i0).for_each(|(o, &i)| *o = r0[i]);
                } else if rt.single {
                    for (ox, o) in orow.iter_mut().enumerate() {
                        *o = r0[ct.i0[ox]] * ct.w0[ox] + r0[ct.i1[ox]] * ct.w1[ox];
                    }
                } else {
                    let r1 = &xp[rt.i1[oy] * w..(rt.i1[oy] + 1) * w];
                    let (h0, h1) = (rt.w0[oy], rt.w1[oy]);
                    for (ox, o) in orow.iter_mut().enumerate() {
                        let (a, b, w0, w1) = (ct.i0[ox], ct.i1[ox], ct.w0[ox], ct.w1[ox]);
                        let t0 = if ct.single { r0[a] } else { r0[a] * w0 + r0[b] * w1 };
                        let t1 = if ct.single { r1[a] } else { r1[a] * w0 + r1[b] * w1 };
                        *o = t0 * h0 + t1 * h1;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let op = ResampleGrad { name: self.name, rows: self.rows.clone(), cols: self.cols.clone() };
        let g = grad.contiguous()?.apply_op1_no_bwd(&op)?;
        Ok(Some(g.reshape((n, c, h, w))?))
    }
}

/// The backward op: `grad_out [N, C, OH, OW] -> grad_in [N, C, H, W]`, the transpose of
/// [`Resample`]'s linear map, accumulated in output order within each plane.
struct ResampleGrad {
    name: &'static str,
    rows: Arc<Taps>,
    cols: Arc<Taps>,
}

impl CustomOp1 for ResampleGrad {
    fn name(&self) -> &'static str {
        "resample-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = as_f32(self.name, storage, layout)?;
        let (n, c, oh, ow) = layout.shape().dims4()?;
        let (rt, ct) = (&*self.rows, &*self.cols);
        if (oh, ow) != (rt.output(), ct.output()) {
            bail!("{} backward: gradient {oh}x{ow} does not fit output {}x{}", self.name, rt.output(), ct.output());
        }
        let (h, w) = (rt.input, ct.input);
        let mut out = vec![0f32; n * c * h * w];
        let planes = rows_per_task(h * w, 1 << 14);
        out.par_chunks_mut(h * w * planes).zip(g.par_chunks(oh * ow * planes)).for_each(|(gin, gout)| {
            for (gi, go) in gin.chunks_exact_mut(h * w).zip(gout.chunks_exact(oh * ow)) {
                for (oy, grow) in go.chunks_exact(ow).enumerate() {
                    let (y0, y1, h0, h1) = (rt.i0[oy], rt.i1[oy], rt.w0[oy], rt.w1[oy]);
                    for (ox, &gv) in grow.iter().enumerate() {
                        let (x0, x1, w0, w1) = (ct.i0[ox], ct.i1[ox], ct.w0[ox], ct.w1[ox]);
                        if rt.single && ct.single {
                            gi[y0 * w + x0] += gv;
                        } else {
                            gi[y0 * w + x0] += h0 * w0 * gv;
                            gi[y0 * w + x1] += h0 * w1 * gv;
                            gi[y1 * w + x0] += h1 * w0 * gv;
                            gi[y1 * w + x1] += h1 * w1 * gv;
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_uses_f32_scale() {
        // 2x and identity are exact; other ratios follow floor(d * (in / out)).
        assert_eq!(Taps::nearest(4, 8).i0, vec![0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(Taps::nearest(5, 5).i0, vec![0, 1, 2, 3, 4]);
        assert_eq!(Taps::nearest(5, 3).i0, vec![0, 1, 3]);
    }

    #[test]
    fn stride2_covers_odd_sizes() {
        assert_eq!(Taps::stride2(5).i0, vec![0, 2, 4]);
        assert_eq!(Taps::stride2(1).i0, vec![0]);
    }
}
