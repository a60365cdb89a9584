//! A bias added over rows and ReLU, as ops whose backward passes are one parallel pass each.
//!
//! Both are what candle has (`broadcast_add`, `relu`), but candle's backward of a broadcast add
//! sums the gradient over dimension 0 with a per-element index division on one thread, and its
//! ReLU backward is five full-size single-threaded passes (zeros, compare, cast, multiply, add).
//! The detection heads apply both to every RoI feature map, three times over in the cascade.

use crate::cpu::{as_f32, rows_per_task, sum_partials};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Elements a rayon task handles at least.
const MIN_TASK: usize = 1 << 15;

/// `x + bias` with `bias: [D]` broadcast over the rows of `x: [..., D]` (a linear layer's or a
/// 1x1 convolution's bias on channels-last rows). Differentiable in both; the bias gradient
/// is the column sum of the output gradient, summed in fixed row groups so that it has the
/// same bits whatever the thread count.
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if bias.dims() != [d] {
        bail!("bias_add: bias {:?} does not fit last dim {d} of {:?}", bias.dims(), x.dims());
    }
    if !crate::generic::fast_cpu(x) {
        return crate::generic::bias_add(x, bias);
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, BiasAdd)
}

/// Forward op: `(x, bias) -> x + bias`.
struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s1, l1)?;
        let b = as_f32(self.name(), s2, l2)?;
        let d = b.len();
        if d == 0 {
            return Ok((CpuStorage::F32(Vec::new()), l1.shape().clone()));
        }
        let mut out = Vec::with_capacity(x.len());
        let chunk = d * rows_per_task(d, MIN_TASK);
        out.spare_capacity_mut().par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(yo, xi)| {
            for (yr, xr) in yo.chunks_exact_mut(d).zip(xi.chunks_exact(d)) {
                for ((y, &v), &bv) in yr.iter_mut().zip(xr).zip(b) {
                    y.write(v + bv);
                }
            }
        });
        // SAFETY: the loop above wrote every element (x.len() is a multiple of d).
        unsafe { out.set_len(x.len()) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = grad.contiguous()?.apply_op1_no_bwd(&ColumnSum { d: bias.elem_count() })?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

/// `[..., D] -> [D]`: the sum over all rows.
struct ColumnSum {
    d: usize,
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = as_f32(self.name(), s, l)?;
        let d = self.d;
        if d == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from(0)));
        }
        let chunk = d * rows_per_task(d, MIN_TASK);
        let partials: Vec<Vec<f32>> = g
            .par_chunks(chunk)
            .map(|gi| {
                let mut acc = vec![0f32; d];
                for row in gi.chunks_exact(d) {
                    acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
                }
                acc
            })
            .collect();
        Ok((CpuStorage::F32(sum_partials(partials, d)), Shape::from(d)))
    }
}

/// `max(x, 0)`, differentiable (gradient 0 at 0 and below, as PyTorch).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !crate::generic::fast_cpu(x) {
        return crate::generic::relu(x);
    }
    x.contiguous()?.apply_op1(Relu)
}

/// Forward op: `x -> max(x, 0)`; the backward reads the output (positive where x was).
struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s, l)?;
        let mut out = Vec::with_capacity(x.len());
        out.spare_capacity_mut().par_chunks_mut(MIN_TASK).zip(x.par_chunks(MIN_TASK)).for_each(|(yo, xi)| {
            yo.iter_mut().zip(xi).for_each(|(y, &v)| {
                y.write(if v < 0.0 { 0.0 } else { v }); // NaN passes, as in PyTorch
            })
        });
        // SAFETY: every element was written above.
        unsafe { out.set_len(x.len()) };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &ReluGrad)?))
    }
}

/// `(y, dy) -> dy where y > 0, else 0`.
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "relu-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = as_f32(self.name(), s1, l1)?;
        let gy = as_f32(self.name(), s2, l2)?;
        if y.len() != gy.len() {
            bail!("relu backward: {} outputs but {} gradients", y.len(), gy.len());
        }
        let mut out = Vec::with_capacity(y.len());
        out.spare_capacity_mut()
            .par_chunks_mut(MIN_TASK)
            .zip(y.par_chunks(MIN_TASK).zip(gy.par_chunks(MIN_TASK)))
            .for_each(|(o, (yi, gi))| {
                for ((o, &y), &g) in o.iter_mut().zip(yi).zip(gi) {
                    o.write(if y > 0.0 { g } else { 0.0 });
                }
            });
        // SAFETY: every element was written above.
        unsafe { out.set_len(y.len()) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
