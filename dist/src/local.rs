//! A world of one process: every collective operation is the identity.

use crate::{Collective, DistError, ReduceOp};

/// The world of one: rank 0 of 1, every operation returns its input.
#[derive(Clone, Copy, Debug, Default)]
pub struct Local;

fn check_root(op: &'static str, root: usize) -> Result<(), DistError> {
    if root != 0 {
        return Err(DistError::Invalid { op, msg: format!("root {root} in a world of 1") });
    }
    Ok(())
}

impl Collective for Local {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn local_size(&self) -> usize {
        1
    }
    fn all_reduce_f32(&self, _buf: &mut [f32], _op: ReduceOp) -> Result<(), DistError> {
        Ok(())
    }
    fn all_reduce_f64(&self, _buf: &mut [f64], _op: ReduceOp) -> Result<(), DistError> {
        Ok(())
    }
    fn broadcast_f32(&self, _buf: &mut [f32], root: usize) -> Result<(), DistError> {
        check_root("broadcast", root)
    }
    fn broadcast_bytes(&self, _buf: &mut Vec<u8>, root: usize) -> Result<(), DistError> {
        check_root("broadcast", root)
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        Ok(vec![mine.to_vec()])
    }
    fn barrier(&self) -> Result<(), DistError> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
