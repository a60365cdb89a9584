//! The learning-rate schedule (mmcv's `LrUpdaterHook`): the rate of each optimizer step.

use super::Hook;
use crate::schedule::LrSchedule;
use crate::trainer::{TrainError, TrainState};

/// Sets `state.step.lr` before every iteration from the schedule, per optimizer step.
pub struct LrScheduleHook {
    schedule: LrSchedule,
}

impl LrScheduleHook {
    /// The hook of `schedule`.
    pub fn new(schedule: LrSchedule) -> Self {
        Self { schedule }
    }
}

impl Hook for LrScheduleHook {
    fn before_step(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        s.step.lr = self.schedule.lr_at(s.step.epoch, s.step.iter / s.cfg.accumulate, s.steps_per_epoch);
        Ok(())
    }
}
