//! Starting a data-parallel run from the command line: `--launcher none|mpi` (mmdetection's
//! flag, or the ranks an `mpirun` / `srun` environment announces), the thread count of a rank,
//! and what a failing rank does to the others.

use nextdet_dist::{Collective, Launcher};

/// `--launcher`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LauncherArg {
    /// One process.
    None,
    /// One rank per process of an MPI job (`mpirun -np N nextdet ...`, `srun nextdet ...`).
    Mpi,
}

impl From<LauncherArg> for Launcher {
    fn from(l: LauncherArg) -> Self {
        match l {
            LauncherArg::None => Launcher::None,
            LauncherArg::Mpi => Launcher::Mpi,
        }
    }
}

/// The CPU threads of one rank when `--threads` is not given: the cores this process may run
/// on, divided among the ranks of its machine. A launcher that bound the rank to a subset of the
/// machine's cores (Open MPI binds each of up to two ranks to a core, Slurm to its
/// `--cpus-per-task`) has already divided them: then all of that subset.
pub fn default_threads(local_size: usize) -> Option<usize> {
    if local_size <= 1 {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if bound_to_subset() {
        return Some(cores);
    }
    Some((cores / local_size).max(1))
}

/// Whether the process's CPU affinity excludes some of the machine's online CPUs.
fn bound_to_subset() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_getaffinity fills a zeroed cpu_set_t of the size passed; CPU_COUNT reads it;
    // sysconf takes a constant.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return false;
        }
        let online = libc::sysconf(libc::_SC_NPROCESSORS_ONLN);
        online > 0 && (libc::CPU_COUNT(&set) as i64) < online as i64
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Ends the run after an error: in a data-parallel run the message names the rank and every
/// rank is stopped (MPI_Abort), so that none waits forever in a collective operation.
pub fn fail(group: &dyn Collective, message: &str, code: i32) -> ! {
    if group.is_distributed() {
        eprintln!("rank {}: error: {message}", group.rank());
        group.abort(code)
    }
    eprintln!("error: {message}");
    std::process::exit(code)
}

/// A panic in one rank also stops the others, naming the rank.
pub fn abort_on_panic(group: std::sync::Arc<dyn Collective>) {
    if !group.is_distributed() {
        return;
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprint!("rank {}: ", group.rank());
        default(info);
        group.abort(101);
    }));
}

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
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let Ok(spec) = std::env::var("NEXTDET_FAULT") else { return Ok(None) };
        let parts: Vec<&str> = spec.split(':').collect();
        let bad = || anyhow::anyhow!("NEXTDET_FAULT={spec}: expected RANK:ITER:error|kill");
        let [rank, iter, kind] = parts.as_slice() else { return Err(bad()) };
        let kill = match *kind {
            "kill" => true,
            "error" => false,
            _ => return Err(bad()),
        };
        Ok(Some(Self { rank: rank.parse().map_err(|_| bad())?, iter: iter.parse().map_err(|_| bad())?, kill }))
    }
}

impl nextdet_engine::trainer::Hook for FaultHook {
    fn before_step(
        &mut self,
        s: &mut nextdet_engine::trainer::TrainState,
    ) -> Result<(), nextdet_engine::trainer::TrainError> {
        if s.group.rank() != self.rank || s.run.global_iter + 1 != self.iter {
            return Ok(());
        }
        if self.kill {
            // SAFETY: raising a signal at the own process; SIGKILL ends it at once.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
        Err(nextdet_engine::trainer::TrainError::Config(format!(
            "injected fault (NEXTDET_FAULT) at iteration {}",
            self.iter
        )))
    }
}
