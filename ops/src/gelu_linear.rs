//! The middle of a ConvNeXt block in one op: bias, exact GELU and the second pointwise linear,
//! `gelu(h + bias) @ weight^T`, forward and backward, without ever storing the GELU output.
//!
//! Done as two ops (`bias_gelu`, then `linear_no_bias`), autograd keeps the activation
//! `a = gelu(h + bias)` alive until backward ends, one more `[rows, 4C]` tensor per block (the
//! widest of the block) next to `h`. Here only `h` is kept: the forward computes `a` a chunk of
//! rows at a time into a small scratch buffer and multiplies each chunk straight into its output
//! rows; the backward recomputes `a` chunk by chunk (it needs `gelu'` at the same points anyway,
//! and both come from one evaluation of the normal CDF and density).
//!
//! Backward, per chunk of rows: `dA = dY · W` (written into the `dH` rows of the chunk), then in
//! one pass `A = gelu(Z)`, `dH = dA * gelu'(Z)` and the bias gradient, then `dW += dYᵀ · A`.
//! Chunks run in order and the bias gradient is summed in fixed per-task partials, so the
//! result does not depend on the thread count.

use crate::cpu::{as_f32, fmadd, multiversion, rows_per_task, sum_partials};
use crate::gelu::{gelu_rows, normal_cdf_pdf};
use crate::gemm::matmul;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `gelu(h + bias) @ weight^T` for `h: [..., K]`, `bias: [K]`, `weight: [N, K]`, giving
/// `[..., N]`: PyTorch's `F.linear(F.gelu(h + bias), weight)` with the exact (erf) GELU.
/// Differentiable in all three arguments; the GELU output is never stored (see the module doc).
pub fn gelu_linear(h: &Tensor, bias: &Tensor, weight: &Tensor) -> Result<Tensor> {
    apply(h, bias, weight, Chunking { floats: CHUNK_FLOATS, min_rows: MIN_CHUNK_ROWS })
}

/// [`gelu_linear`] with chunks of about `chunk_floats` GELU values (at least one row, however
/// few) instead of the default, so that tests can cross chunk boundaries on small inputs.
pub fn gelu_linear_chunked(h: &Tensor, bias: &Tensor, weight: &Tensor, chunk_floats: usize) -> Result<Tensor> {
    apply(h, bias, weight, Chunking { floats: chunk_floats, min_rows: 1 })
}

/// Checks the shapes and runs the op on `h` flattened to `[rows, K]`.
fn apply(h: &Tensor, bias: &Tensor, weight: &Tensor, chunking: Chunking) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let mut dims = h.dims().to_vec();
    if dims.last() != Some(&k) {
        bail!("gelu_linear: input {:?} does not end in the weight's {k} input features", h.dims());
    }
    if bias.dims() != [k] {
        bail!("gelu_linear: bias {:?} does not fit the weight's {k} input features", bias.dims());
    }
    if !crate::generic::fast_cpu(h) {
        return crate::generic::gelu_linear(h, bias, weight);
    }
    let rows = dims[..dims.len() - 1].iter().product::<usize>();
    let y = h.contiguous()?.reshape((rows, k))?.apply_op3(
        &bias.contiguous()?,
        &weight.contiguous()?,
        GeluLinear { chunking },
    )?;
    *dims.last_mut().expect("at least one dim") = n;
    y.reshape(dims)
}

/// Default floats of GELU scratch per chunk of rows (4 MB: the scratch, and in backward the
/// chunk's `dH` rows, stay in the last-level cache between the elementwise pass and the
/// multiply).
const CHUNK_FLOATS: usize = 1 << 20;
/// Default least rows per chunk: every chunk's multiply packs the whole weight again, a cost
/// that only many rows amortize (the last ConvNeXt stage has few rows and a 9 MB weight).
const MIN_CHUNK_ROWS: usize = 384;
/// Work per rayon task in the elementwise passes.
const TASK_FLOATS: usize = 1 << 15;

/// How an op cuts its rows into chunks.
#[derive(Clone, Copy, Debug)]
struct Chunking {
    /// About this many GELU values per chunk...
    floats: usize,
    /// ...unless that makes chunks of fewer rows than this (then fewer, larger chunks).
    min_rows: usize,
}

