//! Ctrl-C and the interrupt flag: the run stops at the next step boundary (never between the
//! iterations of an accumulation group) and saves `interrupted.safetensors`, which `latest` then
//! points at, so `--resume` continues exactly. A second Ctrl-C exits at once without saving.
//!
//! With several ranks the flag is all-reduced (max) before every step, so that every rank stops
//! at the same step; rank 0 writes the checkpoint and the others wait for it.

use super::Hook;
use crate::trainer::{TrainError, TrainState};
use nextdet_dist::ReduceOp;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Set by the Ctrl-C handler (installed once per process).
static CTRL_C: AtomicBool = AtomicBool::new(false);
static CTRL_C_INSTALLED: OnceLock<bool> = OnceLock::new();

fn install_ctrlc() {
    CTRL_C_INSTALLED.get_or_init(|| {
        ctrlc::set_handler(|| {
            if CTRL_C.swap(true, Ordering::SeqCst) {
                eprintln!("second Ctrl-C: exiting without saving");
                std::process::exit(130);
            }
            eprintln!("Ctrl-C: saving an `interrupted` checkpoint at the next step boundary (again to quit now)");
        })
        .is_ok()
    });
}

/// Stops the run with a checkpoint when the flag is set or Ctrl-C was pressed.
pub struct InterruptHook {
    flag: Arc<AtomicBool>,
    catch_ctrlc: bool,
}

impl InterruptHook {
    /// Watches `flag`, and Ctrl-C when `catch_ctrlc`.
    pub fn new(flag: Arc<AtomicBool>, catch_ctrlc: bool) -> Self {
        Self { flag, catch_ctrlc }
    }
}

impl Hook for InterruptHook {
    fn before_train(&mut self, _s: &mut TrainState) -> Result<(), TrainError> {
        if self.catch_ctrlc {
            install_ctrlc();
        }
        CTRL_C.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn before_step(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        if s.step.pending_grads {
            return Ok(());
        }
        let mut stop = self.flag.load(Ordering::SeqCst) || CTRL_C.load(Ordering::SeqCst);
        if s.group.is_distributed() {
            let mut any = [stop as u8 as f32];
            s.group.all_reduce_f32(&mut any, ReduceOp::Max)?;
            stop = any[0] > 0.0;
        }
        if !stop {
            return Ok(());
        }
        CTRL_C.store(false, Ordering::SeqCst);
        self.flag.store(false, Ordering::SeqCst);
        let path = if s.group.is_main() {
            s.checkpoints.save_named("interrupted", &s.checkpoint()?)?
        } else {
            s.checkpoints.named_path("interrupted")
        };
        s.group.barrier()?;
        s.interrupted = Some(path);
        Ok(())
    }
}
