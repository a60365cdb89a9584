//! Which samples each rank of a data-parallel run sees in an epoch.
//!
//! - [`distributed_group_batches`]: mmdetection's `DistributedGroupSampler`
//!   (`mmdet/datasets/samplers/group_sampler.py`), for detection: every aspect-ratio group is
//!   shuffled and padded, by repeating its own shuffled indices from the start, to a multiple of
//!   `batch_size * world`; the batches of all groups are shuffled together; rank `r` takes the
//!   `r`-th contiguous run of `1 / world` of them. Every rank draws the same shuffle (the
//!   generator depends on the epoch only), so the shards are disjoint apart from the padding.
//! - [`distributed_shard`]: torch's `DistributedSampler` (as timm and ConvNeXt's `main.py` use
//!   it), for classification: the epoch's order padded by repeating its head to a multiple of
//!   `world`, then every `world`-th index from position `rank`.
//!
//! The shuffles draw from a seeded [`StdRng`], not torch's generator: the rules are mmdet's and
//! torch's, the random draws are ours.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

/// This rank's batches of one epoch, each as `(slot, dataset index)` pairs, where `slot` is the
/// position in the epoch's order of all ranks together (which seeds the sample's augmentation,
/// so that it does not depend on the rank). `flags[i]` is sample `i`'s group (all 0 without
/// groups); `rng` is the epoch's generator, the same on every rank.
pub fn distributed_group_batches(
    flags: &[u8],
    batch_size: usize,
    rank: usize,
    world: usize,
    rng: &mut StdRng,
) -> Vec<Vec<(usize, usize)>> {
    let (bs, world) = (batch_size.max(1), world.max(1));
    let mut by_group: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
    for (i, &g) in flags.iter().enumerate() {
        by_group.entry(g).or_default().push(i);
    }
    let mut padded = Vec::new();
    for (_, mut idx) in by_group {
        idx.shuffle(rng);
        let target = idx.len().div_ceil(bs * world) * bs * world;
        let shuffled = idx.clone();
        idx.extend(shuffled.iter().cycle().take(target - shuffled.len()));
        padded.extend(idx);
    }
    let mut batches: Vec<usize> = (0..padded.len() / bs).collect();
    batches.shuffle(rng);
    let per_rank = batches.len() / world;
    batches[rank * per_rank..(rank + 1) * per_rank]
        .iter()
        .enumerate()
        .map(|(k, &b)| {
            let first_slot = (rank * per_rank + k) * bs;
            (0..bs).map(|j| (first_slot + j, padded[b * bs + j])).collect()
        })
        .collect()
}

/// Rank `rank`'s share of an epoch's `order` (torch's `DistributedSampler` with
/// `drop_last=False`): padded with its own head to a multiple of `world`, then every
/// `world`-th element from position `rank`. With one rank, `order` itself.
pub fn distributed_shard(order: &[usize], rank: usize, world: usize) -> Vec<usize> {
    let world = world.max(1);
    if world == 1 || order.is_empty() {
        return order.to_vec();
    }
    let total = order.len().div_ceil(world) * world;
    (rank..total).step_by(world).map(|i| order[i % order.len()]).collect()
}
