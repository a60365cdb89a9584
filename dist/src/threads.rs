//! Ranks as threads of one process: data-parallel training without MPI.
//!
//! One training process keeps a machine's cores busy only in its parallel kernels; the serial
//! parts of a step (autograd's bookkeeping and gradient sums, the samplers, the optimizer's
//! host loops) run on one thread while the others wait. Ranks as threads run those serial parts
//! side by side, as ranks as processes do, without an MPI installation.
//!
//! [`run_ranks`] starts one thread per rank, each running its work inside a rayon pool of its
//! own (so the kernels of one rank do not queue behind another's) with its [`ThreadGroup`]
//! installed as that thread's [`crate::world`]. A collective operation is an exchange through
//! shared memory; reductions add the ranks' buffers in rank order, so results do not depend on
//! which thread arrives first. A rank that returns an error or panics fails the group: the
//! others' current and later collective calls return [`DistError::RankFailed`] instead of
//! waiting forever.

use crate::{Collective, DistError, ReduceOp};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The stack of a rank's threads: autograd walks the graph of a detector's step recursively,
/// deeper than the 2 MiB of a spawned thread allows (the main thread has 8 MiB).
const RANK_STACK_BYTES: usize = 64 << 20;

/// What one rank contributes to an exchange.
enum Payload {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<u8>),
    Nothing,
}

/// The exchange state the ranks share.
struct State {
    /// This round's contributions, by rank.
    slots: Vec<Option<Payload>>,
    /// How many ranks have contributed to this round.
    arrived: usize,
    /// Rounds completed so far.
    round: u64,
    /// The last completed round's contributions, by rank.
    published: Arc<Vec<Payload>>,
    /// The first rank that failed, and why.
    failed: Option<(usize, String)>,
}

struct Shared {
    size: usize,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One rank of a group of threads in this process (see the module docs).
#[derive(Clone)]
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// The `size` ranks of a new group, in rank order. Each must be used by its own thread.
    pub fn new(size: usize) -> Vec<ThreadGroup> {
        let size = size.max(1);
        let state = State {
            slots: (0..size).map(|_| None).collect(),
            arrived: 0,
            round: 0,
            published: Arc::new(Vec::new()),
            failed: None,
        };
        let shared = Arc::new(Shared { size, state: Mutex::new(state), changed: Condvar::new() });
        (0..size).map(|rank| ThreadGroup { rank, shared: shared.clone() }).collect()
    }

    /// Marks the group failed by this rank (the first failure is kept) and wakes the ranks
    /// waiting in a collective call, which then return [`DistError::RankFailed`].
    pub fn fail(&self, why: &str) {
        let mut s = self.shared.lock();
        if s.failed.is_none() {
            s.failed = Some((self.rank, why.to_string()));
        }
        self.shared.changed.notify_all();
    }

