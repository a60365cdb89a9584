//! The one matrix multiply every op of this crate goes through, on strided operands, writing into
//! memory the caller owns (no zero-fill first): our AVX-512 kernel ([`avx512`]) where the CPU
//! has AVX-512 and the result is row-major, else the `gemm` crate (the one candle uses).
//!
//! Tried and left out: cutting long reductions (weight gradients, `dW = dYᵀ · X` over every
//! position of a batch) into pieces on separate threads. Alone, ConvNeXt-T's first-stage weight
//! gradient went from 104 to 150 GFLOP/s (PyTorch: 166); in the whole training step it was
//! slower (4.0-4.7 against 4.2-4.8 images/s, alternating runs), so the multiply stays one call.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod tests;

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
    #[cfg(target_arch = "x86_64")]
    if dst_cs == 1 && avx512::available() {
        let (lhs, rhs) = (
            avx512::Operand { ptr: lhs, rs: lhs_rs, cs: lhs_cs },
            avx512::Operand { ptr: rhs, rs: rhs_rs, cs: rhs_cs },
        );
        // SAFETY: AVX-512 was detected; the caller's contract covers the operands and `dst`.
        unsafe { avx512::matmul((m, n, k), dst, dst_rs, accumulate, lhs, avx512::Rhs::Strided(rhs), threads) };
        return;
    }
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

/// The number format of the inference multiplies through packed weights (ConvNeXt's pointwise
/// layers, the patch convolutions of the stems and downsampling layers, the classifier heads;
/// the stem's input is the normalized image itself): `f32`, or
/// `bf16` inputs with `f32` accumulation (AVX-512 BF16's `vdpbf16ps`, twice the multiply-adds
/// per instruction; where the CPU lacks it the multiplies stay `f32`). Training always
/// multiplies in `f32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Single precision.
    F32,
    /// Weights and activations rounded to bfloat16, sums in f32.
    Bf16,
}

static PRECISION: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets the process's inference precision (see [`Precision`]).
pub fn set_inference_precision(p: Precision) {
    PRECISION.store(p as u8, std::sync::atomic::Ordering::SeqCst);
}

/// The process's inference precision: [`Precision::Bf16`] only where it was asked for and the
/// CPU runs it.
pub fn inference_precision() -> Precision {
    match PRECISION.load(std::sync::atomic::Ordering::SeqCst) {
        1 if bf16_supported() => Precision::Bf16,
        _ => Precision::F32,
    }
}

/// Whether this CPU has the instructions of the bf16 path (AVX-512 BF16).
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    return avx512::bf16_available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Rows the inference multiply computes as one unit in `precision`: 32 on AMX (one tile
/// block), else the register tile's 12. Work split along rows in whole units wastes none.
pub(crate) fn row_unit(precision: Precision) -> usize {
    #[cfg(target_arch = "x86_64")]
    if precision == Precision::Bf16 && amx::available() && !amx::disabled_for_tests() {
        return 32;
    }
    let _ = precision;
    12
}

/// The packed data of a [`PackedWeight`].
enum Packed {
    F32(Vec<f32>),
    Bf16(Vec<u32>),
}

/// A weight `[n, k]` packed once, as the AVX-512 multiply reads the right-hand side `weightᵀ`
/// (`k x n`), in the inference precision: inference reuses it for every call instead of
/// re-packing (transposing) the weight each time, which dominates the multiply when few rows
/// meet a large weight (ConvNeXt's last stage at batch 1). Built only where that kernel runs.
pub struct PackedWeight {
    k: usize,
    n: usize,
    data: Packed,
}

impl PackedWeight {
    /// Packs `weight` (`[n, k]` row-major) in `precision`, or `None` where the CPU lacks AVX-512
    /// (or AVX-512 BF16 for [`Precision::Bf16`]).
    pub(crate) fn new(weight: &[f32], n: usize, k: usize, precision: Precision) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if avx512::available() && weight.len() == n * k && n * k > 0 {
            let op = avx512::Operand { ptr: weight.as_ptr(), rs: 1, cs: k };
            let data = match precision {
                Precision::Bf16 if avx512::bf16_available() => Packed::Bf16(avx512::pack_all_bf16(op, k, n)),
                Precision::Bf16 => return None,
                Precision::F32 => Packed::F32(avx512::pack_all(op, k, n)),
            };
            return Some(Self { k, n, data });
        }
        let _ = (weight, n, k, precision);
        None
    }

    /// Packs a linear layer's weight `[n, k]`: `None` for a weight that is not f32 on the CPU, or
    /// where the CPU lacks AVX-512 (or AVX-512 BF16 for [`Precision::Bf16`]).
    pub fn from_weight(weight: &candle_core::Tensor, precision: Precision) -> candle_core::Result<Option<Self>> {
        if !weight.device().is_cpu() || weight.dtype() != candle_core::DType::F32 || !Self::runs(precision) {
            return Ok(None);
        }
        let (n, k) = weight.dims2()?;
        let w = weight.detach().contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self::new(&w, n, k, precision))
    }

    /// Whether this CPU runs the packed multiply in `precision` (AVX-512, and AVX-512 BF16 for
    /// bf16), checked before a weight is copied for packing.
    pub(crate) fn runs(precision: Precision) -> bool {
        #[cfg(target_arch = "x86_64")]
        return match precision {
            Precision::F32 => avx512::available(),
            Precision::Bf16 => avx512::bf16_available(),
        };
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = precision;
            false
        }
    }

    /// `(k, n)`: the input and output features.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The precision it was packed in.
    pub fn precision(&self) -> Precision {
        match self.data {
            Packed::F32(_) => Precision::F32,
            Packed::Bf16(_) => Precision::Bf16,
        }
    }
}

