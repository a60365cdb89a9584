//! Exponential moving average of a model's weights (timm `ModelEmaV2`).
//!
//! ConvNeXt's ImageNet recipe evaluates an EMA of the weights (decay 0.9999). After each
//! optimizer step every tensor of the model, buffers included, is folded in:
//! `ema = decay * ema + (1 - decay) * value`.

use candle_core::{bail, Result, Tensor};
use nextdet_ops::params::ParamStore;
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
            *ema = (ema.affine(self.decay, 0.0)? + cur.affine(1.0 - self.decay, 0.0)?)?;
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
            *ema = t.to_dtype(ema.dtype())?.to_device(ema.device())?;
        }
        Ok(())
    }
}
