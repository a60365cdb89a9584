//! The end of a ConvNeXt block in one pass: the second linear's bias, the layer scale and the
//! residual add, `shortcut + gamma * (y + bias)`, forward and backward.

use crate::cpu::{as_f32, rows_per_task, sum_partials};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `shortcut + gamma * (y + bias)` over the last dimension `D`; `gamma: None` means no layer
/// scale (a scale of one, as ConvNeXt-isotropic S/B use). Differentiable in every argument.
pub fn layer_scale_residual(y: &Tensor, bias: &Tensor, gamma: Option<&Tensor>, shortcut: &Tensor) -> Result<Tensor> {
    let d = y.dim(candle_core::D::Minus1)?;
    if y.shape() != shortcut.shape() {
        bail!("layer_scale_residual: branch {:?} and shortcut {:?} differ", y.dims(), shortcut.dims());
    }
    let ones;
    let gamma = match gamma {
        Some(g) => g,
        None => {
            ones = Tensor::ones(d, y.dtype(), y.device())?;
            &ones
        }
    };
    if bias.dims() != [d] || gamma.dims() != [d] {
        bail!("layer_scale_residual: bias {:?} / gamma {:?} do not fit last dim {d}", bias.dims(), gamma.dims());
    }
    let bias_gamma = Tensor::stack(&[bias, gamma], 0)?;
    y.contiguous()?.apply_op3(&bias_gamma, &shortcut.contiguous()?, LayerScaleResidual)
}

/// Forward op: `(y, [bias; gamma], shortcut) -> shortcut + gamma * (y + bias)`.
struct LayerScaleResidual;

impl CustomOp3 for LayerScaleResidual {
    fn name(&self) -> &'static str {
        "layer-scale-residual"
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
        let y = as_f32(self.name(), s1, l1)?;
        let bg = as_f32(self.name(), s2, l2)?;
        let sc = as_f32(self.name(), s3, l3)?;
        let d = bg.len() / 2;
        let (b, g) = bg.split_at(d);
        let mut out = vec![0f32; y.len()];
        let rows = rows_per_task(d, 1 << 15);
        out.par_chunks_mut(d * rows).zip(y.par_chunks(d * rows)).zip(sc.par_chunks(d * rows)).for_each(
            |((o, yi), si)| {
                for ((or, yr), sr) in o.chunks_mut(d).zip(yi.chunks(d)).zip(si.chunks(d)) {
                    for i in 0..d {
                        or[i] = sr[i] + g[i] * (yr[i] + b[i]);
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        y: &Tensor,
        bias_gamma: &Tensor,
        _shortcut: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let packed = y.apply_op3_no_bwd(bias_gamma, &grad, &LayerScaleResidualGrad)?;
        let n = y.elem_count();
        let dy = packed.narrow(0, 0, n)?.reshape(y.shape())?;
        let dbg = packed.narrow(0, n, bias_gamma.elem_count())?.reshape(bias_gamma.shape())?;
        Ok((Some(dy), Some(dbg), Some(grad)))
    }
}

/// Backward op: `(y, [bias; gamma], grad) -> [dy, dbias, dgamma]` packed flat.
struct LayerScaleResidualGrad;

impl CustomOp3 for LayerScaleResidualGrad {
    fn name(&self) -> &'static str {
        "layer-scale-residual-grad"
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
        let y = as_f32(self.name(), s1, l1)?;
        let bg = as_f32(self.name(), s2, l2)?;
        let gy = as_f32(self.name(), s3, l3)?;
        let d = bg.len() / 2;
        let (b, g) = bg.split_at(d);
        let mut packed = vec![0f32; y.len() + 2 * d];
        let (dy, dbg) = packed.split_at_mut(y.len());
        let rows = rows_per_task(d, 1 << 15);
        let partials: Vec<Vec<f32>> = dy
            .par_chunks_mut(d * rows)
            .zip(y.par_chunks(d * rows))
            .zip(gy.par_chunks(d * rows))
            .map(|((dyo, yi), gi)| {
                let mut acc = vec![0f32; 2 * d];
                for ((dr, yr), gr) in dyo.chunks_mut(d).zip(yi.chunks(d)).zip(gi.chunks(d)) {
                    for i in 0..d {
                        dr[i] = gr[i] * g[i];
                        acc[i] += dr[i];
                        acc[d + i] += gr[i] * (yr[i] + b[i]);
                    }
                }
                acc
            })
            .collect();
        dbg.copy_from_slice(&sum_partials(partials, 2 * d));
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}
