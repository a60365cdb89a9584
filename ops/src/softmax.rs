//! Softmax and log-softmax over the last dimension, forward and backward, as one parallel pass
//! each way: the project's softmax.
//!
//! candle's `softmax_last_dim` (the `SoftmaxLastDim` op of `candle-nn/src/ops.rs`) has no
//! backward, and the composition `exp(x - max) / sum` is five single-threaded passes with two
//! temporaries. Here a row is read once for its maximum and once to exponentiate, normalized in
//! place, and the
//! backward passes read the saved output: `dx = y * (dy - <y, dy>)` for softmax and
//! `dx = dy - exp(y) * sum(dy)` for log-softmax (`y` the forward output).
//!
//! The row kernels are also used inside fused ops ([`crate::attention`] applies the scale,
//! the additive bias and the mask to attention logits in the same pass as the softmax).

use crate::cpu::{as_f32, lane_sum, multiversion, rows_per_task};
use crate::gelu::exp_neg;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Elements a rayon task handles at least.
const MIN_TASK: usize = 1 << 14;
/// Independent accumulators in the row reductions, so that they vectorize.
const LANES: usize = 16;

/// `softmax(x)` over the last dimension of `x` (any rank, `f32`): PyTorch's
/// `F.softmax(x, dim=-1)`. Differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.dim(D::Minus1)?;
    x.contiguous()?.apply_op1(Softmax { log: false })
}

/// `log_softmax(x)` over the last dimension of `x` (any rank, `f32`): PyTorch's
/// `F.log_softmax(x, dim=-1)`, computed as `x - max - log(sum(exp(x - max)))` so that it is
/// finite for any finite input. Differentiable.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.dim(D::Minus1)?;
    x.contiguous()?.apply_op1(Softmax { log: true })
}

/// `max(row)`, with lanes so that it vectorizes (`-inf` for an empty row).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    chunks.remainder().iter().chain(acc.iter()).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Softmax of one row in place, given its maximum: `exp(v - max) / sum`.
#[inline(always)]
fn normalize_row<const FMA: bool>(row: &mut [f32], max: f32) {
    if max == f32::NEG_INFINITY {
        // Every entry is -inf (fully masked): PyTorch gives NaN, which is what 0/0 gives here too.
        row.iter_mut().for_each(|v| *v = f32::NAN);
        return;
    }
    for v in row.iter_mut() {
        *v = exp_neg::<FMA>(*v - max);
    }
    let inv = 1.0 / lane_sum([&*row], |[v]| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

multiversion! {
    /// Softmax in place over each row of `d` values of `x`.
    pub(crate) fn softmax_rows_in_place(x: &mut [f32], d: usize) {
        for row in x.chunks_exact_mut(d) {
            let max = row_max(row);
            normalize_row::<FMA>(row, max);
        }
    }
}

multiversion! {
    /// Attention logits to probabilities in place: each row of `d` values of `s` becomes
    /// `softmax(s * scale + bias + mask)`, `bias` and `mask` (when given) of the same shape as
    /// `s`. One pass to form the logits and find the row maximum, one to exponentiate and sum.
    pub(crate) fn softmax_scaled_biased_rows_in_place(
        s: &mut [f32],
        d: usize,
        scale: f32,
        bias: &[f32],
        mask: Option<&[f32]>,
    ) {
        for (r, row) in s.chunks_exact_mut(d).enumerate() {
            let b = &bias[r * d..(r + 1) * d];
            match mask {
                Some(m) => {
                    let m = &m[r * d..(r + 1) * d];
                    for i in 0..d {
                        row[i] = row[i] * scale + b[i] + m[i];
                    }
                }
                None => {
                    for i in 0..d {
                        row[i] = row[i] * scale + b[i];
                    }
                }
            }
            let max = row_max(row);
            normalize_row::<FMA>(row, max);
        }
    }
}

multiversion! {
    /// Softmax backward in place over rows of `d` values: `g` holds `dy` on entry and
    /// `y * (dy - <y, dy>)` on return, `y` the softmax output.
    pub(crate) fn softmax_grad_rows_in_place(y: &[f32], g: &mut [f32], d: usize) {
        for (yr, gr) in y.chunks_exact(d).zip(g.chunks_exact_mut(d)) {
            let dot = lane_sum([yr, &*gr], |[y, g]| y * g);
            for i in 0..d {
                gr[i] = yr[i] * (gr[i] - dot);
            }
        }
    }
}

multiversion! {
    /// Log-softmax of each row of `d` values of `x`, written to `y`.
    fn log_softmax_rows(y: &mut [f32], x: &[f32], d: usize) {
        for (yr, xr) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let max = row_max(xr);
            if max == f32::NEG_INFINITY {
                yr.iter_mut().for_each(|v| *v = f32::NAN);
                continue;
            }
            let lse = max + lane_sum([xr], |[v]| exp_neg::<FMA>(v - max)).ln();
            for i in 0..d {
                yr[i] = xr[i] - lse;
            }
        }
    }
}

multiversion! {
    /// Log-softmax backward over rows: `dx = dy - exp(y) * sum(dy)`, `y` the log-softmax output.
    fn log_softmax_grad_rows(dx: &mut [f32], y: &[f32], gy: &[f32], d: usize) {
        for ((dr, yr), gr) in dx.chunks_exact_mut(d).zip(y.chunks_exact(d)).zip(gy.chunks_exact(d)) {
            let total = lane_sum([gr], |[g]| g);
            for i in 0..d {
                // y <= 0, so exp_neg applies.
                dr[i] = gr[i] - exp_neg::<FMA>(yr[i]) * total;
            }
        }
    }
}

/// The last dimension of a layout (1 for a scalar).
fn last_dim(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1)
}

