//! The exponential moving average of the weights (timm's `ModelEmaV2`), updated after every
//! optimizer step; the state holds it so that checkpoints save it and evaluation can use it.

use super::Hook;
use crate::trainer::{TrainError, TrainState};

/// Updates `state.ema` after each optimizer step.
pub struct EmaHook;

impl Hook for EmaHook {
    fn after_step(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        if let (true, Some(ema)) = (s.step.stepped, &mut s.ema) {
            ema.update(&s.params)?;
        }
        Ok(())
    }
}