impl Chunking {
    /// Rows per chunk: chunks all the same size but the last (depends on the shapes only, never
    /// on the thread count).
    fn rows(&self, rows: usize, k: usize) -> usize {
        let chunks = (rows * k).div_ceil(self.floats.max(1)).min(rows / self.min_rows.max(1)).max(1);
        rows.div_ceil(chunks).max(1)
    }
}

multiversion! {
    /// One pass of the backward over rows of `b.len()` values: `a = gelu(h + b)`,
    /// `g = g * gelu'(h + b)` in place (`g` holds `dA` on entry), and each row of the new `g`
    /// added into `db`. `gelu'(z) = Phi(z) + z * phi(z)`, the same formulas as `gelu.rs`.
    fn gelu_and_grad_rows(a: &mut [f32], g: &mut [f32], h: &[f32], b: &[f32], db: &mut [f32]) {
        let d = b.len();
        for ((ar, gr), hr) in a.chunks_exact_mut(d).zip(g.chunks_exact_mut(d)).zip(h.chunks_exact(d)) {
            for i in 0..d {
                let z = hr[i] + b[i];
                let (cdf, pdf) = normal_cdf_pdf::<FMA>(z);
                ar[i] = z * cdf;
                gr[i] *= fmadd::<FMA>(z, pdf, cdf);
                db[i] += gr[i];
            }
        }
    }
}

/// The forward: `h [rows, k]`, `b [k]`, `w [n, k]` to `y [rows, n]`.
fn forward(h: &[f32], b: &[f32], w: &[f32], (rows, k, n): (usize, usize, usize), chunking: Chunking) -> Vec<f32> {
    let mut out = Vec::<f32>::with_capacity(rows * n);
    let step = chunking.rows(rows, k);
    let mut scratch = vec![0f32; step.min(rows) * k];
    let task = rows_per_task(k, TASK_FLOATS) * k;
    for r0 in (0..rows).step_by(step) {
        let r = step.min(rows - r0);
        let a = &mut scratch[..r * k];
        if k > 0 {
            a.par_chunks_mut(task)
                .zip(h[r0 * k..(r0 + r) * k].par_chunks(task))
                .for_each(|(ao, hi)| gelu_rows(ao, hi, b));
        }
        // SAFETY: y rows r0..r0+r ([r, n], row stride n) lie inside `out`'s capacity and are
        // written only here; a is [r, k] row-major; w^T is read from the [n, k] weight.
        unsafe {
            matmul((r, n, k), out.as_mut_ptr().add(r0 * n), (n, 1), false, a.as_ptr(), (k, 1), w.as_ptr(), (1, k), true)
        };
    }
    // SAFETY: the chunks cover rows 0..rows and each multiply wrote all of its rows.
    unsafe { out.set_len(rows * n) };
    out
}