/// Forward op: softmax or log-softmax of each row.
struct Softmax {
    log: bool,
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        if self.log {
            "log-softmax"
        } else {
            "softmax"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s, l)?;
        let d = last_dim(l);
        if d == 0 || x.is_empty() {
            return Ok((CpuStorage::F32(x.to_vec()), l.shape().clone()));
        }
        let chunk = d * rows_per_task(d, MIN_TASK);
        let out = if self.log {
            let mut out = vec![0f32; x.len()];
            out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(y, x)| log_softmax_rows(y, x, d));
            out
        } else {
            let mut out = x.to_vec();
            out.par_chunks_mut(chunk).for_each(|y| softmax_rows_in_place(y, d));
            out
        };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad { log: self.log })?))
    }
}

/// Backward op: `(y, dy) -> dx`, `y` the forward output.
struct SoftmaxGrad {
    log: bool,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        if self.log {
            "log-softmax-grad"
        } else {
            "softmax-grad"
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = as_f32(self.name(), s1, l1)?;
        let gy = as_f32(self.name(), s2, l2)?;
        if y.len() != gy.len() {
            bail!("{}: {} outputs but {} gradients", self.name(), y.len(), gy.len());
        }
        let d = last_dim(l1);
        if d == 0 || y.is_empty() {
            return Ok((CpuStorage::F32(gy.to_vec()), l1.shape().clone()));
        }
        let chunk = d * rows_per_task(d, MIN_TASK);
        let out = if self.log {
            let mut out = vec![0f32; y.len()];
            out.par_chunks_mut(chunk)
                .zip(y.par_chunks(chunk))
                .zip(gy.par_chunks(chunk))
                .for_each(|((dx, y), g)| log_softmax_grad_rows(dx, y, g, d));
            out
        } else {
            let mut out = gy.to_vec();
            out.par_chunks_mut(chunk).zip(y.par_chunks(chunk)).for_each(|(g, y)| softmax_grad_rows_in_place(y, g, d));
            out
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
