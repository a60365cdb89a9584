//! Ctrl-C and the interrupt flag: the run stops at the next step boundary (never between the
//! iterations of an accumulation group) and saves `interrupted.safetensors`, which `latest` then
//! points at, so `--resume` continues exactly. A second Ctrl-C exits at once without saving.

use super::Hook;
use crate::trainer::{TrainError, TrainState};
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
        if s.step.pending_grads || !(self.flag.load(Ordering::SeqCst) || CTRL_C.load(Ordering::SeqCst)) {
            return Ok(());
        }
        CTRL_C.store(false, Ordering::SeqCst);
        self.flag.store(false, Ordering::SeqCst);
        let path = s.checkpoints.save_named("interrupted", &s.checkpoint()?)?;
        s.interrupted = Some(path);
        Ok(())
    }
}
