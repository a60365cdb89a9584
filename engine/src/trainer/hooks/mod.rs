//! The hooks of the training loop, one concern each, as detectron2's `HookBase`
//! (`detectron2/engine/train_loop.py`): the loop calls every hook, in order, at fixed points.
//!
//! The call order of one run:
//! ```text
//! before_train
//! for each epoch:
//!     for each iteration:
//!         before_step          (may stop the run: an interrupt)
//!         (batch, losses)
//!         after_forward        (the step's loss values and total are in `state.step`)
//!         (backward; on the last iteration of an accumulation group:)
//!         after_backward       (the summed gradients, before clipping and the optimizer step)
//!         (optimizer step)
//!         after_step
//!     after_epoch              (evaluation, logging, checkpoint)
//! after_train                  (also after an error or an interrupt)
//! ```
//! `before_step` and `after_step` run every iteration: keep them cheap.

mod checkpoint;
mod distributed;
mod ema;
mod eval;
mod fault;
mod interrupt;
mod logger;
mod lr;
mod non_finite;

pub use checkpoint::CheckpointHook;
pub use distributed::{all_reduce_grads, broadcast_params, DistributedHook, BUCKET_BYTES};
pub use ema::EmaHook;
pub use eval::EvalHook;
pub use fault::FaultHook;
pub use interrupt::InterruptHook;
pub use logger::MetricsLogger;
pub use lr::LrScheduleHook;
pub use non_finite::NonFiniteStop;

use super::{Metrics, TrainError, TrainState, TrainerConfig};
use crate::schedule::LrSchedule;
use candle_core::backprop::GradStore;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A piece of the training loop (see the module docs for when each method is called). Every
/// method does nothing by default.
pub trait Hook {
    /// Once, after a resume has restored the state.
    fn before_train(&mut self, _state: &mut TrainState) -> Result<(), TrainError> {
        Ok(())
    }
    /// Before each iteration; setting `state.interrupted` stops the run.
    fn before_step(&mut self, _state: &mut TrainState) -> Result<(), TrainError> {
        Ok(())
    }
    /// After the losses of an iteration are known (`state.step.values`).
    fn after_forward(&mut self, _state: &mut TrainState) -> Result<(), TrainError> {
        Ok(())
    }
    /// Before an optimizer step, with the (accumulated) gradients it will apply.
    fn after_backward(&mut self, _state: &mut TrainState, _grads: &mut GradStore) -> Result<(), TrainError> {
        Ok(())
    }
    /// After each iteration (`state.step.stepped` says whether the optimizer stepped).
    fn after_step(&mut self, _state: &mut TrainState) -> Result<(), TrainError> {
        Ok(())
    }
    /// After each epoch (`state.run.epoch` is the number of epochs done); `evaluate` runs the
    /// task's evaluation for an epoch.
    fn after_epoch(
        &mut self,
        _state: &mut TrainState,
        _evaluate: &mut dyn FnMut(usize) -> anyhow::Result<Metrics>,
    ) -> Result<(), TrainError> {
        Ok(())
    }
    /// Once at the end, whether the run completed, was interrupted or failed.
    fn after_train(&mut self, _state: &mut TrainState) -> Result<(), TrainError> {
        Ok(())
    }
}

/// The built-in hooks, in their call order: with more than one rank the [`DistributedHook`]
/// comes first (it broadcasts the weights before anything reads them and averages a step's
/// values before the non-finite check and the logger see them); the learning rate is set before the interrupt
/// check; at an epoch's end the evaluation runs and is logged before the epoch's checkpoint is
/// written, so that a checkpoint holds the best metric and a log that reaches its own
/// evaluation (a run killed in between resumes from the previous epoch and redoes both; mmcv
/// writes the checkpoint first, and a run killed right after it resumes without that
/// evaluation).
pub(super) fn default_hooks(
    cfg: &TrainerConfig,
    schedule: LrSchedule,
    interrupt: Arc<AtomicBool>,
    distributed: bool,
) -> Vec<Box<dyn Hook>> {
    let mut hooks: Vec<Box<dyn Hook>> = Vec::new();
    if distributed {
        hooks.push(Box::new(DistributedHook::default()));
    }
    hooks.extend::<[Box<dyn Hook>; 7]>([
        Box::new(LrScheduleHook::new(schedule)),
        Box::new(InterruptHook::new(interrupt, cfg.catch_ctrlc)),
        Box::new(NonFiniteStop),
        Box::new(EmaHook),
        Box::new(EvalHook),
        Box::new(MetricsLogger::default()),
        Box::new(CheckpointHook),
    ]);
    hooks
}
