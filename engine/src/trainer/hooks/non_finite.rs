//! The stop on a non-finite loss: the run ends with an error naming the iteration and the loss
//! part, before the bad gradients reach the weights; no checkpoint is written, so the last good
//! one stays.

use super::Hook;
use crate::trainer::{TrainError, TrainState};

/// Fails the run when any loss term or metric of an iteration is NaN or infinite.
pub struct NonFiniteStop;

impl Hook for NonFiniteStop {
    fn after_forward(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        if let Some((part, value)) = s.step.values.iter().find(|(_, v)| !v.is_finite()) {
            return Err(TrainError::NonFinite {
                epoch: s.step.epoch + 1,
                iter: s.step.iter + 1,
                global_iter: s.run.global_iter + 1,
                part: part.clone(),
                value: *value,
            });
        }
        Ok(())
    }
}
