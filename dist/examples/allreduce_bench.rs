//! Times the data-parallel gradient all-reduce: `PARAMS` `f32` values (default 48 million,
//! Mask R-CNN ConvNeXt-T's parameter count) averaged over the ranks in buckets of 25 MB (PyTorch
//! DDP's `bucket_cap_mb`, as the trainer's `DistributedHook` does), `ITERS` times after one
//! warm-up; rank 0 prints the mean and the fastest time.
//!
//! ```text
//! cargo build --release --features mpi -p nextdet-dist --example allreduce_bench
//! mpirun -np 2 target/release/examples/allreduce_bench [PARAMS] [ITERS]
//! ```

use nextdet_dist::{init, Launcher, ReduceOp};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let params: usize = args.next().map_or(48_000_000, |a| a.parse().expect("PARAMS: a count"));
    let iters: usize = args.next().map_or(5, |a| a.parse().expect("ITERS: a count"));
    let guard = init(Some(Launcher::Mpi)).unwrap_or_else(|e| panic!("{e}"));
    let group = guard.group();
    let bucket = (25 << 20) / 4;
    let mut grads: Vec<f32> = (0..params).map(|i| (i % 1000) as f32 * 1e-3 + group.rank() as f32).collect();
    let mut times = Vec::new();
    for it in 0..=iters {
        group.barrier().expect("barrier");
        let start = Instant::now();
        for chunk in grads.chunks_mut(bucket) {
            group.all_reduce_f32(chunk, ReduceOp::Mean).expect("all-reduce");
        }
        if it > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    if group.is_main() {
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        let best = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "all-reduce (mean) of {params} f32 in {} buckets of 25 MB over {} ranks: mean {mean:.3} s, best {best:.3} s ({iters} runs)",
            params.div_ceil(bucket),
            group.world_size()
        );
    }
    drop(guard);
}
