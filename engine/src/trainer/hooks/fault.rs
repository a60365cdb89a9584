//! A fault on request, for the tests of data-parallel runs: a rank that fails or dies at a given
//! step, so that the tests can check that the other ranks stop instead of waiting.

use super::Hook;
use crate::trainer::{TrainError, TrainState};

/// A fault for the tests of data-parallel runs, from `NEXTDET_FAULT=RANK:ITER:KIND`: rank
/// `RANK` fails at its global iteration `ITER` (from 1), with an error (`error`) or by killing
/// itself with SIGKILL (`kill`). Not for use outside tests.
pub struct FaultHook {
    rank: usize,
    iter: u64,
    kill: bool,
}

impl FaultHook {
    /// The hook the environment asks for, if any.
    pub fn from_env() -> Result<Option<Self>, TrainError> {
        let Ok(spec) = std::env::var("NEXTDET_FAULT") else { return Ok(None) };
        let parts: Vec<&str> = spec.split(':').collect();
        let bad = || TrainError::Config(format!("NEXTDET_FAULT={spec}: expected RANK:ITER:error|kill"));
        let [rank, iter, kind] = parts.as_slice() else { return Err(bad()) };
        let kill = match *kind {
            "kill" => true,
            "error" => false,
            _ => return Err(bad()),
        };
        Ok(Some(Self { rank: rank.parse().map_err(|_| bad())?, iter: iter.parse().map_err(|_| bad())?, kill }))
    }
}

impl Hook for FaultHook {
    fn before_step(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        if s.group.rank() != self.rank || s.run.global_iter + 1 != self.iter {
            return Ok(());
        }
        if self.kill {
            // SAFETY: raising a signal at the own process; SIGKILL ends it at once.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
        Err(TrainError::Config(format!("injected fault (NEXTDET_FAULT) at iteration {}", self.iter)))
    }
}
