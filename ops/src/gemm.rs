//! The one matrix multiply every op of this crate goes through: the `gemm` crate (the one candle
//! uses) on strided operands, writing into memory the caller owns (no zero-fill first).
//!
//! Tried and left out: cutting long reductions (weight gradients, `dW = dYᵀ · X` over every
//! position of a batch) into pieces on separate threads. Alone, ConvNeXt-T's first-stage weight
//! gradient went from 104 to 150 GFLOP/s (PyTorch: 166); in the whole training step it was
//! slower (4.0-4.7 against 4.2-4.8 images/s, alternating runs), so the multiply stays one call.

/// `dst (m x n) = [dst +] lhs (m x k) · rhs (k x n)`, every matrix given by a pointer and
/// (row stride, column stride). `parallel` lets it use the rayon pool (false inside tasks that
/// are already parallel).
///
/// # Safety
/// Every element addressed by the sizes and strides must lie inside a live allocation, and
/// `dst` must not overlap `lhs` or `rhs` nor be written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    parallel: bool,
) {
    if m * n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.add(i * dst_rs + j * dst_cs) = 0.0;
                }
            }
        }
        return;
    }
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // The gemm crate takes each matrix's column stride before its row stride.
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// A raw pointer that may cross into rayon tasks; each use writes a region no other task does.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only used to hand disjoint output regions (or read-only inputs) to rayon tasks.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    pub(crate) fn get(&self) -> *mut f32 {
        self.0
    }
}
