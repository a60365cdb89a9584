//! The MPI process group, through rsmpi (Open MPI or MPICH).
//!
//! MPI is started with `MPI_THREAD_SERIALIZED` and every call goes through one mutex, so any
//! thread may make the calls (the trainer makes them from the thread that runs the loop, the
//! batch norm's backward from the thread that runs `backward`). rsmpi does not wrap
//! `MPI_IN_PLACE` (and its value differs between Open MPI and MPICH, so it cannot be spelled
//! here), so an all-reduce copies its buffer once into a send buffer kept between calls.
//! Element counts are MPI `int`s: longer buffers go in chunks.

use crate::{Collective, DistError, ReduceOp};
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::ffi;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The largest element count one MPI call gets (MPI counts are `int`).
const MAX_COUNT: usize = 1 << 30;

/// Set once `MPI_Finalize` has run: later calls fail instead of touching a finalized library.
static FINALIZED: AtomicBool = AtomicBool::new(false);

/// The MPI environment: `MPI_Finalize` runs when it is dropped.
pub(crate) struct MpiEnv {
    universe: Option<mpi::environment::Universe>,
}

impl MpiEnv {
    /// `MPI_Init_thread` and the world group.
    pub(crate) fn start() -> Result<(Self, Mpi), DistError> {
        let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized) else {
            return Err(DistError::Launch("MPI was already initialized in this process".into()));
        };
        if threading < Threading::Serialized {
            return Err(DistError::Launch(format!(
                "the MPI library offers thread support {threading:?}; nextdet needs Serialized"
            )));
        }
        FINALIZED.store(false, Ordering::SeqCst);
        let world = universe.world();
        let local = world.split_shared(world.rank());
        let group = Mpi {
            rank: world.rank() as usize,
            size: world.size() as usize,
            local_rank: local.rank() as usize,
            local_size: local.size() as usize,
            comm: Mutex::new(Comm { world, send_f32: Vec::new(), send_f64: Vec::new() }),
        };
        Ok((Self { universe: Some(universe) }, group))
    }
}

impl Drop for MpiEnv {
    fn drop(&mut self) {
        FINALIZED.store(true, Ordering::SeqCst);
        drop(self.universe.take());
    }
}

/// The world communicator and the all-reduce send buffers.
struct Comm {
    world: SimpleCommunicator,
    send_f32: Vec<f32>,
    send_f64: Vec<f64>,
}

// SAFETY: MPI was initialized with MPI_THREAD_SERIALIZED, which allows calls from any thread as
// long as no two run at once; every use of the communicator holds the `Mpi::comm` mutex.
unsafe impl Send for Comm {}

/// One rank of an MPI job (see the module docs).
pub struct Mpi {
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    comm: Mutex<Comm>,
}

impl Mpi {
    /// Runs `f` on the communicator, serialized with every other call.
    fn with<T>(&self, op: &'static str, f: impl FnOnce(&mut Comm) -> T) -> Result<T, DistError> {
        if FINALIZED.load(Ordering::SeqCst) {
            return Err(DistError::Finalized(op));
        }
        let mut comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&mut comm))
    }

    fn check_root(&self, op: &'static str, root: usize) -> Result<(), DistError> {
        if root >= self.size {
            return Err(DistError::Invalid { op, msg: format!("root {root} in a world of {}", self.size) });
        }
        Ok(())
    }
}

/// Divides a flat buffer of `len` elements into chunks of at most `max` (MPI counts are `int`).
fn chunks_of(len: usize, max: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let max = max.max(1);
    (0..len.div_ceil(max)).map(move |i| i * max..((i + 1) * max).min(len))
}

/// `MPI_Allreduce` of `buf` through the send buffer `send`, in chunks.
fn all_reduce<T: Equivalence + Copy>(world: &SimpleCommunicator, send: &mut Vec<T>, buf: &mut [T], op: ReduceOp) {
    let op = match op {
        ReduceOp::Sum | ReduceOp::Mean => SystemOperation::sum(),
        ReduceOp::Max => SystemOperation::max(),
    };
    for r in chunks_of(buf.len(), MAX_COUNT) {
        send.clear();
        send.extend_from_slice(&buf[r.clone()]);
        world.all_reduce_into(&send[..], &mut buf[r], op);
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn local_size(&self) -> usize {
        self.local_size
    }

    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<(), DistError> {
        self.with("all_reduce", |c| all_reduce(&c.world, &mut c.send_f32, buf, op))?;
        if op == ReduceOp::Mean {
            let k = 1.0 / self.size as f32;
            buf.iter_mut().for_each(|v| *v *= k);
        }
        Ok(())
    }

    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<(), DistError> {
        self.with("all_reduce", |c| all_reduce(&c.world, &mut c.send_f64, buf, op))?;
        if op == ReduceOp::Mean {
            let k = self.size as f64;
            buf.iter_mut().for_each(|v| *v /= k);
        }
        Ok(())
    }

    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<(), DistError> {
        self.check_root("broadcast", root)?;
        self.with("broadcast", |c| {
            let root = c.world.process_at_rank(root as i32);
            for r in chunks_of(buf.len(), MAX_COUNT) {
                root.broadcast_into(&mut buf[r]);
            }
        })
    }

    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<(), DistError> {
        self.check_root("broadcast", root)?;
        self.with("broadcast", |c| {
            let root_process = c.world.process_at_rank(root as i32);
            let mut len = buf.len() as u64;
            root_process.broadcast_into(&mut len);
            if self.rank != root {
                buf.clear();
                buf.resize(len as usize, 0);
            }
            for r in chunks_of(buf.len(), MAX_COUNT) {
                root_process.broadcast_into(&mut buf[r]);
            }
        })
    }

    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        self.with("all_gather", |c| {
            let comm = &c.world;
            let mut lens = vec![0u64; self.size];
            comm.all_gather_into(&(mine.len() as u64), &mut lens[..]);
            // each rank's bytes in turn, broadcast from its owner: no 2^31 limit on the total
            let mut out = Vec::with_capacity(self.size);
            for (r, &len) in lens.iter().enumerate() {
                let mut buf = if r == self.rank { mine.to_vec() } else { vec![0u8; len as usize] };
                let owner = comm.process_at_rank(r as i32);
                for c in chunks_of(buf.len(), MAX_COUNT) {
                    owner.broadcast_into(&mut buf[c]);
                }
                out.push(buf);
            }
            out
        })
    }

    fn barrier(&self) -> Result<(), DistError> {
        self.with("barrier", |c| c.world.barrier())
    }

    fn abort(&self, code: i32) -> ! {
        if FINALIZED.load(Ordering::SeqCst) {
            std::process::exit(code);
        }
        // no lock: another thread may hold it inside a collective that will never return
        // SAFETY: MPI_Abort on MPI_COMM_WORLD is valid from any thread of an initialized
        // process; it does not return.
        unsafe {
            ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code);
        }
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::chunks_of;

    #[test]
    fn chunks_cover_the_buffer_in_order() {
        assert_eq!(chunks_of(7, 3).collect::<Vec<_>>(), vec![0..3, 3..6, 6..7]);
        assert_eq!(chunks_of(6, 3).collect::<Vec<_>>(), vec![0..3, 3..6]);
        assert_eq!(chunks_of(0, 3).count(), 0);
        assert_eq!(chunks_of(2, 0).collect::<Vec<_>>(), vec![0..1, 1..2]);
    }
}