/// `dst (m x n, row-major) = lhs (m x k, row-major) · weightᵀ` with a packed weight (in bf16,
/// the rows are rounded to bf16 first).
///
/// # Safety
/// `lhs` holds `m * k` and `dst` room for `m * n` floats, not overlapping.
pub(crate) unsafe fn matmul_packed(m: usize, dst: *mut f32, lhs: *const f32, w: &PackedWeight, parallel: bool) {
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    #[cfg(target_arch = "x86_64")]
    match &w.data {
        Packed::F32(data) => {
            let a = avx512::Operand { ptr: lhs, rs: w.k, cs: 1 };
            // SAFETY: a PackedWeight exists only where AVX-512 was detected; sizes per the contract.
            unsafe { avx512::matmul((m, w.n, w.k), dst, w.n, false, a, avx512::Rhs::Packed(data), threads) };
        }
        Packed::Bf16(data) => {
            // SAFETY: the caller's contract: lhs holds m * k floats.
            let a = avx512::rows_to_bf16(unsafe { std::slice::from_raw_parts(lhs, m * w.k) }, m, w.k);
            // SAFETY: a bf16 PackedWeight exists only where AVX-512 BF16 was detected.
            unsafe { avx512::matmul_bf16((m, w.n, w.k), dst, &a, data, threads) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, dst, lhs, threads);
        unreachable!("a PackedWeight exists only where AVX-512 runs");
    }
}

/// Rows of a left-hand side in bf16, laid out as the bf16 multiply reads them (each row
/// rounded up to 32 values, zero past `k`; whole multiples of 32 rows): a caller that computes
/// its rows (an activation) writes them here straight away instead of storing f32 rows first.
pub(crate) struct Bf16Rows {
    data: Vec<u16>,
    k: usize,
    row_len: usize,
}

impl Bf16Rows {
    /// Room for `rows` rows of `k` values, all zero.
    pub(crate) fn zeros(rows: usize, k: usize) -> Self {
        let row_len = k.div_ceil(32) * 32;
        Self { data: vec![0; rows.div_ceil(32) * 32 * row_len], k, row_len }
    }

    /// Rows `0..rows`, row `i` computed in f32 by `fill(i, row)` (`k` values) and stored
    /// rounded to bf16; the rows shared out over the rayon pool when `parallel`.
    pub(crate) fn fill_rows(&mut self, rows: usize, parallel: bool, fill: impl Fn(usize, &mut [f32]) + Sync) {
        assert!(rows <= self.capacity(), "{rows} bf16 rows past the capacity");
        let (k, row_len) = (self.k, self.row_len);
        let per_task = if parallel { rows.div_ceil(rayon::current_num_threads()).max(1) } else { rows.max(1) };
        let task = |(t, part): (usize, &mut [u16])| {
            let mut row = vec![0f32; k];
            for (r, out) in part.chunks_exact_mut(row_len).enumerate() {
                fill(t * per_task + r, &mut row);
                #[cfg(target_arch = "x86_64")]
                avx512::row_to_bf16(&row, out);
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("bf16 rows exist only where AVX-512 BF16 runs: {out:?}");
            }
        };
        let data = &mut self.data[..rows * row_len];
        if parallel {
            data.par_chunks_mut(per_task * row_len).enumerate().for_each(task);
        } else {
            data.chunks_mut(per_task * row_len).enumerate().for_each(task);
        }
    }

    /// How many rows it has room for.
    pub(crate) fn capacity(&self) -> usize {
        self.data.len() / self.row_len.max(1)
    }
}

/// `dst (m x n, row-major) = a · weightᵀ` with rows already in bf16 and a bf16 packed weight.
///
/// # Safety
/// `dst` has room for `m * n` floats, not written by anyone else meanwhile.
pub(crate) unsafe fn matmul_packed_bf16(m: usize, dst: *mut f32, a: &Bf16Rows, w: &PackedWeight, parallel: bool) {
    assert!(a.k == w.k && m <= a.capacity(), "bf16 rows do not fit the packed weight");
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    #[cfg(target_arch = "x86_64")]
    match &w.data {
        // SAFETY: a bf16 PackedWeight exists only where AVX-512 BF16 was detected; the rows
        // have the layout of `rows_to_bf16`.
        Packed::Bf16(data) => unsafe { avx512::matmul_bf16((m, w.n, w.k), dst, &a.data, data, threads) },
        Packed::F32(_) => panic!("matmul_packed_bf16 needs a weight packed in bf16"),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, dst, threads);
        unreachable!("a bf16 PackedWeight exists only where AVX-512 BF16 runs");
    }
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
