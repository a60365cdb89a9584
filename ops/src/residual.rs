//! The end of a ConvNeXt block in one pass: the second linear's bias, the layer scale, the
//! stochastic depth of training and the residual add, `shortcut + s[n] * gamma * (y + bias)`,
//! forward and backward. Done as separate candle ops these cost a broadcast multiply and a
//! strided reduction per parameter gradient, about a tenth of a ConvNeXt-T training step.

use crate::cpu::{as_f32, rows_per_task, sum_partials};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `shortcut + gamma * (y + bias)` over the last dimension `D`; `gamma: None` means no layer
/// scale (a scale of one, as ConvNeXt-isotropic S/B use). Differentiable in every argument.
pub fn layer_scale_residual(y: &Tensor, bias: &Tensor, gamma: Option<&Tensor>, shortcut: &Tensor) -> Result<Tensor> {
    layer_scale_drop_path_residual(y, bias, gamma, shortcut, None)
}

/// [`layer_scale_residual`] with stochastic depth: sample `n` (a slice along dimension 0) has
/// its branch multiplied by `sample_scales[n]` (0 for a dropped sample, `1 / keep` for a kept
/// one, as [`crate::drop_path::drop_path_scales`] draws them). `None` is a scale of one.
pub fn layer_scale_drop_path_residual(
    y: &Tensor,
    bias: &Tensor,
    gamma: Option<&Tensor>,
    shortcut: &Tensor,
    sample_scales: Option<Vec<f32>>,
) -> Result<Tensor> {
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
    let samples = y.dim(0)?;
    if let Some(s) = &sample_scales {
        if s.len() != samples {
            bail!("layer_scale_residual: {} sample scales for {samples} samples", s.len());
        }
    }
    if !crate::generic::fast_cpu(y) {
        return crate::generic::layer_scale_drop_path_residual(
            y,
            bias,
            Some(gamma),
            shortcut,
            sample_scales.as_deref(),
        );
    }
    let bias_gamma = Tensor::stack(&[bias, gamma], 0)?;
    let op = LayerScaleResidual {
        scales: SampleScales { rows_per_sample: y.elem_count() / d.max(1) / samples.max(1), scales: sample_scales },
    };
    y.contiguous()?.apply_op3(&bias_gamma, &shortcut.contiguous()?, op)
}

/// Per-sample branch scales, looked up by row (a row is one position's `D` channels).
#[derive(Clone)]
struct SampleScales {
    rows_per_sample: usize,
    scales: Option<Vec<f32>>,
}

impl SampleScales {
    /// The scale of global row `row`.
    fn of_row(&self, row: usize) -> f32 {
        match &self.scales {
            Some(s) => s[row / self.rows_per_sample.max(1)],
            None => 1.0,
        }
    }
}

/// Forward op: `(y, [bias; gamma], shortcut) -> shortcut + s[n] * gamma * (y + bias)`.
struct LayerScaleResidual {
    scales: SampleScales,
}

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
        let mut out = Vec::<f32>::with_capacity(y.len());
        let rows = rows_per_task(d, 1 << 15);
        out.spare_capacity_mut()[..y.len()]
            .par_chunks_mut(d * rows)
            .zip(y.par_chunks(d * rows))
            .zip(sc.par_chunks(d * rows))
            .enumerate()
            .for_each(|(task, ((o, yi), si))| {
                for (r, ((or, yr), sr)) in o.chunks_mut(d).zip(yi.chunks(d)).zip(si.chunks(d)).enumerate() {
                    let s = self.scales.of_row(task * rows + r);
                    if s == 0.0 {
                        or.iter_mut().zip(sr).for_each(|(o, &v)| {
                            o.write(v);
                        });
                        continue;
                    }
                    for i in 0..d {
                        or[i].write(sr[i] + s * g[i] * (yr[i] + b[i]));
                    }
                }
            });
        // SAFETY: the chunks cover all y.len() elements and every one was written above.
        unsafe { out.set_len(y.len()) };
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
        let packed = y.apply_op3_no_bwd(bias_gamma, &grad, &LayerScaleResidualGrad { scales: self.scales.clone() })?;
        let n = y.elem_count();
        let dy = packed.narrow(0, 0, n)?.reshape(y.shape())?;
        let dbg = packed.narrow(0, n, bias_gamma.elem_count())?.reshape(bias_gamma.shape())?;
        Ok((Some(dy), Some(dbg), Some(grad)))
    }
}

/// Backward op: `(y, [bias; gamma], grad) -> [dy, dbias, dgamma]` packed flat.
struct LayerScaleResidualGrad {
    scales: SampleScales,
}

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
        let mut packed = Vec::<f32>::with_capacity(y.len() + 2 * d);
        let (dy, dbg) = packed.spare_capacity_mut()[..y.len() + 2 * d].split_at_mut(y.len());
        let rows = rows_per_task(d, 1 << 15);
        let partials: Vec<Vec<f32>> = dy
            .par_chunks_mut(d * rows)
            .zip(y.par_chunks(d * rows))
            .zip(gy.par_chunks(d * rows))
            .enumerate()
            .map(|(task, ((dyo, yi), gi))| {
                let mut acc = vec![0f32; 2 * d];
                for (r, ((dr, yr), gr)) in dyo.chunks_mut(d).zip(yi.chunks(d)).zip(gi.chunks(d)).enumerate() {
                    let s = self.scales.of_row(task * rows + r);
                    if s == 0.0 {
                        dr.iter_mut().for_each(|v| {
                            v.write(0.0);
                        });
                        continue;
                    }
                    for i in 0..d {
                        let gs = gr[i] * s;
                        let v = gs * g[i];
                        dr[i].write(v);
                        acc[i] += v;
                        acc[d + i] += gs * (yr[i] + b[i]);
                    }
                }
                acc
            })
            .collect();
        for (o, v) in dbg.iter_mut().zip(sum_partials(partials, 2 * d)) {
            o.write(v);
        }
        // SAFETY: every element of dy and of [dbias; dgamma] was written above.
        unsafe { packed.set_len(y.len() + 2 * d) };
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}
