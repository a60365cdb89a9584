//! What a process sets up before any work, as the commands do: the kernel thread pool and the
//! allocator's handling of freed memory. A program using the library calls both first.

use anyhow::{Context, Result};

/// Keeps freed memory in the process instead of returning it to the kernel after every op.
///
/// A forward pass allocates and frees tensors of tens of megabytes; glibc serves those with
/// `mmap` and unmaps them on free, so every op pays page faults and zeroing for fresh pages
/// (measured: the fused GELU at batch 8 took 32 ms instead of 15 ms). Serving every block from
/// the heap (glibc refuses an mmap threshold above 32 MiB, so mmap is switched off instead) and
/// never trimming it lets large blocks be reused, as PyTorch's caching allocator does.
///
/// All threads share one arena: inference (and the benchmark's training steps) run on the pool's
/// threads ([`nextdet_ops::on_pool`]), and with an arena per thread each kept its own freed
/// blocks (measured, the benchmark's ConvNeXt-T training step at batch 8: peak 1558 MiB against
/// 1178 MiB with one arena, and 3.9 against 4.6 images/s; Mask R-CNN's step 7.3 GiB against
/// 5.6 GiB). Tensors are allocated a few at a time, so the shared lock costs nothing measurable
/// (two thread ranks training the shapes Mask R-CNN ran at 5.2-5.6 images/s with it, 4.2-5.5
/// without).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called before any thread
    // starts and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The stack of the pool's threads: as a thread rank's (`nextdet_dist::run_ranks`).
const WORKER_STACK_BYTES: usize = 64 << 20;

/// Sizes rayon's global pool once, to [`thread_count`], and records the size in `RAYON_NUM_THREADS`: candle asks for the thread count on every matrix
/// multiply, and without the variable std re-reads the cgroup files each time.
pub fn configure_threads(requested: Option<usize>, local_size: usize) -> Result<()> {
    let n = thread_count(requested, local_size)?;
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    // candle 0.11 runs its broadcast elementwise ops on a second, spin-waiting thread pool of
    // its own. Our heavy ops and the matrix multiplies use rayon's pool; with both pools on a
    // few cores the spinning thread steals the cores rayon needs (measured: Mask R-CNN training
    // on the shapes set 0.65-0.88 img/s with it, 1.0-1.3 img/s without). Keep candle's pool
    // empty unless the user sized it.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    // The pool's threads run whole forward passes ([`nextdet_ops::on_pool`]), so they get the
    // stack of a thread rank (autograd walks a detector's graph recursively).
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .stack_size(WORKER_STACK_BYTES)
        .build_global()
        .with_context(|| format!("cannot set --threads {n}"))
}

/// The thread count asked for: `requested` (`--threads`, at least 1), else
/// `RAYON_NUM_THREADS`, else the cores divided among the machine's `local_size` ranks
/// ([`default_threads`]), else every core.
pub fn thread_count(requested: Option<usize>, local_size: usize) -> Result<usize> {
    if requested == Some(0) {
        anyhow::bail!("--threads must be at least 1");
    }
    let from_env = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
    Ok(match requested.or(from_env).or_else(|| default_threads(local_size)) {
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
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
