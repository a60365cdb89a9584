//! Layer normalization with learned affine parameters, forward and backward.
//!
//! candle 0.11's fused layer norm has no backward on contiguous input, so this one is
//! written out: statistics per row over the last dimension, biased variance, PyTorch's
//! `F.layer_norm` semantics. The channels-first variant of the ConvNeXt code (stem and
//! downsampling layers, detection output norms) is the same op on a channels-last view.

use crate::cpu::{as_f32, lane_sum, multiversion, rows_per_task, sum_partials};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Normalizes `x` over its last dimension `D` and applies `weight: [D]`, `bias: [D]`.
/// Differentiable in all three arguments.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    if weight.dims() != [d] || bias.dims() != [d] {
        bail!("layer_norm: weight {:?} / bias {:?} do not fit last dim {d}", weight.dims(), bias.dims());
    }
    if !crate::generic::fast_cpu(x) {
        return crate::generic::layer_norm(x, weight, bias, eps);
    }
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LayerNorm { eps: eps as f32 })
}

/// Layer norm over the channels of an `[N, C, H, W]` tensor (ConvNeXt's `channels_first`
/// LayerNorm): mean and biased variance over `C` at each pixel.
pub fn layer_norm_channels_first(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let y = layer_norm(&x.permute((0, 2, 3, 1))?, weight, bias, eps)?;
    y.permute((0, 3, 1, 2))?.contiguous()
}

/// Mean and reciprocal standard deviation of one row.
#[inline(always)]
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = lane_sum([row], |[v]| v) / n;
    let var = lane_sum([row], |[v]| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

multiversion! {
    /// `y = (x - mean) * rstd * w + b` over rows of `w.len()` values.
    fn norm_rows(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        for (yr, xr) in y.chunks_exact_mut(w.len()).zip(x.chunks_exact(w.len())) {
            let (mean, rstd) = row_stats(xr, eps);
            for (((y, &v), &wv), &bv) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                *y = (v - mean) * rstd * wv + bv;
            }
        }
    }
}

multiversion! {
    /// Normalizes rows of `w.len()` values in place (the depthwise conv fuses this after each
    /// output row, while the row is still in cache).
    pub(crate) fn norm_rows_in_place(y: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        for yr in y.chunks_exact_mut(w.len()) {
            let (mean, rstd) = row_stats(yr, eps);
            for ((y, &wv), &bv) in yr.iter_mut().zip(w).zip(b) {
                *y = (*y - mean) * rstd * wv + bv;
            }
        }
    }
}

multiversion! {
    /// Input gradient of each row into `dx`; `acc = [dweight, dbias]` accumulates over rows.
    fn norm_grad_rows(dx: &mut [f32], x: &[f32], gy: &[f32], w: &[f32], eps: f32, acc: &mut [f32]) {
        let d = w.len();
        let (dw, db) = acc.split_at_mut(d);
        for ((dxr, xr), gr) in dx.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(gy.chunks_exact(d)) {
            let (mean, rstd) = row_stats(xr, eps);
            for i in 0..d {
                dw[i] += gr[i] * (xr[i] - mean) * rstd;
                db[i] += gr[i];
            }
            let m1 = lane_sum([gr, w], |[g, wv]| g * wv) / d as f32;
            let m2 = lane_sum([gr, w, xr], |[g, wv, v]| g * wv * (v - mean) * rstd) / d as f32;
            for i in 0..d {
                let xhat = (xr[i] - mean) * rstd;
                dxr[i] = rstd * (gr[i] * w[i] - m1 - xhat * m2);
            }
        }
    }
}

/// Forward op: `(x, weight, bias) -> y`.
struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s1, l1)?;
        let w = as_f32(self.name(), s2, l2)?;
        let b = as_f32(self.name(), s3, l3)?;
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        let rows = rows_per_task(d, 1 << 14);
        out.par_chunks_mut(d * rows).zip(x.par_chunks(d * rows)).for_each(|(yo, xi)| norm_rows(yo, xi, w, b, self.eps));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = layer_norm_grads(x, weight, grad, self.eps)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `(dx, dweight, dbias)` of a layer norm over the last dimension of `x` (contiguous), given
/// the gradient of its output.
pub(crate) fn layer_norm_grads(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let packed = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &LayerNormGrad { eps })?;
    let (n, d) = (x.elem_count(), weight.elem_count());
    let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
    Ok((dx, packed.narrow(0, n, d)?, packed.narrow(0, n + d, d)?))
}

/// Backward op: `(x, weight, grad_y) -> [dx, dweight, dbias]` packed flat.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s1, l1)?;
        let w = as_f32(self.name(), s2, l2)?;
        let gy = as_f32(self.name(), s3, l3)?;
        let d = w.len();
        let mut packed = vec![0f32; x.len() + 2 * d];
        let (dx, dwdb) = packed.split_at_mut(x.len());
        let rows = rows_per_task(d, 1 << 14);
        let acc = dx
            .par_chunks_mut(d * rows)
            .zip(x.par_chunks(d * rows))
            .zip(gy.par_chunks(d * rows))
            .map(|((dxo, xi), gi)| {
                let mut acc = vec![0f32; 2 * d];
                norm_grad_rows(dxo, xi, gi, w, self.eps, &mut acc);
                acc
            })
            .collect::<Vec<_>>();
        dwdb.copy_from_slice(&sum_partials(acc, 2 * d));
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}