    /// Contributes `mine` to the current round and returns every rank's contribution once all
    /// have arrived.
    fn exchange(&self, op: &'static str, mine: Payload) -> Result<Arc<Vec<Payload>>, DistError> {
        let mut s = self.shared.lock();
        let failed = |s: &State| {
            s.failed.as_ref().map(|(rank, why)| DistError::RankFailed { op, rank: *rank, why: why.clone() })
        };
        if let Some(e) = failed(&s) {
            return Err(e);
        }
        s.slots[self.rank] = Some(mine);
        s.arrived += 1;
        let round = s.round;
        if s.arrived == self.shared.size {
            let all: Vec<Payload> = s.slots.iter_mut().map(|p| p.take().unwrap_or(Payload::Nothing)).collect();
            s.published = Arc::new(all);
            s.arrived = 0;
            s.round += 1;
            self.shared.changed.notify_all();
        } else {
            while s.round == round {
                if let Some(e) = failed(&s) {
                    return Err(e);
                }
                s = self.shared.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        }
        Ok(s.published.clone())
    }
}

fn mismatch(op: &'static str, rank: usize) -> DistError {
    DistError::Invalid { op, msg: format!("rank {rank} made a different call (the ranks' calls must match)") }
}

/// Combines every rank's buffer of the kind `get` reads into `buf`, adding in rank order; an
/// error when a rank sent another kind or another length.
fn reduce<T>(
    op: &'static str,
    all: &[Payload],
    buf: &mut [T],
    how: ReduceOp,
    get: impl Fn(&Payload) -> Option<&Vec<T>>,
) -> Result<(), DistError>
where
    T: Copy + PartialOrd + std::ops::Add<Output = T> + std::ops::Div<Output = T> + From<u16>,
{
    let mut parts: Vec<&Vec<T>> = Vec::with_capacity(all.len());
    for (rank, p) in all.iter().enumerate() {
        let v = get(p).ok_or_else(|| mismatch(op, rank))?;
        if v.len() != buf.len() {
            let msg = format!("rank {rank} sent {} elements, this rank {}", v.len(), buf.len());
            return Err(DistError::Invalid { op, msg });
        }
        parts.push(v);
    }
    for (i, out) in buf.iter_mut().enumerate() {
        let mut acc = parts[0][i];
        for p in &parts[1..] {
            acc = match how {
                ReduceOp::Sum | ReduceOp::Mean => acc + p[i],
                ReduceOp::Max => {
                    if p[i] > acc {
                        p[i]
                    } else {
                        acc
                    }
                }
            };
        }
        if how == ReduceOp::Mean {
            acc = acc / T::from(parts.len().min(u16::MAX as usize) as u16);
        }
        *out = acc;
    }
    Ok(())
}

fn as_f32(p: &Payload) -> Option<&Vec<f32>> {
    match p {
        Payload::F32(v) => Some(v),
        _ => None,
    }
}

fn as_f64(p: &Payload) -> Option<&Vec<f64>> {
    match p {
        Payload::F64(v) => Some(v),
        _ => None,
    }
}

fn as_bytes(p: &Payload) -> Option<&Vec<u8>> {
    match p {
        Payload::Bytes(v) => Some(v),
        _ => None,
    }
}

impl ThreadGroup {
    fn root_payload<'a>(&self, op: &'static str, all: &'a [Payload], root: usize) -> Result<&'a Payload, DistError> {
        all.get(root)
            .ok_or_else(|| DistError::Invalid { op, msg: format!("root {root} in a world of {}", self.shared.size) })
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.shared.size
    }
    fn local_rank(&self) -> usize {
        self.rank
    }
    fn local_size(&self) -> usize {
        self.shared.size
    }
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<(), DistError> {
        let all = self.exchange("all_reduce", Payload::F32(buf.to_vec()))?;
        reduce("all_reduce", &all, buf, op, as_f32)
    }
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<(), DistError> {
        let all = self.exchange("all_reduce", Payload::F64(buf.to_vec()))?;
        reduce("all_reduce", &all, buf, op, as_f64)
    }
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<(), DistError> {
        let mine = if self.rank == root { Payload::F32(buf.to_vec()) } else { Payload::Nothing };
        let all = self.exchange("broadcast", mine)?;
        let v = as_f32(self.root_payload("broadcast", &all, root)?).ok_or_else(|| mismatch("broadcast", root))?;
        if v.len() != buf.len() {
            return Err(DistError::Invalid {
                op: "broadcast",
                msg: format!("root {root} sent {} elements, this rank expects {}", v.len(), buf.len()),
            });
        }
        buf.copy_from_slice(v);
        Ok(())
    }
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<(), DistError> {
        let mine = if self.rank == root { Payload::Bytes(buf.clone()) } else { Payload::Nothing };
        let all = self.exchange("broadcast", mine)?;
        let v = as_bytes(self.root_payload("broadcast", &all, root)?).ok_or_else(|| mismatch("broadcast", root))?;
        if self.rank != root {
            *buf = v.clone();
        }
        Ok(())
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        let all = self.exchange("all_gather", Payload::Bytes(mine.to_vec()))?;
        all.iter().enumerate().map(|(r, p)| as_bytes(p).cloned().ok_or_else(|| mismatch("all_gather", r))).collect()
    }
    fn barrier(&self) -> Result<(), DistError> {
        let all = self.exchange("barrier", Payload::Nothing)?;
        match all.iter().position(|p| !matches!(p, Payload::Nothing)) {
            Some(r) => Err(mismatch("barrier", r)),
            None => Ok(()),
        }
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Runs `work` on `ranks` threads of this process, each with `threads_per_rank` kernel threads
/// and its own [`ThreadGroup`] as [`crate::world`]; returns each rank's result, in rank order.
///
/// A rank whose `work` returns an error fails the group (see the module docs), so the others
/// end with [`DistError::RankFailed`] (wrapped in their error type) rather than waiting; a
/// panic in a rank fails the group too and is resumed here once every rank has ended.
pub fn run_ranks<T, E, F>(ranks: usize, threads_per_rank: usize, work: F) -> Result<Vec<Result<T, E>>, DistError>
where
    T: Send,
    E: Send + std::fmt::Display,
    F: Fn(Arc<dyn Collective>) -> Result<T, E> + Sync,
{
    let groups = ThreadGroup::new(ranks);
    let mut pools = Vec::with_capacity(groups.len());
    for g in &groups {
        let mine: Arc<dyn Collective> = Arc::new(g.clone());
        let rank = g.rank;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads_per_rank.max(1))
            .stack_size(RANK_STACK_BYTES)
            .thread_name(move |i| format!("rank{rank}-{i}"))
            .start_handler(move |_| {
                crate::set_thread_world(Some(mine.clone()));
            })
            .build()
            .map_err(|e| DistError::Launch(format!("cannot start the threads of rank {rank}: {e}")))?;
        pools.push(pool);
    }
    let work = &work;
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .iter()
            .zip(&pools)
            .map(|(g, pool)| {
                scope.spawn(move || {
                    pool.install(|| {
                        let failer = FailOnPanic(g);
                        let out = work(crate::world());
                        if let Err(e) = &out {
                            g.fail(&e.to_string());
                        }
                        std::mem::forget(failer);
                        out
                    })
                })
            })
            .collect();
        let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        joined
    });
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(v) => out.push(v),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    Ok(out)
}

/// Fails its group when dropped during a panic (it is forgotten on a normal return).
struct FailOnPanic<'a>(&'a ThreadGroup);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        self.0.fail("it panicked");
    }
}
