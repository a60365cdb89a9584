//! Epoch checkpoints (mmcv's `CheckpointHook`): `epoch_N.safetensors` every
//! `checkpoint_interval` epochs and at the last one (`final` when the interval is 0), with
//! `latest` pointing at the newest and only the last `keep_last` epoch files kept. Rank 0
//! writes them; the other ranks of a data-parallel run only note the path.

use super::Hook;
use crate::trainer::{Metrics, TrainError, TrainState};

/// Writes the epoch checkpoints.
pub struct CheckpointHook;

impl Hook for CheckpointHook {
    fn after_epoch(
        &mut self,
        s: &mut TrainState,
        _evaluate: &mut dyn FnMut(usize) -> anyhow::Result<Metrics>,
    ) -> Result<(), TrainError> {
        let done = s.run.epoch;
        let last = done == s.cfg.max_epochs;
        let interval = s.cfg.checkpoint_interval;
        if ((interval > 0 && done.is_multiple_of(interval)) || last) && !s.group.is_main() {
            s.last_checkpoint =
                Some(if interval > 0 { s.checkpoints.epoch_path(done) } else { s.checkpoints.named_path("final") });
        } else if (interval > 0 && done.is_multiple_of(interval)) || last {
            let ckpt = s.checkpoint()?;
            s.last_checkpoint = Some(if interval > 0 {
                s.checkpoints.save_epoch(done, &ckpt)?
            } else {
                s.checkpoints.save_named("final", &ckpt)?
            });
        }
        Ok(())
    }
}
