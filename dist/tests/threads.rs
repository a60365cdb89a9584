//! Ranks as threads: every collective operation on three ranks against the values worked out by
//! hand from the inputs, the per-thread default group, and a failing or panicking rank ending
//! the others' calls instead of leaving them waiting.

use nextdet_dist::{run_ranks, world, Collective, DistError, ReduceOp};
use std::sync::Arc;

/// Rank r's vector: `[r + 1, -(r + 1) / 2, 10 r]`.
fn input(r: usize) -> Vec<f32> {
    let x = r as f32 + 1.0;
    vec![x, -x / 2.0, 10.0 * r as f32]
}

#[test]
fn collectives_on_three_thread_ranks() {
    let results = run_ranks(3, 1, |g: Arc<dyn Collective>| -> Result<(), DistError> {
        let r = g.rank();
        assert_eq!((g.world_size(), g.local_rank(), g.local_size()), (3, r, 3));
        assert_eq!(world().rank(), r, "the rank's thread sees its group as the default one");

        let mut sum = input(r);
        g.all_reduce_f32(&mut sum, ReduceOp::Sum)?;
        assert_eq!(sum, [6.0, -3.0, 30.0]);
        let mut mean = input(r);
        g.all_reduce_f32(&mut mean, ReduceOp::Mean)?;
        assert_eq!(mean, [2.0, -1.0, 10.0]);
        let mut max = input(r);
        g.all_reduce_f32(&mut max, ReduceOp::Max)?;
        assert_eq!(max, [3.0, -0.5, 20.0]);
        let mut d = vec![r as f64 * 0.5];
        g.all_reduce_f64(&mut d, ReduceOp::Sum)?;
        assert_eq!(d, [1.5]);

        let mut b = input(r);
        g.broadcast_f32(&mut b, 2)?;
        assert_eq!(b, input(2));
        let mut bytes = vec![r as u8; r + 1];
        g.broadcast_bytes(&mut bytes, 1)?;
        assert_eq!(bytes, [1, 1]);
        let gathered = g.all_gather_bytes(&vec![r as u8; r])?;
        assert_eq!(gathered, vec![vec![], vec![1], vec![2, 2]]);
        g.barrier()?;

        let mut short = vec![0.0f32; r + 1];
        let e = g.all_reduce_f32(&mut short, ReduceOp::Sum).unwrap_err();
        assert!(e.to_string().contains("elements"), "{e}");
        Ok(())
    })
    .unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        r.unwrap();
    }
    assert_eq!(world().world_size(), 1, "the calling thread keeps the process's group");
}

#[test]
fn a_failing_rank_ends_the_others_waits() {
    let results = run_ranks(2, 1, |g: Arc<dyn Collective>| -> Result<usize, String> {
        if g.rank() == 1 {
            return Err("no data".into());
        }
        // rank 0 waits for rank 1, which never comes
        g.barrier().map_err(|e| e.to_string())?;
        Ok(0)
    })
    .unwrap();
    assert_eq!(results[1], Err("no data".to_string()));
    let e = results[0].as_ref().unwrap_err();
    assert!(e.contains("rank 1 failed: no data"), "{e}");
}

#[test]
fn a_panicking_rank_ends_the_others_waits_and_the_panic_resumes() {
    let caught = std::panic::catch_unwind(|| {
        run_ranks(2, 1, |g: Arc<dyn Collective>| -> Result<(), DistError> {
            if g.rank() == 0 {
                panic!("rank 0 broke");
            }
            g.barrier()
        })
    });
    let panic = caught.unwrap_err();
    let msg = panic.downcast_ref::<&str>().copied().unwrap_or("");
    assert_eq!(msg, "rank 0 broke");
}
