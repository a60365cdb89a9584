//! nextdet-dist: the collective operations data-parallel training needs, behind one trait.
//!
//! A [`Collective`] is a group of processes (ranks) that call the same operations in the same
//! order: all-reduce of flat `f32`/`f64` buffers, broadcast, all-gather of bytes, barrier
//! (torch's `torch.distributed` process group, mmcv's `get_dist_info`). Two implementations:
//!
//! - [`Local`], a world of one process, where every operation is the identity;
//! - `Mpi` (cargo feature `mpi`), one rank per process of an `mpirun` / `srun` job, through
//!   rsmpi (Open MPI or MPICH);
//! - [`ThreadGroup`], ranks as threads of one process ([`run_ranks`]), through shared memory.
//!
//! The process has one default group, [`world`], as torch has its default process group: the
//! launcher ([`init`]) sets it, and everything that synchronizes without being handed a group
//! (the heads' `SyncBN`, the trainer, distributed testing) uses it. Until [`init`] runs it is a
//! [`Local`] world. A thread may override it for itself ([`set_thread_world`]), as the ranks of
//! [`run_ranks`] do.

#![deny(missing_docs)]

mod error;
mod launcher;
mod local;
#[cfg(feature = "mpi")]
mod mpi_world;
mod threads;

pub use error::DistError;
pub use launcher::{detected_world_size, init, DistGuard, Launcher};
pub use local::Local;
#[cfg(feature = "mpi")]
pub use mpi_world::Mpi;
pub use threads::{run_ranks, ThreadGroup};

use std::cell::RefCell;
use std::sync::{Arc, RwLock};

/// How an all-reduce combines the ranks' buffers, element by element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// The sum over ranks.
    Sum,
    /// The sum divided by the world size (gradient averaging, as PyTorch's DDP).
    Mean,
    /// The maximum over ranks (a flag set on any rank).
    Max,
}

/// A group of ranks that call the same collective operations in the same order.
///
/// Every rank must make the same calls with buffers of the same length; a call that only some
/// ranks make blocks the others (or fails, for the MPI implementation, when a rank aborts).
pub trait Collective: Send + Sync {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// This process's rank among the ranks on its machine.
    fn local_rank(&self) -> usize;
    /// Number of ranks on this process's machine.
    fn local_size(&self) -> usize;
    /// Combines `buf` element-wise over all ranks, in place on every rank.
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<(), DistError>;
    /// Combines `buf` element-wise over all ranks, in place on every rank.
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<(), DistError>;
    /// Copies rank `root`'s `buf` into every rank's `buf` (all of the same length).
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<(), DistError>;
    /// Copies rank `root`'s bytes to every rank; the other ranks' `buf` is replaced, whatever
    /// its length.
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<(), DistError>;
    /// Every rank's bytes (of any length), in rank order, on every rank.
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, DistError>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<(), DistError>;
    /// Ends every rank of the job with exit status `code` (MPI_Abort); a world of one exits.
    fn abort(&self, code: i32) -> !;

    /// Whether there is more than one rank.
    fn is_distributed(&self) -> bool {
        self.world_size() > 1
    }
    /// Whether this is rank 0, the one that writes logs and checkpoints.
    fn is_main(&self) -> bool {
        self.rank() == 0
    }
}

static WORLD: RwLock<Option<Arc<dyn Collective>>> = RwLock::new(None);

thread_local! {
    static THREAD_WORLD: RefCell<Option<Arc<dyn Collective>>> = const { RefCell::new(None) };
}

/// The calling thread's default group: what [`set_thread_world`] installed on this thread, else
/// what [`init`] (or [`set_world`]) installed for the process, else a [`Local`] world of one.
pub fn world() -> Arc<dyn Collective> {
    if let Some(w) = THREAD_WORLD.with(|w| w.borrow().clone()) {
        return w;
    }
    let guard = WORLD.read().unwrap_or_else(|e| e.into_inner());
    match &*guard {
        Some(w) => w.clone(),
        None => Arc::new(Local),
    }
}

/// Installs `group` as the default group (`None` restores the world of one); returns the
/// previous one.
pub fn set_world(group: Option<Arc<dyn Collective>>) -> Option<Arc<dyn Collective>> {
    let mut guard = WORLD.write().unwrap_or_else(|e| e.into_inner());
    std::mem::replace(&mut *guard, group)
}

/// Installs `group` as the calling thread's default group, over the process's (`None` removes
/// the override); returns the previous override.
pub fn set_thread_world(group: Option<Arc<dyn Collective>>) -> Option<Arc<dyn Collective>> {
    THREAD_WORLD.with(|w| std::mem::replace(&mut *w.borrow_mut(), group))
}
