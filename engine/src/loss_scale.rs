//! Loss scaling for f16 mixed-precision training, as mmcv's `Fp16OptimizerHook` does through
//! PyTorch's `torch.cuda.amp.GradScaler` (`torch/amp/grad_scaler.py`): the loss is multiplied by
//! a scale before the backward pass so that small gradients do not flush to zero in f16, the
//! parameter gradients are divided by it before clipping and the optimizer step, and a step
//! whose gradients overflowed (an infinite or NaN value) is skipped.
//!
//! A dynamic scale starts at 2^16, halves on every overflow and doubles after 2000 steps in a
//! row without one (GradScaler's defaults); a fixed scale (mmcv's `loss_scale=512.`) never
//! changes. bf16 has f32's exponent range and trains without scaling.

use crate::trainer::{Hook, TrainError, TrainState};
use candle_core::backprop::GradStore;
use candle_core::{DType, Result};
use nextdet_ops::params::ParamStore;

/// How the loss is scaled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossScale {
    /// Always this factor.
    Fixed(f64),
    /// Starts at `init`, times `backoff` on an overflow, times `growth` after `interval` steps
    /// without one.
    Dynamic {
        /// The first scale.
        init: f64,
        /// Factor after `interval` good steps.
        growth: f64,
        /// Factor after an overflow.
        backoff: f64,
        /// Good steps between two growths.
        interval: usize,
    },
}

impl LossScale {
    /// GradScaler's defaults: 2^16, doubled every 2000 good steps, halved on overflow.
    pub fn dynamic() -> Self {
        LossScale::Dynamic { init: 65536.0, growth: 2.0, backoff: 0.5, interval: 2000 }
    }

    /// A fixed factor.
    pub fn fixed(scale: f64) -> Self {
        LossScale::Fixed(scale)
    }
}

/// The scale of a run and its count of good steps.
#[derive(Clone, Debug)]
pub struct LossScaler {
    mode: LossScale,
    scale: f64,
    good_steps: usize,
}

impl LossScaler {
    /// A scaler at its initial scale.
    pub fn new(mode: LossScale) -> Self {
        let scale = match mode {
            LossScale::Fixed(s) => s,
            LossScale::Dynamic { init, .. } => init,
        };
        Self { mode, scale, good_steps: 0 }
    }

    /// The factor the next backward pass multiplies the loss by.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Divides every parameter gradient in `grads` by the scale, in `f32`; returns whether all
    /// of them are finite.
    pub fn unscale(&self, grads: &mut GradStore, params: &ParamStore) -> Result<bool> {
        let mut finite = true;
        for (_, var) in params.trainable() {
            let Some(g) = grads.remove(var.as_tensor()) else { continue };
            let g = g.to_dtype(DType::F32)?.affine(1.0 / self.scale, 0.0)?;
            // sum of |g| is finite exactly when every value is: one host read per tensor
            finite &= g.abs()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?.is_finite();
            grads.insert(var.as_tensor(), g);
        }
        Ok(finite)
    }

    /// Records the outcome of a step: a dynamic scale backs off after an overflow and grows
    /// after `interval` finite steps in a row.
    pub fn update(&mut self, finite: bool) {
        let LossScale::Dynamic { growth, backoff, interval, .. } = self.mode else { return };
        if !finite {
            self.scale *= backoff;
            self.good_steps = 0;
        } else {
            self.good_steps += 1;
            if self.good_steps >= interval {
                self.scale *= growth;
                self.good_steps = 0;
            }
        }
    }
}

/// The hook that applies a [`LossScaler`]: sets each iteration's loss scale, and after the
/// backward pass unscales the gradients, drops them all when one overflowed (the optimizer then
/// leaves every parameter as it is) and updates the scale.
pub struct LossScaleHook {
    scaler: LossScaler,
    skipped: usize,
}

impl LossScaleHook {
    /// A hook around a fresh scaler.
    pub fn new(mode: LossScale) -> Self {
        Self { scaler: LossScaler::new(mode), skipped: 0 }
    }

    /// Steps skipped so far for overflowing gradients.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

impl Hook for LossScaleHook {
    fn before_step(&mut self, state: &mut TrainState) -> std::result::Result<(), TrainError> {
        state.step.loss_scale = Some(self.scaler.scale());
        Ok(())
    }

    fn after_backward(&mut self, state: &mut TrainState, grads: &mut GradStore) -> std::result::Result<(), TrainError> {
        let finite = self.scaler.unscale(grads, &state.params)?;
        if !finite {
            for (_, var) in state.params.trainable() {
                grads.remove(var.as_tensor());
            }
            self.skipped += 1;
            tracing::warn!(
                "fp16: gradients overflowed at loss scale {}; step skipped, scale {}",
                self.scaler.scale(),
                self.scaler.scale() * 0.5
            );
        }
        self.scaler.update(finite);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use nextdet_ops::params::Init;

    #[test]
    fn dynamic_scale_backs_off_and_grows() {
        let mut s = LossScaler::new(LossScale::Dynamic { init: 8.0, growth: 2.0, backoff: 0.5, interval: 3 });
        assert_eq!(s.scale(), 8.0);
        s.update(false);
        assert_eq!(s.scale(), 4.0);
        s.update(true);
        s.update(true);
        assert_eq!(s.scale(), 4.0);
        s.update(true);
        assert_eq!(s.scale(), 8.0, "three good steps in a row grow it");
        s.update(true);
        s.update(false);
        s.update(true);
        s.update(true);
        assert_eq!(s.scale(), 4.0, "an overflow restarts the count");
        let mut fixed = LossScaler::new(LossScale::fixed(512.0));
        fixed.update(false);
        assert_eq!(fixed.scale(), 512.0);
    }

    #[test]
    fn unscale_divides_and_detects_overflow() {
        let store = ParamStore::new(&Device::Cpu, 0);
        let w = store.root().param("w", 3, Init::Const(1.0)).unwrap();
        let s = LossScaler::new(LossScale::fixed(4.0));
        let loss = w.sum_all().unwrap().affine(4.0 * 3.0, 0.0).unwrap();
        let mut grads = loss.backward().unwrap();
        assert!(s.unscale(&mut grads, &store).unwrap());
        assert_eq!(grads.get(&w).unwrap().to_vec1::<f32>().unwrap(), vec![3.0; 3]);
        let inf = Tensor::new(&[1.0f32, f32::INFINITY, 0.0], &Device::Cpu).unwrap();
        let mut grads = (w.clone() * inf).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(!s.unscale(&mut grads, &store).unwrap());
    }
}
