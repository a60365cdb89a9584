//! Shared plumbing for the CPU kernels: borrowing `f32` slices out of candle storages.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result};

/// The contiguous `f32` data a layout addresses inside a CPU storage.
///
/// Every public op makes its inputs contiguous first, so a strided layout here is a bug in
/// this crate, reported as an error rather than read wrongly.
pub(crate) fn as_f32<'a>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        other => bail!("{op}: only f32 is supported, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Number of rows to give each rayon task so that a task does at least `min_work` elements.
pub(crate) fn rows_per_task(row_len: usize, min_work: usize) -> usize {
    min_work.div_ceil(row_len.max(1)).max(1)
}

/// Partial sums [`lane_sum`] keeps: one AVX-512 register's worth.
const SUM_LANES: usize = 16;

/// `sum f([a[i], b[i], ...])` over the equally long `rows` (`N` of them), with [`SUM_LANES`]
/// partial sums so that the compiler vectorizes what would otherwise be one long chain of
/// dependent additions; the partial sums are then added pairwise. Reads fixed-size chunks, so
/// that no bounds check stands in the way of the vectorizer (as an index closure it compiled
/// to scalar additions).
#[inline(always)]
pub(crate) fn lane_sum<const N: usize>(rows: [&[f32]; N], f: impl Fn([f32; N]) -> f32) -> f32 {
    let n = rows.first().map_or(0, |r| r.len());
    assert!(rows.iter().all(|r| r.len() == n), "lane_sum: rows of different lengths");
    let full = n / SUM_LANES * SUM_LANES;
    let mut acc = [0f32; SUM_LANES];
    for base in (0..full).step_by(SUM_LANES) {
        let chunk: [&[f32; SUM_LANES]; N] =
            std::array::from_fn(|r| rows[r][base..base + SUM_LANES].try_into().expect("SUM_LANES values"));
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(std::array::from_fn(|r| chunk[r][l]));
        }
    }
    let mut width = SUM_LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0] + (full..n).map(|i| f(std::array::from_fn(|r| rows[r][i]))).sum::<f32>()
}

/// Adds per-task partial sums in task order, so that a reduction gives the same bits whatever
/// the thread count or scheduling (training runs must resume exactly).
pub(crate) fn sum_partials(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut total = vec![0f32; len];
    for part in partials {
        total.iter_mut().zip(&part).for_each(|(t, p)| *t += p);
    }
    total
}

/// Defines `fn $name(args)` that runs its body compiled for AVX-512, or else for AVX2 and FMA,
/// when the CPU has them (checked at run time, cached by std), and for the baseline target
/// otherwise. The body is
/// written once, in plain Rust that the compiler vectorizes, and sees a `const FMA: bool` that
/// says which build it is in (for [`fmadd`]); the binary stays portable.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(unused)]
            fn generic<const FMA: bool>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { generic::<true>($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2_build($($arg: $ty),*) $(-> $ret)? { generic::<true>($($arg),*) }
                let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
                if avx2 && std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the features `avx512` was compiled for were just detected.
                    return unsafe { avx512($($arg),*) };
                }
                if avx2 {
                    // SAFETY: the features `avx2` was compiled for were just detected.
                    return unsafe { avx2_build($($arg),*) };
                }
            }
            generic::<false>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `a * b + c`, fused into one instruction in the FMA build of a [`multiversion`] body and
/// computed as two operations in the baseline build (where a fused multiply-add would be a
/// slow library call).
#[inline(always)]
pub(crate) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Runs `work` on a thread of rayon's global pool, the caller waiting (inline, on that pool,
/// where the caller is a thread of any rayon pool, as a thread rank's is). Every parallel region
/// `work` starts then begins on a worker that takes part in it, instead of handing over from an
/// outside thread to the pool and back, two thread wake-ups per region: ConvNeXt-T at batch 1
/// runs some 40 regions an image. Per-thread settings do not follow `work` to the pool's thread:
/// autocast must be enabled inside it, and a group set with `nextdet_dist::set_thread_world`
/// applies only where `work` runs inline. `work` gets the pool threads' stack (64 MiB as the
/// commands set the pool up, `nextdet_apis::runtime::configure_threads`; rayon's default is
/// smaller than a main thread's), which a detector's backward pass needs.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}
