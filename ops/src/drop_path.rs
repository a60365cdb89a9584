//! Stochastic depth (timm's `DropPath`): in training, each sample's residual branch is dropped
//! with probability `p` and kept ones are scaled by `1 / (1 - p)`; in evaluation it is the
//! identity.

use crate::cpu::as_f32;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rand::Rng;
use rayon::prelude::*;

/// Applies per-sample stochastic depth along dimension 0 of `x`. The identity when `!training`
/// or `p == 0`. Differentiable: the gradient goes through the same per-sample scales.
pub fn drop_path(x: &Tensor, p: f64, training: bool, rng: &mut impl Rng) -> Result<Tensor> {
    if !training || p <= 0.0 {
        return Ok(x.clone());
    }
    let scales = drop_path_scales(x.dim(0)?, p, rng);
    if !crate::generic::fast_cpu(x) {
        return crate::generic::drop_path_scaled(x, &scales);
    }
    x.contiguous()?.apply_op1(SampleScale { scales })
}

/// The per-sample factors of one stochastic-depth draw: 0 for a dropped sample (probability
/// `p`), `1 / (1 - p)` for a kept one. One uniform draw per sample, in order, so a seeded run
/// draws the same masks whichever op applies them.
pub fn drop_path_scales(samples: usize, p: f64, rng: &mut impl Rng) -> Vec<f32> {
    let keep = 1.0 - p;
    (0..samples).map(|_| if rng.gen::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect()
}

/// Multiplies sample `n` (a slice along dimension 0) by `scales[n]`; linear, so its backward
/// is itself.
#[derive(Clone)]
struct SampleScale {
    scales: Vec<f32>,
}

impl CustomOp1 for SampleScale {
    fn name(&self) -> &'static str {
        "drop-path"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), storage, layout)?;
        let per = x.len() / self.scales.len().max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(per.max(1))
            .zip(x.par_chunks(per.max(1)))
            .zip(self.scales.par_iter())
            .for_each(|((o, xi), &s)| o.iter_mut().zip(xi).for_each(|(o, v)| *o = v * s));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(self.clone())?))
    }
}
