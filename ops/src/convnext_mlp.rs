//! The inference tail of a ConvNeXt block in one op: from the layer norm's output `y` to the
//! block's output, `shortcut + gamma * (gelu(y · W1ᵀ + b1) · W2ᵀ + b2)`.
//!
//! As separate ops, every block writes the 4C-wide hidden activation to memory, reads it back
//! for the GELU, writes the GELU output, reads it for the second multiply, and makes one more
//! pass for the residual, each pass a parallel region of its own. Here each task takes a chunk
//! of rows through both multiplies, the GELU and the residual while its hidden rows stay in the
//! core's cache, and the tasks never wait for each other. In bf16 the GELU writes its output
//! straight in bf16, the second multiply's input format.
//!
//! In f32 the result is the same bits as the separate ops (the same kernels, each element summed
//! in the same order).

use crate::cpu::as_f32;
use crate::gelu::{gelu_rows, gelu_rows_in_place};
use crate::gemm::{matmul_packed, matmul_packed_bf16, row_unit, Bf16Rows, PackedWeight, Precision, SendPtr};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// A ConvNeXt block's two pointwise layers and layer scale, packed for inference.
pub struct PackedMlp {
    /// `pwconv1`: C to 4C.
    pub w1: Arc<PackedWeight>,
    /// `pwconv1.bias`.
    pub b1: Vec<f32>,
    /// `pwconv2`: 4C to C.
    pub w2: Arc<PackedWeight>,
    /// `pwconv2.bias`.
    pub b2: Vec<f32>,
    /// The layer scale `gamma` (`None`: no layer scale).
    pub gamma: Option<Vec<f32>>,
}

/// Hidden activations (f32) one chunk of rows may hold: 512 KiB, a quarter of a core's L2 here.
const HIDDEN_FLOATS: usize = 1 << 17;

/// `shortcut + gamma * (gelu(y · W1ᵀ + b1) · W2ᵀ + b2)` for `y`, `shortcut`: `[..., C]`.
/// Inference only (not differentiable); both weights packed in the same precision.
pub fn convnext_mlp_inference(y: &Tensor, shortcut: &Tensor, mlp: &PackedMlp) -> Result<Tensor> {
    let ((c, hidden), (hidden2, c2)) = (mlp.w1.dims(), mlp.w2.dims());
    let c_last = y.dims().last().copied();
    if c_last != Some(c) || hidden2 != hidden || c2 != c || y.dims() != shortcut.dims() {
        bail!(
            "convnext_mlp: input {:?} / shortcut {:?} do not fit weights {c}->{hidden}, {hidden2}->{c2}",
            y.dims(),
            shortcut.dims()
        );
    }
    if mlp.b1.len() != hidden || mlp.b2.len() != c || mlp.gamma.as_ref().is_some_and(|g| g.len() != c) {
        bail!("convnext_mlp: biases or layer scale do not fit {c} channels");
    }
    if mlp.w1.precision() != mlp.w2.precision() {
        bail!("convnext_mlp: weights packed in different precisions");
    }
    y.contiguous()?.apply_op2_no_bwd(&shortcut.contiguous()?, &MlpOp(mlp))
}

struct MlpOp<'a>(&'a PackedMlp);

