//! The batch loader: determinism across thread counts, group sampling, errors, early drop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nextdet_datasets::loader::{Loader, LoaderConfig, LoaderError};
use rand::Rng;

fn config(workers: usize, shuffle: bool) -> LoaderConfig {
    LoaderConfig { batch_size: 3, num_workers: workers, prefetch_batches: 2, shuffle, seed: 7 }
}

/// Each sample is `(index, a draw from its generator)`.
fn draw_loader(len: usize, workers: usize, shuffle: bool) -> Loader<Vec<(usize, u64)>, String> {
    Loader::uncollated(len, Arc::new(|i, rng| Ok((i, rng.gen::<u64>()))), config(workers, shuffle)).unwrap()
}

fn run(loader: &Loader<Vec<(usize, u64)>, String>, epoch: u64) -> Vec<Vec<(usize, u64)>> {
    loader.epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn same_batches_whatever_the_thread_count() {
    let flags: Vec<u8> = (0..23).map(|i| u8::from(i % 3 == 0)).collect();
    let make = |w| draw_loader(23, w, true).with_groups(flags.clone()).unwrap();
    let (l0, l1, l3) = (make(0), make(1), make(3));
    for epoch in 0..3 {
        let a = run(&l0, epoch);
        assert_eq!(a, run(&l1, epoch), "epoch {epoch}");
        assert_eq!(a, run(&l3, epoch), "epoch {epoch}");
    }
    assert_ne!(run(&l3, 0), run(&l3, 1), "epochs must differ");
}

#[test]
fn group_sampler_pads_each_group_and_keeps_batches_pure() {
    let flags: Vec<u8> = (0..23).map(|i| u8::from(i % 3 == 0)).collect();
    let loader = draw_loader(23, 2, true).with_groups(flags.clone()).unwrap();
    let batches = loader.batch_indices(4);
    // Group 1 has 8 samples -> 3 batches, group 0 has 15 -> 5 batches.
    assert_eq!(batches.len(), 8);
    let mut seen = vec![0; 23];
    for b in &batches {
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|&i| flags[i] == flags[b[0]]), "mixed batch {b:?}");
        for &i in b {
            seen[i] += 1;
        }
    }
    assert!(seen.iter().all(|&c| c >= 1), "every sample appears: {seen:?}");
    assert_eq!(batches, loader.batch_indices(4));
    assert_ne!(batches, loader.batch_indices(5));

    let sequential = draw_loader(7, 2, false);
    assert_eq!(sequential.batch_indices(0), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    let got: Vec<usize> = run(&sequential, 0).into_iter().flatten().map(|(i, _)| i).collect();
    assert_eq!(got, (0..7).collect::<Vec<_>>());
}

#[test]
fn a_failing_sample_ends_the_epoch_with_its_error() {
    for workers in [0, 1, 3] {
        let loader: Loader<Vec<usize>, String> = Loader::uncollated(
            20,
            Arc::new(|i, _| if i == 11 { Err(format!("cannot decode image {i}")) } else { Ok(i) }),
            config(workers, false),
        )
        .unwrap();
        let items: Vec<_> = loader.epoch(0).collect();
        // Batches 0..2 hold samples 0..9; batch 3 holds 9, 10, 11.
        assert_eq!(items.len(), 4, "workers {workers}");
        assert!(items[..3].iter().all(|r| r.is_ok()));
        match &items[3] {
            Err(e @ LoaderError::Sample { index: 11, .. }) => assert!(e.to_string().contains("sample 11")),
            other => panic!("unexpected {other:?}"),
        }
    }
    let panicking: Loader<Vec<usize>, String> =
        Loader::uncollated(6, Arc::new(|i, _| if i == 4 { panic!("boom {i}") } else { Ok(i) }), config(2, false))
            .unwrap();
    let last = panicking.epoch(0).last().unwrap();
    assert!(matches!(&last, Err(LoaderError::Panic { message, .. }) if message.contains("boom 4")), "{last:?}");

    let collate_fails: Loader<usize, String> = Loader::new(
        6,
        Arc::new(|i, _| Ok(i)),
        Arc::new(|v: Vec<usize>| if v.contains(&4) { Err("bad batch".to_string()) } else { Ok(v.len()) }),
        config(2, false),
    )
    .unwrap();
    let r: Vec<_> = collate_fails.epoch(0).collect();
    assert!(matches!(&r[1], Err(LoaderError::Collate { batch: 1, .. })), "{r:?}");
}

#[test]
fn prefetch_is_bounded_and_drop_joins_workers() {
    let started = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&started);
    let loader: Loader<Vec<usize>, String> = Loader::uncollated(
        300,
        Arc::new(move |i, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            Ok(i)
        }),
        config(3, false),
    )
    .unwrap();
    let mut it = loader.epoch(0);
    assert_eq!(it.next().unwrap().unwrap(), vec![0, 1, 2]);
    std::thread::sleep(Duration::from_millis(100));
    // One batch consumed, two prefetched: at most 3 batches of 3 samples started.
    let n = started.load(Ordering::SeqCst);
    assert!(n <= 9, "{n} samples started");
    drop(it);
    let after_drop = started.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(started.load(Ordering::SeqCst), after_drop, "workers kept running after drop");
}
