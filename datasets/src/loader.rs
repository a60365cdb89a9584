//! A multi-threaded, deterministic batch loader (mmdet's `GroupSampler` + PyTorch `DataLoader`).
//!
//! A [`Loader`] holds a per-sample function `load(index, rng)` (decode + transforms) and a
//! per-batch `collate`. [`Loader::epoch`] returns an iterator over the epoch's batches in order;
//! worker threads build whole batches (load every sample, then collate) at most
//! `prefetch_batches` ahead of the consumer.
//!
//! Determinism: the batch order depends only on `(seed, epoch)`, and every sample gets its own
//! [`StdRng`] seeded from `(seed, epoch, position in the epoch)`, so the output is the same
//! whatever the number of workers (and an index repeated by the group padding gets its own
//! augmentation).
//!
//! Sampling (`shuffle: true`, training): as mmdet's `GroupSampler`, the indices of each
//! aspect-ratio group are shuffled and padded with random repeats from the same group up to a
//! multiple of `batch_size`, then the batches are shuffled, so every batch holds one group and no
//! sample is dropped. Without shuffle (testing): indices in order, the last batch may be shorter.
//!
//! Sharding ([`Loader::with_shard`], one rank of a data-parallel run): training batches follow
//! mmdet's `DistributedGroupSampler` ([`crate::sampler::distributed_group_batches`]) and a
//! sample's slot is its position among all ranks' samples, so its augmentation does not depend
//! on which rank loads it; testing gives rank `r` the in-order batches `r, r + world, ...`, so
//! that every image is predicted in the same batch as in one process.
//!
//! Errors: the first failing sample (or collate) ends the epoch: the iterator yields the batches
//! before it, then that `Err` naming the sample index, then `None`. A panic in `load` or
//! `collate` is caught and reported the same way. Dropping the iterator mid-epoch stops and joins
//! the workers.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The per-sample function: loads and transforms sample `index` with its own random generator.
pub type LoadFn<T, E> = Arc<dyn Fn(usize, &mut StdRng) -> Result<T, E> + Send + Sync>;
/// The per-batch function: turns the loaded samples of one batch into the batch type.
pub type CollateFn<T, B, E> = Arc<dyn Fn(Vec<T>) -> Result<B, E> + Send + Sync>;

/// Loader settings (mmdet's `samples_per_gpu`, `workers_per_gpu`, plus the seed).
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch (at least 1).
    pub batch_size: usize,
    /// Worker threads; 0 loads on the consumer's thread.
    pub num_workers: usize,
    /// How many batches the workers may finish ahead of the consumer (at least 1).
    pub prefetch_batches: usize,
    /// Shuffle and group by aspect ratio (training) or keep the order (testing).
    pub shuffle: bool,
    /// Seed of the sampler and of every sample's generator.
    pub seed: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self { batch_size: 2, num_workers: 2, prefetch_batches: 2, shuffle: true, seed: 0 }
    }
}

/// Why a loader could not be built or a batch could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError<E> {
    /// The settings or the group flags are invalid.
    #[error("invalid loader setting: {0}")]
    InvalidConfig(String),
    /// `load` failed for a sample.
    #[error("sample {index}: {error}")]
    Sample {
        /// The dataset index of the sample.
        index: usize,
        /// The loader function's error.
        error: E,
    },
    /// `collate` failed for a batch.
    #[error("batch {batch} (samples {indices:?}): {error}")]
    Collate {
        /// Position of the batch in the epoch.
        batch: usize,
        /// The dataset indices in the batch.
        indices: Vec<usize>,
        /// The collate function's error.
        error: E,
    },
    /// `load` or `collate` panicked.
    #[error("panic while loading {what}: {message}")]
    Panic {
        /// `sample N` or `batch N`.
        what: String,
        /// The panic message.
        message: String,
    },
}

/// A deterministic multi-threaded batch loader over `len` samples producing batches of type `B`.
pub struct Loader<B, E> {
    len: usize,
    groups: Option<Vec<u8>>,
    shard: (usize, usize),
    config: LoaderConfig,
    make_batch: BatchFn<B, E>,
}

/// Loads the samples `(slot, index)` of batch `batch` and collates them; `stop` aborts early.
type BatchFn<B, E> = Arc<dyn Fn(usize, &[(usize, usize)], u64, u64, &AtomicBool) -> BatchResult<B, E> + Send + Sync>;
type BatchResult<B, E> = Result<B, LoaderError<E>>;