impl CustomOp2 for MlpOp<'_> {
    fn name(&self) -> &'static str {
        "convnext-mlp"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, shortcut) = (as_f32(self.name(), s1, l1)?, as_f32(self.name(), s2, l2)?);
        let mlp = self.0;
        let (c, hidden) = mlp.w1.dims();
        let rows = y.len() / c.max(1);
        // every element is written by a chunk's second multiply: no zero-fill first
        let mut out = Vec::<f32>::with_capacity(rows * c);
        let bf16 = mlp.w1.precision() == Precision::Bf16;
        let threads = rayon::current_num_threads();
        let tasks = if rows < threads * MIN_ROWS_PER_TASK {
            // few rows: one chunk, each multiply split over the threads by columns
            vec![(0, rows)]
        } else {
            chunks(rows, hidden, row_unit(mlp.w1.precision()), threads)
        };
        let parallel = tasks.len() == 1;
        let base = SendPtr(out.as_mut_ptr());
        let run = |&(start, len): &(usize, usize)| {
            let (yr, sr) = (&y[start * c..(start + len) * c], &shortcut[start * c..(start + len) * c]);
            // SAFETY: the chunks' rows do not overlap and lie inside the rows x C of `out`.
            let o = unsafe { base.get().add(start * c) };
            if bf16 {
                chunk_bf16(mlp, yr, sr, o, len, parallel);
            } else {
                chunk_f32(mlp, yr, sr, o, len, parallel);
            }
        };
        if parallel {
            run(&tasks[0]);
        } else {
            tasks.par_iter().for_each(run);
        }
        // SAFETY: the chunks wrote all rows x C elements.
        unsafe { out.set_len(rows * c) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Below this many rows per thread a task's multiplies are too short to run alone: the whole
/// input goes through as one chunk and each multiply splits its columns over the threads
/// instead (ConvNeXt-T's last stage at batch 1 has 49 rows; measured 14.4 against 13.3
/// images/s end to end with 2 threads).
const MIN_ROWS_PER_TASK: usize = 64;

/// `(first row, rows)` of each task: whole units of `unit` rows (the multiply's row block),
/// dealt evenly over a multiple of `threads` tasks, so that every thread gets the same share
/// (ConvNeXt-T's third stage at batch 1, 196 rows, was three chunks on two threads: one thread
/// did two thirds), and no chunk whose hidden rows pass [`HIDDEN_FLOATS`].
fn chunks(rows: usize, hidden: usize, unit: usize, threads: usize) -> Vec<(usize, usize)> {
    let blocks = rows.div_ceil(unit);
    let max_blocks = (HIDDEN_FLOATS / (hidden.max(1) * unit)).max(1);
    let n = blocks.div_ceil(max_blocks).div_ceil(threads.max(1)) * threads.max(1);
    let n = n.min(blocks).max(1);
    (0..n)
        .map(|i| {
            let (b0, b1) = (blocks * i / n, blocks * (i + 1) / n);
            (b0 * unit, (b1 * unit).min(rows) - b0 * unit)
        })
        .filter(|&(_, len)| len > 0)
        .collect()
}

/// One chunk in f32: the same kernels, in the same order per element, as the separate ops.
/// `out` has room for `rows` x C floats that nobody else touches meanwhile; all get written.
fn chunk_f32(mlp: &PackedMlp, y: &[f32], shortcut: &[f32], out: *mut f32, rows: usize, parallel: bool) {
    let hidden = mlp.w1.dims().1;
    let mut h = Vec::<f32>::with_capacity(rows * hidden);
    // SAFETY: y holds rows x C, h room for rows x hidden, out rows x C floats; the multiply
    // writes every element of h.
    unsafe {
        matmul_packed(rows, h.as_mut_ptr(), y.as_ptr(), &mlp.w1, parallel);
        h.set_len(rows * hidden);
    }
    if parallel {
        // the one chunk of few rows: its GELU shared by the threads too
        let per_task = rows.div_ceil(rayon::current_num_threads()).max(1) * hidden;
        h.par_chunks_mut(per_task).for_each(|part| gelu_rows_in_place(part, &mlp.b1));
    } else {
        gelu_rows_in_place(&mut h, &mlp.b1);
    }
    // SAFETY: as above; the multiply writes every element of `out`.
    let out = unsafe {
        matmul_packed(rows, out, h.as_ptr(), &mlp.w2, parallel);
        std::slice::from_raw_parts_mut(out, rows * mlp.w2.dims().1)
    };
    residual(out, shortcut, &mlp.b2, mlp.gamma.as_deref());
}

/// One chunk in bf16: both multiplies on bf16 rows, the GELU written as bf16. `out` as in
/// [`chunk_f32`].
fn chunk_bf16(mlp: &PackedMlp, y: &[f32], shortcut: &[f32], out: *mut f32, rows: usize, parallel: bool) {
    let (c, hidden) = mlp.w1.dims();
    let mut a = Bf16Rows::zeros(rows, c);
    a.fill_rows(rows, parallel, |i, row| row.copy_from_slice(&y[i * c..(i + 1) * c]));
    let mut h = Vec::<f32>::with_capacity(rows * hidden);
    // SAFETY: h has room for rows x hidden floats, every one written by the multiply.
    unsafe {
        matmul_packed_bf16(rows, h.as_mut_ptr(), &a, &mlp.w1, parallel);
        h.set_len(rows * hidden);
    }
    let mut g = Bf16Rows::zeros(rows, hidden);
    g.fill_rows(rows, parallel, |i, row| gelu_rows(row, &h[i * hidden..(i + 1) * hidden], &mlp.b1));
    // SAFETY: out has room for rows x C floats, every one written by the multiply.
    let out = unsafe {
        matmul_packed_bf16(rows, out, &g, &mlp.w2, parallel);
        std::slice::from_raw_parts_mut(out, rows * c)
    };
    residual(out, shortcut, &mlp.b2, mlp.gamma.as_deref());
}

/// `out = shortcut + gamma * (out + b)` over rows (the formula of `layer_scale_residual`).
fn residual(out: &mut [f32], shortcut: &[f32], b: &[f32], gamma: Option<&[f32]>) {
    for (or, sr) in out.chunks_exact_mut(b.len()).zip(shortcut.chunks_exact(b.len())) {
        match gamma {
            Some(g) => or.iter_mut().zip(sr).zip(b).zip(g).for_each(|(((o, &s), &bv), &gv)| *o = s + gv * (*o + bv)),
            None => or.iter_mut().zip(sr).zip(b).for_each(|((o, &s), &bv)| *o = s + (*o + bv)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_cover_the_rows_once_in_whole_blocks() {
        for rows in [1, 31, 32, 49, 196, 784, 3136, 25_088] {
            for (hidden, unit, threads) in [(384, 32, 2), (3072, 32, 2), (1536, 12, 2), (384, 12, 1), (384, 32, 16)] {
                let cs = chunks(rows, hidden, unit, threads);
                let mut next = 0;
                for &(start, len) in &cs {
                    assert_eq!(start, next);
                    assert!(start % unit == 0 && len > 0);
                    assert!(len <= unit || len * hidden <= super::HIDDEN_FLOATS.max(unit * hidden));
                    next += len;
                }
                assert_eq!(next, rows, "rows {rows} hidden {hidden}");
                let blocks = rows.div_ceil(unit);
                assert!(cs.len() >= threads.min(blocks));
                if blocks >= threads {
                    assert!(
                        cs.len().is_multiple_of(threads) || cs.len() == blocks,
                        "{} tasks for {threads} threads",
                        cs.len()
                    );
                }
            }
        }
    }

    #[test]
    fn chunks_share_the_rows_evenly_between_threads() {
        // ConvNeXt-T's third stage at batch 1: 196 rows, 17 tiles of 12, over 2 threads
        let cs = chunks(196, 1536, 12, 2);
        assert!(cs.len().is_multiple_of(2));
        let tiles: Vec<usize> = cs.iter().map(|&(_, len)| len.div_ceil(12)).collect();
        let (lo, hi) = (tiles.iter().min().unwrap(), tiles.iter().max().unwrap());
        assert!(hi - lo <= 1, "{tiles:?}");
    }
}
