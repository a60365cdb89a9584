//! Starting a data-parallel run from the command line: `--launcher none|mpi` (mmdetection's
//! flag, or the ranks an `mpirun` / `srun` environment announces) or `threads` (ranks as
//! threads of this process), and what a failing rank does to the others.

use nextdet_dist::{Collective, DistError, Launcher};
use std::sync::Arc;

/// `--launcher`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LauncherArg {
    /// One process.
    None,
    /// One rank per process of an MPI job (`mpirun -np N nextdet ...`, `srun nextdet ...`).
    Mpi,
    /// One rank per thread of `--threads` (default: every core), in this process.
    Threads,
}

impl From<LauncherArg> for Launcher {
    fn from(l: LauncherArg) -> Self {
        match l {
            // the ranks of `threads` live in this one process
            LauncherArg::None | LauncherArg::Threads => Launcher::None,
            LauncherArg::Mpi => Launcher::Mpi,
        }
    }
}

/// `--launcher threads`: runs `work` on one rank per thread (`--threads`, `RAYON_NUM_THREADS`,
/// else every core), each with a kernel pool of one thread; returns the exit status: rank 0's,
/// or 1 after printing the error of the rank that failed first (the others then fail only
/// because it did).
pub fn in_threads(requested: Option<usize>, work: impl Fn(Arc<dyn Collective>) -> anyhow::Result<i32> + Sync) -> i32 {
    let started = nextdet_apis::runtime::thread_count(requested, 1).and_then(|ranks| {
        let guard = nextdet_dist::init(Some(Launcher::None))?;
        nextdet_apis::runtime::configure_threads(Some(1), 1)?;
        Ok((ranks, guard))
    });
    let (ranks, _guard) = match started {
        Ok(started) => started,
        Err(e) => {
            eprintln!("error: {}", crate::error_report(&e));
            return 2;
        }
    };
    let results = match nextdet_dist::run_ranks(ranks, 1, work) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let consequence =
        |e: &anyhow::Error| e.chain().any(|c| matches!(c.downcast_ref(), Some(DistError::RankFailed { .. })));
    let failed: Vec<(usize, &anyhow::Error)> =
        results.iter().enumerate().filter_map(|(r, res)| res.as_ref().err().map(|e| (r, e))).collect();
    match failed.iter().find(|(_, e)| !consequence(e)).or(failed.first()) {
        Some((rank, e)) => {
            let rank = if ranks > 1 { format!("rank {rank}: ") } else { String::new() };
            eprintln!("{rank}error: {}", crate::error_report(e));
            1
        }
        None => *results[0].as_ref().unwrap_or(&1),
    }
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