impl<B: Send + 'static, E: Send + 'static> Loader<B, E> {
    /// A loader over samples `0..len` that loads with `load` and builds each batch with
    /// `collate` on the worker thread. Errors if `batch_size` or `prefetch_batches` is 0.
    pub fn new<T: 'static>(
        len: usize,
        load: LoadFn<T, E>,
        collate: CollateFn<T, B, E>,
        config: LoaderConfig,
    ) -> Result<Self, LoaderError<E>> {
        if config.batch_size == 0 || config.prefetch_batches == 0 {
            return Err(LoaderError::InvalidConfig(format!(
                "batch_size and prefetch_batches must be positive, got {} and {}",
                config.batch_size, config.prefetch_batches
            )));
        }
        let make_batch: BatchFn<B, E> = Arc::new(move |batch, items, seed, epoch, stop| {
            let mut loaded = Vec::with_capacity(items.len());
            for &(slot, index) in items {
                if stop.load(Ordering::Relaxed) {
                    return Err(LoaderError::InvalidConfig("stopped".into()));
                }
                let mut rng = sample_rng(seed, epoch, slot);
                match catch_unwind(AssertUnwindSafe(|| load(index, &mut rng))) {
                    Ok(Ok(v)) => loaded.push(v),
                    Ok(Err(error)) => return Err(LoaderError::Sample { index, error }),
                    Err(p) => {
                        return Err(LoaderError::Panic { what: format!("sample {index}"), message: panic_text(&p) })
                    }
                }
            }
            let indices: Vec<usize> = items.iter().map(|&(_, i)| i).collect();
            match catch_unwind(AssertUnwindSafe(|| collate(loaded))) {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(error)) => Err(LoaderError::Collate { batch, indices, error }),
                Err(p) => Err(LoaderError::Panic { what: format!("batch {batch}"), message: panic_text(&p) }),
            }
        });
        Ok(Self { len, groups: None, shard: (0, 1), config, make_batch })
    }

    /// Makes this loader rank `rank`'s of `world` (see the module docs). Errors if `rank` is not
    /// below `world`.
    pub fn with_shard(mut self, rank: usize, world: usize) -> Result<Self, LoaderError<E>> {
        if rank >= world {
            return Err(LoaderError::InvalidConfig(format!("rank {rank} of a world of {world}")));
        }
        self.shard = (rank, world);
        Ok(self)
    }

    /// `(rank, world)` of a sharded loader, `(0, 1)` otherwise.
    pub fn shard(&self) -> (usize, usize) {
        self.shard
    }

    /// Groups samples by `flags[i]` (mmdet's aspect-ratio flag: 1 when width > height) so that
    /// every shuffled batch comes from one group. Errors if `flags.len()` differs from the
    /// number of samples.
    pub fn with_groups(mut self, flags: Vec<u8>) -> Result<Self, LoaderError<E>> {
        if flags.len() != self.len {
            return Err(LoaderError::InvalidConfig(format!("{} group flags for {} samples", flags.len(), self.len)));
        }
        self.groups = Some(flags);
        Ok(self)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The dataset indices of every batch of `epoch`, in order (the batch sampler).
    pub fn batch_indices(&self, epoch: u64) -> Vec<Vec<usize>> {
        self.batch_slots(epoch).into_iter().map(|b| b.into_iter().map(|(_, i)| i).collect()).collect()
    }

    /// This loader's batches of `epoch` as `(slot, dataset index)` pairs, the slot being the
    /// position in the epoch's order of all ranks (which seeds the sample's generator).
    fn batch_slots(&self, epoch: u64) -> Vec<Vec<(usize, usize)>> {
        let bs = self.config.batch_size;
        let (rank, world) = self.shard;
        if !self.config.shuffle {
            let all: Vec<usize> = (0..self.len).collect();
            return all
                .chunks(bs)
                .enumerate()
                .filter(|(k, _)| k % world == rank)
                .map(|(k, c)| c.iter().enumerate().map(|(j, &i)| (k * bs + j, i)).collect())
                .collect();
        }
        let mut rng = StdRng::seed_from_u64(mix(self.config.seed, epoch, u64::MAX));
        if world > 1 {
            let flags = self.groups.clone().unwrap_or_else(|| vec![0; self.len]);
            return crate::sampler::distributed_group_batches(&flags, bs, rank, world, &mut rng);
        }
        let mut slot = 0;
        self.group_batches(&mut rng)
            .into_iter()
            .map(|b| {
                b.into_iter()
                    .map(|i| {
                        slot += 1;
                        (slot - 1, i)
                    })
                    .collect()
            })
            .collect()
    }

    /// mmdet's `GroupSampler` (one process): see the module docs.
    fn group_batches(&self, rng: &mut StdRng) -> Vec<Vec<usize>> {
        let bs = self.config.batch_size;
        let mut by_group: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for i in 0..self.len {
            let g = self.groups.as_ref().map_or(0, |f| f[i]);
            by_group.entry(g).or_default().push(i);
        }
        let mut padded = Vec::new();
        for (_, mut idx) in by_group {
            idx.shuffle(rng);
            let extra = idx.len().div_ceil(bs) * bs - idx.len();
            for _ in 0..extra {
                let pick = idx[rng.gen_range(0..idx.len())];
                idx.push(pick);
            }
            padded.extend(idx);
        }
        let mut batches: Vec<Vec<usize>> = padded.chunks(bs).map(|c| c.to_vec()).collect();
        batches.shuffle(rng);
        batches
    }

    /// Iterates over the batches of `epoch` (see the module docs for order, determinism and
    /// errors).
    pub fn epoch(&self, epoch: u64) -> EpochIter<B, E> {
        EpochIter::start(self.batch_slots(epoch), Arc::clone(&self.make_batch), &self.config, epoch)
    }
}

