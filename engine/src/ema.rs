//! Exponential moving average of a model's weights (timm `ModelEmaV2`).
//!
//! ConvNeXt's ImageNet recipe evaluates an EMA of the weights (decay 0.9999). After each
//! optimizer step every tensor of the model, buffers included, is folded in:
//! `ema = decay * ema + (1 - decay) * value`.

use candle_core::{bail, CpuStorage, DType, InplaceOp2, Layout, Result, Tensor};
use nextdet_ops::params::ParamStore;
use rayon::prelude::*;
use std::collections::HashMap;

/// The moving average of every tensor of a [`ParamStore`], by name.
pub struct ModelEma {
    decay: f64,
    tensors: Vec<(String, Tensor)>,
}

impl ModelEma {
    /// Starts the average at the current values of `params` (copies).
    pub fn new(params: &ParamStore, decay: f64) -> Result<Self> {
        let tensors = params.tensors().into_iter().map(|(n, t)| Ok((n, t.copy()?))).collect::<Result<Vec<_>>>()?;
        Ok(Self { decay, tensors })
    }

    /// The decay factor.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Folds the current values of `params` into the average. Errors if the store's tensors
    /// are not the ones the average was started from.
    pub fn update(&mut self, params: &ParamStore) -> Result<()> {
        let current = params.tensors();
        if current.len() != self.tensors.len() {
            bail!("ema: the model has {} tensors, the average {}", current.len(), self.tensors.len());
        }
        for ((name, ema), (cur_name, cur)) in self.tensors.iter_mut().zip(current) {
            if *name != cur_name {
                bail!("ema: tensor `{cur_name}` where `{name}` was expected");
            }
            if ema.device().is_cpu() && ema.dtype() == DType::F32 && cur.dtype() == DType::F32 {
                let step = EmaStep { decay: self.decay as f32, rest: (1.0 - self.decay) as f32 };
                ema.inplace_op2(&cur.contiguous()?, &step)?;
            } else {
                *ema = (ema.affine(self.decay, 0.0)? + cur.affine(1.0 - self.decay, 0.0)?)?;
            }
        }
        Ok(())
    }

    /// `(name, average)` of every tensor, in the store's order.
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }

    /// The averages as a map (what a checkpoint stores under `ema.`).
    pub fn state(&self) -> HashMap<String, Tensor> {
        self.tensors.iter().cloned().collect()
    }

    /// Restores the averages from a map; errors name a missing tensor or a shape mismatch.
    pub fn load(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, ema) in self.tensors.iter_mut() {
            let Some(t) = tensors.get(name) else { bail!("ema: checkpoint has no `ema.{name}`") };
            if t.dims() != ema.dims() {
                bail!("ema: `ema.{name}` has shape {:?}, the model {:?}", t.dims(), ema.dims());
            }
            // a copy: the average is updated in place and must not alias the checkpoint's tensor
            *ema = t.to_dtype(ema.dtype())?.to_device(ema.device())?.copy()?;
        }
        Ok(())
    }
}

/// The fused CPU update `e = decay * e + (1 - decay) * p`, in place, in timm's f32 order.
struct EmaStep {
    decay: f32,
    /// `1 - decay`, computed in f64 as Python does.
    rest: f32,
}

impl InplaceOp2 for EmaStep {
    fn name(&self) -> &'static str {
        "ema-step"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (CpuStorage::F32(e), Some((a, b))) = (s1, l1.contiguous_offsets()) else {
            bail!("ema: expected a contiguous f32 average")
        };
        let (CpuStorage::F32(p), Some((c, d))) = (s2, l2.contiguous_offsets()) else {
            bail!("ema: expected a contiguous f32 tensor")
        };
        let (e, p) = (&mut e[a..b], &p[c..d]);
        if e.len() != p.len() {
            bail!("ema: sizes differ");
        }
        let (decay, rest) = (self.decay, self.rest);
        e.par_chunks_mut(1 << 14).zip(p.par_chunks(1 << 14)).for_each(|(e, p)| {
            for (e, p) in e.iter_mut().zip(p) {
                *e = decay * *e + rest * *p;
            }
        });
        Ok(())
    }
}