/// The backward: `[dH (rows*k), db (k), dW (n*k)]` packed flat, for `gy [rows, n]`.
fn backward(
    h: &[f32],
    b: &[f32],
    w: &[f32],
    gy: &[f32],
    (rows, k, n): (usize, usize, usize),
    chunking: Chunking,
) -> Vec<f32> {
    // dH, the largest buffer, is written chunk by chunk by the multiply before anything reads it,
    // so only db and dW start as zeros (no zero-fill pass over dH).
    let total = rows * k + k + n * k;
    let mut packed = Vec::<f32>::with_capacity(total);
    let base = packed.as_mut_ptr();
    // SAFETY: db and dW are the last k + n*k elements of the capacity; zero bits are 0.0f32.
    let (db, dw) = unsafe {
        std::ptr::write_bytes(base.add(rows * k), 0, k + n * k);
        std::slice::from_raw_parts_mut(base.add(rows * k), k + n * k).split_at_mut(k)
    };
    let step = chunking.rows(rows, k);
    let mut scratch = vec![0f32; step.min(rows) * k];
    let task = rows_per_task(k, TASK_FLOATS) * k;
    for r0 in (0..rows).step_by(step) {
        let r = step.min(rows - r0);
        let gy = &gy[r0 * n..(r0 + r) * n];
        // SAFETY: dA [r, k] = dY [r, n] · W [n, k], all row-major; the chunk's rows of dH lie in
        // the capacity before db, are written in full by the multiply (which reads none of
        // them) and only then borrowed, by this iteration alone.
        let dh = unsafe {
            let dh = base.add(r0 * k);
            matmul((r, k, n), dh, (k, 1), false, gy.as_ptr(), (n, 1), w.as_ptr(), (k, 1), true);
            std::slice::from_raw_parts_mut(dh, r * k)
        };
        let a = &mut scratch[..r * k];
        if k == 0 {
            continue;
        }
        let partials: Vec<Vec<f32>> = a
            .par_chunks_mut(task)
            .zip(dh.par_chunks_mut(task))
            .zip(h[r0 * k..(r0 + r) * k].par_chunks(task))
            .map(|((ao, go), hi)| {
                let mut acc = vec![0f32; k];
                gelu_and_grad_rows(ao, go, hi, b, &mut acc);
                acc
            })
            .collect();
        db.iter_mut().zip(sum_partials(partials, k)).for_each(|(d, p)| *d += p);
        // SAFETY: dW [n, k] += dYᵀ [n, r] (read from the row-major [r, n] chunk of dY with
        // strides (1, n)) · A [r, k]; all inside their slices, dw borrowed mutably here.
        unsafe { matmul((n, k, r), dw.as_mut_ptr(), (k, 1), true, gy.as_ptr(), (1, n), a.as_ptr(), (k, 1), true) };
    }
    // SAFETY: the chunks wrote all rows of dH; db and dW were zeroed above and accumulated.
    unsafe { packed.set_len(total) };
    packed
}

/// Forward op: `(h [rows, K], bias [K], weight [N, K]) -> gelu(h + bias) @ weight^T`.
struct GeluLinear {
    chunking: Chunking,
}

impl CustomOp3 for GeluLinear {
    fn name(&self) -> &'static str {
        "gelu-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, k) = l1.shape().dims2()?;
        let (n, wk) = l3.shape().dims2()?;
        if wk != k || l2.shape().dims() != [k] {
            bail!("gelu-linear: shapes {:?}, {:?}, {:?} do not fit", l1.shape(), l2.shape(), l3.shape());
        }
        let (h, b, w) = (as_f32(self.name(), s1, l1)?, as_f32(self.name(), s2, l2)?, as_f32(self.name(), s3, l3)?);
        Ok((CpuStorage::F32(forward(h, b, w, (rows, k, n), self.chunking)), Shape::from((rows, n))))
    }

    fn bwd(
        &self,
        h: &Tensor,
        bias: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, k) = h.dims2()?;
        let n = weight.dim(0)?;
        let op = GeluLinearGrad { bias: bias.to_vec1::<f32>()?, chunking: self.chunking };
        let packed = h.apply_op3_no_bwd(weight, &grad.contiguous()?, &op)?;
        let dh = packed.narrow(0, 0, rows * k)?.reshape((rows, k))?;
        let db = packed.narrow(0, rows * k, k)?;
        let dw = packed.narrow(0, rows * k + k, n * k)?.reshape((n, k))?;
        Ok((Some(dh), Some(db), Some(dw)))
    }
}

/// Backward op: `(h, weight, grad_y) -> [dh, dbias, dweight]` packed flat; the bias is carried
/// by the op (a custom op takes at most three tensors).
struct GeluLinearGrad {
    bias: Vec<f32>,
    chunking: Chunking,
}

impl CustomOp3 for GeluLinearGrad {
    fn name(&self) -> &'static str {
        "gelu-linear-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, k) = l1.shape().dims2()?;
        let (n, wk) = l2.shape().dims2()?;
        if wk != k || self.bias.len() != k || l3.shape().dims() != [rows, n] {
            bail!("gelu-linear backward: shapes {:?}, {:?}, {:?} do not fit", l1.shape(), l2.shape(), l3.shape());
        }
        let (h, w, gy) = (as_f32(self.name(), s1, l1)?, as_f32(self.name(), s2, l2)?, as_f32(self.name(), s3, l3)?);
        let packed = backward(h, &self.bias, w, gy, (rows, k, n), self.chunking);
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}
