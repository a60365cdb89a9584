//! The MPI group on two ranks: `mpi_child` runs under `mpirun -np 2`, checks every collective
//! operation against values it computes itself, and prints one line per rank that passed; the
//! parent test starts it and requires both lines. Skipped (with a message) without the cargo
//! feature `mpi`.

use std::process::Command;

const CHILD: &str = "NEXTDET_DIST_MPI_CHILD";

#[test]
fn collectives_on_two_mpi_ranks() {
    if !cfg!(feature = "mpi") {
        eprintln!("collectives_on_two_mpi_ranks: skipped (built without `--features mpi`)");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("mpirun")
        .args(["-np", "2", "--allow-run-as-root", "--oversubscribe", "-x", CHILD])
        .env(CHILD, "1")
        .arg(&exe)
        .args(["mpi_child", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
        .output()
        .expect("start mpirun (tools/install-mpi.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mpirun failed:\n{stdout}\n{stderr}");
    for rank in 0..2 {
        assert!(
            stdout.contains(&format!("rank {rank} of 2: collectives ok")),
            "rank {rank} did not pass:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
#[ignore = "started by collectives_on_two_mpi_ranks under mpirun"]
fn mpi_child() {
    use nextdet_dist::{init, world, DistError, Launcher, ReduceOp};
    assert!(std::env::var_os(CHILD).is_some(), "run by collectives_on_two_mpi_ranks only");
    let guard = init(Some(Launcher::Mpi)).expect("MPI starts");
    let g = world();
    let (r, n) = (g.rank(), g.world_size());
    assert_eq!(n, 2);
    assert!(r < 2);
    assert_eq!((g.local_rank(), g.local_size()), (r, 2), "both ranks run on this machine");
    assert_eq!(g.is_main(), r == 0);
    assert!(g.is_distributed());

    let mine = |k: f32| [(r as f32 + 1.0) * k, -(r as f32) * k, 0.25];
    let mut v = mine(1.0);
    g.all_reduce_f32(&mut v, ReduceOp::Sum).unwrap();
    assert_eq!(v, [3.0, -1.0, 0.5]);
    let mut v = mine(1.0);
    g.all_reduce_f32(&mut v, ReduceOp::Mean).unwrap();
    assert_eq!(v, [1.5, -0.5, 0.25]);
    let mut v = mine(1.0);
    g.all_reduce_f32(&mut v, ReduceOp::Max).unwrap();
    assert_eq!(v, [2.0, 0.0, 0.25]);
    let mut d = [r as f64 + 0.1, 1e300];
    g.all_reduce_f64(&mut d, ReduceOp::Sum).unwrap();
    assert_eq!(d, [0.1 + 1.1, 2e300]);
    let mut d = [r as f64 * 3.0];
    g.all_reduce_f64(&mut d, ReduceOp::Mean).unwrap();
    assert_eq!(d, [1.5]);
    let mut empty: [f32; 0] = [];
    g.all_reduce_f32(&mut empty, ReduceOp::Sum).unwrap();

    // broadcast from rank 1, of floats and of bytes of a length only the root knows
    let mut b = [r as f32; 5];
    g.broadcast_f32(&mut b, 1).unwrap();
    assert_eq!(b, [1.0; 5]);
    let mut bytes = if r == 0 { b"from rank 0".to_vec() } else { vec![9; 100] };
    g.broadcast_bytes(&mut bytes, 0).unwrap();
    assert_eq!(bytes, b"from rank 0");
    assert!(matches!(g.broadcast_f32(&mut b, 2), Err(DistError::Invalid { .. })), "root 2 of 2");

    // all-gather of bytes of different lengths (rank 0's empty)
    let gathered = g.all_gather_bytes(&vec![r as u8 + 7; r * 3]).unwrap();
    assert_eq!(gathered, vec![vec![], vec![8u8; 3]]);
    g.barrier().unwrap();

    // after MPI_Finalize the default group is the world of one and the old group refuses calls
    drop(guard);
    assert_eq!(world().world_size(), 1);
    assert!(matches!(g.barrier(), Err(DistError::Finalized(_))));
    println!("rank {r} of 2: collectives ok");
}
