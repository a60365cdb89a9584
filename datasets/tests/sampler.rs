//! The data-parallel samplers: mmdetection's `DistributedGroupSampler` through a sharded
//! loader, and torch's `DistributedSampler` for classification.

use std::collections::HashMap;
use std::sync::Arc;

use nextdet_datasets::loader::{Loader, LoaderConfig};
use nextdet_datasets::sampler::distributed_shard;
use rand::Rng;

/// Each sample is `(index, a draw from its generator)`.
fn loader(len: usize, bs: usize, shuffle: bool) -> Loader<Vec<(usize, u64)>, String> {
    let cfg = LoaderConfig { batch_size: bs, num_workers: 1, prefetch_batches: 2, shuffle, seed: 11 };
    Loader::uncollated(len, Arc::new(|i, rng| Ok((i, rng.gen::<u64>()))), cfg).unwrap()
}

fn flags() -> Vec<u8> {
    (0..23).map(|i| u8::from(i % 3 == 0)).collect()
}

#[test]
fn distributed_group_sampler_pads_each_group_and_deals_disjoint_shards() {
    let flags = flags();
    let world = 3;
    let shards: Vec<Vec<Vec<usize>>> = (0..world)
        .map(|r| loader(23, 2, true).with_groups(flags.clone()).unwrap().with_shard(r, world).unwrap().batch_indices(5))
        .collect();
    // group 1 has 8 samples -> padded to 12, group 0 has 15 -> padded to 18: 15 batches, 5 per rank
    let mut count: HashMap<usize, usize> = HashMap::new();
    for shard in &shards {
        assert_eq!(shard.len(), 5);
        for b in shard {
            assert_eq!(b.len(), 2);
            assert_eq!(flags[b[0]], flags[b[1]], "mixed batch {b:?}");
            for &i in b {
                *count.entry(i).or_default() += 1;
            }
        }
    }
    assert_eq!(count.len(), 23, "every sample on some rank");
    // the padding repeats a group's own shuffled head: 4 extra in group 1, 3 in group 0
    assert_eq!(count.values().sum::<usize>(), 30);
    assert!(count.values().all(|&c| c <= 2), "{count:?}");
    // every rank draws the same shuffle: a rank's shard does not depend on who asks
    let again = loader(23, 2, true).with_groups(flags.clone()).unwrap().with_shard(1, world).unwrap();
    assert_eq!(again.batch_indices(5), shards[1]);
    assert_ne!(again.batch_indices(6), shards[1], "epochs differ");
}

#[test]
fn a_samples_augmentation_does_not_depend_on_its_rank() {
    // a sample's generator is seeded by its position among all ranks' samples, not in its own
    // rank's list: no two ranks' samples share a generator
    let flags = flags();
    let draws = |rank: usize| -> Vec<(usize, u64)> {
        let l = loader(23, 2, true).with_groups(flags.clone()).unwrap().with_shard(rank, 2).unwrap();
        l.epoch(0).flat_map(|b| b.unwrap()).collect()
    };
    let (a, b) = (draws(0), draws(1));
    let again = draws(1);
    assert_eq!(b, again, "deterministic");
    let mut all: Vec<u64> = a.iter().chain(&b).map(|&(_, d)| d).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), a.len() + b.len(), "every slot gets its own generator");
}

#[test]
fn sharded_testing_deals_whole_batches_in_turn() {
    let l = loader(7, 2, false).with_shard(1, 2).unwrap();
    assert_eq!(l.batch_indices(0), vec![vec![2, 3], vec![6]]);
    let l = loader(7, 2, false).with_shard(0, 2).unwrap();
    assert_eq!(l.batch_indices(0), vec![vec![0, 1], vec![4, 5]]);
    assert!(loader(7, 2, false).with_shard(2, 2).is_err(), "rank 2 of a world of 2");
}

#[test]
fn torch_distributed_sampler_pads_with_the_head_and_strides() {
    let order: Vec<usize> = (0..10).rev().collect();
    assert_eq!(distributed_shard(&order, 0, 3), vec![9, 6, 3, 0]);
    assert_eq!(distributed_shard(&order, 1, 3), vec![8, 5, 2, 9]);
    assert_eq!(distributed_shard(&order, 2, 3), vec![7, 4, 1, 8]);
    assert_eq!(distributed_shard(&order, 0, 1), order);
    // two ranks' batches of 8 interleave into one process's batch of 16
    let order: Vec<usize> = (0..32).collect();
    let (r0, r1) = (distributed_shard(&order, 0, 2), distributed_shard(&order, 1, 2));
    let mut first: Vec<usize> = r0[..8].iter().chain(&r1[..8]).copied().collect();
    first.sort();
    assert_eq!(first, order[..16]);
    assert_eq!(distributed_shard(&[4], 3, 5), vec![4], "fewer samples than ranks repeat");
}
