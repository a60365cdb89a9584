//! The world of one: every collective operation returns its input, and the default group is
//! that world until a launcher installs another.

use nextdet_dist::{init, set_world, world, Collective, Launcher, Local, ReduceOp};
use std::sync::Arc;

#[test]
fn a_world_of_one_is_the_identity() {
    let w = Local;
    assert_eq!((w.rank(), w.world_size(), w.local_rank(), w.local_size()), (0, 1, 0, 1));
    assert!(w.is_main() && !w.is_distributed());
    let mut v = vec![1.5f32, -2.0];
    for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
        w.all_reduce_f32(&mut v, op).unwrap();
        assert_eq!(v, [1.5, -2.0]);
    }
    let mut d = vec![3.0f64];
    w.all_reduce_f64(&mut d, ReduceOp::Mean).unwrap();
    assert_eq!(d, [3.0]);
    let mut bytes = b"abc".to_vec();
    w.broadcast_bytes(&mut bytes, 0).unwrap();
    assert_eq!(bytes, b"abc");
    assert!(w.broadcast_f32(&mut v, 1).is_err(), "root 1 in a world of 1");
    assert_eq!(w.all_gather_bytes(b"xy").unwrap(), vec![b"xy".to_vec()]);
    w.barrier().unwrap();
}

#[test]
fn the_default_group_and_the_launcher() {
    // no launcher: the world of one
    assert_eq!(world().world_size(), 1);
    let guard = init(Some(Launcher::None)).unwrap();
    assert_eq!(guard.group().world_size(), 1);
    drop(guard);
    let previous = set_world(Some(Arc::new(Local)));
    assert!(previous.is_none());
    set_world(None);
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() {
        return; // started under mpirun: the checks below fake its variables
    }
    if !cfg!(feature = "mpi") {
        let err = init(Some(Launcher::Mpi)).err().expect("no MPI in this build").to_string();
        assert!(err.contains("without MPI support") && err.contains("--features mpi"), "{err}");
    }
    // ranks announced by the environment
    std::env::set_var("OMPI_COMM_WORLD_SIZE", "2");
    let err = init(Some(Launcher::None)).err().expect("--launcher none under mpirun").to_string();
    assert!(err.contains("OMPI_COMM_WORLD_SIZE=2") && err.contains("--launcher none"), "{err}");
    if !cfg!(feature = "mpi") {
        let err = init(None).err().expect("detected ranks need MPI").to_string();
        assert!(err.contains("OMPI_COMM_WORLD_SIZE=2") && err.contains("without MPI support"), "{err}");
    }
    std::env::remove_var("OMPI_COMM_WORLD_SIZE");
}