impl<T: Send + 'static, E: Send + 'static> Loader<Vec<T>, E> {
    /// A loader whose batches are the loaded samples themselves (the caller collates).
    pub fn uncollated(len: usize, load: LoadFn<T, E>, config: LoaderConfig) -> Result<Self, LoaderError<E>> {
        Self::new(len, load, Arc::new(Ok), config)
    }
}

/// State shared between an [`EpochIter`] and its workers.
struct Shared {
    /// Next batch a worker may take.
    next: AtomicUsize,
    /// Batches handed to the consumer so far; workers wait while `next >= consumed + prefetch`.
    consumed: Mutex<usize>,
    wake: Condvar,
    stop: AtomicBool,
}

/// The batches of one epoch, in order; see [`Loader::epoch`].
pub struct EpochIter<B, E> {
    jobs: Arc<Vec<Vec<(usize, usize)>>>,
    make_batch: BatchFn<B, E>,
    seed: u64,
    epoch: u64,
    shared: Arc<Shared>,
    rx: Option<Receiver<(usize, BatchResult<B, E>)>>,
    workers: Vec<JoinHandle<()>>,
    pending: BTreeMap<usize, BatchResult<B, E>>,
    position: usize,
    done: bool,
}

impl<B: Send + 'static, E: Send + 'static> EpochIter<B, E> {
    fn start(jobs: Vec<Vec<(usize, usize)>>, make_batch: BatchFn<B, E>, cfg: &LoaderConfig, epoch: u64) -> Self {
        let jobs = Arc::new(jobs);
        let shared = Arc::new(Shared {
            next: AtomicUsize::new(0),
            consumed: Mutex::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        let mut rx = None;
        if cfg.num_workers > 0 {
            let (tx, r) = channel();
            rx = Some(r);
            for _ in 0..cfg.num_workers {
                let (jobs, shared, make_batch, tx) =
                    (Arc::clone(&jobs), Arc::clone(&shared), Arc::clone(&make_batch), tx.clone());
                let (seed, prefetch) = (cfg.seed, cfg.prefetch_batches);
                workers.push(std::thread::spawn(move || loop {
                    let b = shared.next.fetch_add(1, Ordering::SeqCst);
                    if b >= jobs.len() {
                        return;
                    }
                    {
                        let mut consumed = shared.consumed.lock().unwrap_or_else(|e| e.into_inner());
                        while b >= *consumed + prefetch && !shared.stop.load(Ordering::SeqCst) {
                            consumed = shared.wake.wait(consumed).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let result = make_batch(b, &jobs[b], seed, epoch, &shared.stop);
                    if tx.send((b, result)).is_err() {
                        return;
                    }
                }));
            }
        }
        Self {
            jobs,
            make_batch,
            seed: cfg.seed,
            epoch,
            shared,
            rx,
            workers,
            pending: BTreeMap::new(),
            position: 0,
            done: false,
        }
    }

    /// Number of batches in the epoch.
    pub fn num_batches(&self) -> usize {
        self.jobs.len()
    }

    fn finish(&mut self) {
        self.done = true;
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.consumed.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        self.rx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.pending.clear();
    }
}

impl<B: Send + 'static, E: Send + 'static> Iterator for EpochIter<B, E> {
    type Item = Result<B, LoaderError<E>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.position >= self.jobs.len() {
            if !self.done {
                self.finish();
            }
            return None;
        }
        let b = self.position;
        let result = match &self.rx {
            None => (self.make_batch)(b, &self.jobs[b], self.seed, self.epoch, &self.shared.stop),
            Some(rx) => loop {
                if let Some(r) = self.pending.remove(&b) {
                    break r;
                }
                match rx.recv() {
                    Ok((i, r)) => {
                        self.pending.insert(i, r);
                    }
                    Err(_) => {
                        break Err(LoaderError::Panic {
                            what: format!("batch {b}"),
                            message: "all worker threads exited".into(),
                        })
                    }
                }
            },
        };
        self.position += 1;
        {
            let mut consumed = self.shared.consumed.lock().unwrap_or_else(|e| e.into_inner());
            *consumed = self.position;
            self.shared.wake.notify_all();
        }
        if result.is_err() {
            self.finish();
        }
        Some(result)
    }
}

impl<B, E> Drop for EpochIter<B, E> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.consumed.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        self.rx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// SplitMix64 finalizer over the three inputs.
fn mix(seed: u64, epoch: u64, slot: u64) -> u64 {
    let mut z = seed ^ 0x9E37_79B9_7F4A_7C15;
    for v in [epoch, slot] {
        z = z.wrapping_add(v.wrapping_mul(0xBF58_476D_1CE4_E5B9)).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// The generator of the sample at `slot` (its position in the epoch's order) of `epoch`.
pub fn sample_rng(seed: u64, epoch: u64, slot: usize) -> StdRng {
    StdRng::seed_from_u64(mix(seed, epoch, slot as u64))
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}
