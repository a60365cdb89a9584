//! An AVX-512 single-precision matrix multiply in the BLIS layout (Goto & van de Geijn, "Anatomy
//! of high-performance matrix multiplication"; the BLIS `haswell`/`skx` kernels): `k` is cut into
//! blocks of [`KC`]; per block, the right-hand side is packed once into panels of [`NR`] columns,
//! and each task packs its rows of the left-hand side into panels of [`MR`] rows and runs a
//! 12 x 32 register tile (24 accumulators, two 16-float loads of the packed right-hand side and
//! 12 broadcasts per step of `k`).
//!
//! Every element of the result is summed over `k` in the same order whatever the number of
//! threads (a task owns whole output tiles, the `k` blocks run one after another), so the bits
//! do not depend on the thread count.

use super::SendPtr;
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Rows of the register tile.
const MR: usize = 12;
/// Columns of the register tile (two vectors of 16), and of a packed panel.
pub(super) const NR: usize = 32;
/// Depth of a block of `k`: a packed [`NR`]-column panel (32 KiB) stays in L1.
pub(super) const KC: usize = 256;
/// Rows of the left-hand side one task packs and multiplies (a 144 x 256 block, 144 KiB, in L2).
const MC: usize = 144;

/// Floats of a pre-packed right-hand side (1 MiB, half a core's L2 here) past which each tile
/// fetches the task's next weight panel into L2 while it multiplies (ConvNeXt-T's last two
/// stages). Below it the tile fetches its own panel again, a no-op that costs two instructions
/// a step: fetching ahead there measured 1-2% slower on the first stage's shapes.
const STREAMED_FLOATS: usize = 1 << 18;

/// A matrix operand: a pointer with its row and column strides (in elements).
#[derive(Clone, Copy)]
pub(super) struct Operand {
    /// The first element.
    pub ptr: *const f32,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

// SAFETY: only read, by tasks that each read a part of the matrix.
unsafe impl Send for Operand {}
// SAFETY: as above.
unsafe impl Sync for Operand {}

/// Where the right-hand side comes from.
#[derive(Clone, Copy)]
pub(super) enum Rhs<'a> {
    /// A strided matrix, packed during the multiply.
    Strided(Operand),
    /// Packed already by [`pack_all`] (for every block of `k`).
    Packed(&'a [f32]),
}

/// The whole `k x n` right-hand side packed as [`matmul`] reads it: for each block of `k` in
/// turn, its `NR`-column panels.
pub(super) fn pack_all(rhs: Operand, k: usize, n: usize) -> Vec<f32> {
    let panels = n.div_ceil(NR);
    let mut out = vec![0f32; panels * NR * k];
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        // SAFETY: the caller of the safe wrapper guarantees the operand covers k x n.
        unsafe { pack_rhs_panels(rhs, pc, kc, n, 0, &mut out[panels * NR * pc..panels * NR * (pc + kc)], 1) };
    }
    out
}

/// Whether this CPU runs the kernel.
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// `dst (m x n, row stride drs, column stride 1) = [dst +] lhs (m x k) · rhs (k x n)` on
/// `threads` rayon threads (1: on the calling thread).
///
/// A row-major left-hand side is read in place (the tile broadcasts its elements row by row);
/// any other is packed. The right-hand side is packed: once per block of `k` for all tasks when
/// the product has many rows, else by each task for its own panels just before it uses them
/// (so that a large weight read by few rows is transposed through L1, not twice through memory).
///
/// # Safety
/// [`available`] returned true; every addressed element lies in a live allocation; `dst` does
/// not overlap the operands and nobody else touches it meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    drs: usize,
    accumulate: bool,
    lhs: Operand,
    rhs: Rhs<'_>,
    threads: usize,
) {
    let split = Split::new(m, n, threads);
    let (panels, tasks) = (split.panels, &split.tasks);
    let shared_b = split.row_blocks > 2 * threads;
    let prepacked = match rhs {
        Rhs::Packed(data) => Some(data),
        Rhs::Strided(_) => None,
    };
    let mut packed_b = if shared_b && prepacked.is_none() { vec![0f32; panels * NR * KC.min(k)] } else { Vec::new() };
    let direct_a = lhs.cs == 1;
    // a weight larger than a core's L2 comes from memory panel by panel
    let streams = k * n > STREAMED_FLOATS;
    let dst = SendPtr(dst);
    // One task's tiles over the block of `k` from `pc`, with `b_all` that block's panels where
    // they are packed for every task.
    let run = |pc: usize, b_all: &[f32], &(rb, p0): &(usize, usize)| {
        let kc = KC.min(k - pc);
        let first = pc == 0 && !accumulate;
        let (i0, mc, p1) = split.task(rb, p0);
        let a_packed;
        // (pointer, row stride, column stride) of the task's rows of the left-hand side
        let a = if direct_a {
            // SAFETY: row i0 lies inside the operand.
            (unsafe { lhs.ptr.add(i0 * lhs.rs + pc) }, lhs.rs, 1)
        } else {
            let mut buf = vec![0f32; mc.div_ceil(MR) * MR * kc];
            // SAFETY: the caller's contract.
            unsafe { pack_lhs(lhs, i0, mc, pc, kc, &mut buf) };
            a_packed = buf;
            (a_packed.as_ptr(), 0, 0)
        };
        let own_packing = match rhs {
            Rhs::Strided(op) if !shared_b => Some(op),
            _ => None,
        };
        let mut own_b = if own_packing.is_some() { vec![0f32; NR * kc] } else { Vec::new() };
        for p in p0..p1 {
            let cols = NR.min(n - p * NR);
            let b = match own_packing {
                Some(op) => {
                    // SAFETY: the caller's contract.
                    unsafe { pack_rhs_panels(op, pc, kc, n, p, &mut own_b, 1) };
                    &own_b[..]
                }
                None => &b_all[p * NR * kc..(p + 1) * NR * kc],
            };
            // the panel the task takes next, fetched while this one is in use: the next one of
            // a pre-packed weight (whose panels stream from memory), else this one again
            let next = match (prepacked, p + 1 < p1 && streams) {
                (Some(_), true) => b_all[(p + 1) * NR * kc..].as_ptr(),
                _ => b.as_ptr(),
            };
            for ir in 0..mc.div_ceil(MR) {
                let rows = MR.min(mc - ir * MR);
                // SAFETY: this task writes rows i0..i0+mc of columns p*NR..p*NR+cols, which no
                // other task writes; the tile reads only inside the operands.
                unsafe {
                    let c = dst.get().add((i0 + ir * MR) * drs + p * NR);
                    if direct_a {
                        let ap = a.0.add(ir * MR * a.1);
                        tile(kc, ap, a.1, 1, (b.as_ptr(), next), c, drs, rows, cols, !first);
                    } else {
                        let ap = a.0.add(ir * MR * kc);
                        tile(kc, ap, 1, MR, (b.as_ptr(), next), c, drs, rows, cols, !first);
                    }
                }
            }
        }
    };
    let parallel = threads > 1 && tasks.len() > 1;
    match (prepacked, rhs) {
        (None, Rhs::Strided(op)) if shared_b => {
            // every task needs each block of `k` packed before it starts: one pass per block
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                // SAFETY: the caller's contract.
                unsafe { pack_rhs_panels(op, pc, kc, n, 0, &mut packed_b[..panels * NR * kc], threads) };
                let b_all = &packed_b[..];
                if parallel {
                    tasks.par_iter().for_each(|t| run(pc, b_all, t));
                } else {
                    tasks.iter().for_each(|t| run(pc, b_all, t));
                }
            }
        }
        _ => {
            // packed already, or by each task for itself: a task runs all blocks of `k` in turn,
            // without waiting for the others between blocks
            let all_blocks = |t: &(usize, usize)| {
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    let b_all = prepacked.map_or(&[][..], |data| &data[panels * NR * pc..panels * NR * (pc + kc)]);
                    run(pc, b_all, t);
                }
            };
            if parallel {
                tasks.par_iter().for_each(all_blocks);
            } else {
                tasks.iter().for_each(all_blocks);
            }
        }
    }
}

/// How a multiply's `m x n` result is cut into tasks: row blocks a task packs and multiplies,
/// as few as [`MC`] allows and of equal size in whole tiles (196 rows are blocks of 108 and 88,
/// not 144 and 52, so that two threads finish together), times chunks of `NR`-column panels
/// where there are too few row blocks to keep every thread busy.
struct Split {
    m: usize,
    /// `NR`-column panels of the result.
    panels: usize,
    row_blocks: usize,
    block_rows: usize,
    panels_per_chunk: usize,
    /// `(row block, first panel)` of each task.
    tasks: Vec<(usize, usize)>,
}

impl Split {
    fn new(m: usize, n: usize, threads: usize) -> Self {
        let panels = n.div_ceil(NR);
        let row_blocks = m.div_ceil(MC).max(1);
        let block_rows = m.div_ceil(row_blocks).div_ceil(MR) * MR;
        let col_chunks = if threads > 1 { (2 * threads).div_ceil(row_blocks).clamp(1, panels) } else { 1 };
        let panels_per_chunk = panels.div_ceil(col_chunks);
        let tasks =
            (0..row_blocks).flat_map(|rb| (0..panels).step_by(panels_per_chunk).map(move |p0| (rb, p0))).collect();
        Self { m, panels, row_blocks, block_rows, panels_per_chunk, tasks }
    }

    /// `(first row, rows, end panel)` of the task `(rb, p0)`.
    fn task(&self, rb: usize, p0: usize) -> (usize, usize, usize) {
        let i0 = rb * self.block_rows;
        (i0, self.block_rows.min(self.m - i0), (p0 + self.panels_per_chunk).min(self.panels))
    }
}

/// Packs rows `pc..pc+kc` of the `k x n` right-hand side into `NR`-column panels, from panel
/// `first` on, each `[kc][NR]` with zeros past column `n`.
unsafe fn pack_rhs_panels(rhs: Operand, pc: usize, kc: usize, n: usize, first: usize, out: &mut [f32], threads: usize) {
    let rhs = &rhs; // captured whole: the operand is Sync, its raw pointer field alone is not
    let pack_panel = |(i, panel): (usize, &mut [f32])| {
        let p = first + i;
        let cols = NR.min(n - p * NR);
        // SAFETY: rows pc..pc+kc and columns p*NR..p*NR+cols lie inside the operand.
        unsafe {
            let base = rhs.ptr.add(pc * rhs.rs + p * NR * rhs.cs);
            if rhs.cs == 1 {
                for q in 0..kc {
                    let row = &mut panel[q * NR..q * NR + NR];
                    std::ptr::copy_nonoverlapping(base.add(q * rhs.rs), row.as_mut_ptr(), cols);
                    row[cols..].fill(0.0);
                }
            } else if rhs.rs == 1 && cols == NR && NR * rhs.cs <= i32::MAX as usize / 4 {
                gather_columns(base, rhs.cs, kc, panel);
            } else {
                for j in 0..NR {
                    let src = base.add(j.min(cols.saturating_sub(1)) * rhs.cs);
                    for q in 0..kc {
                        panel[q * NR + j] = if j < cols { *src.add(q * rhs.rs) } else { 0.0 };
                    }
                }
            }
        }
    };
    if threads > 1 && out.len() > 4 * NR * kc {
        out.par_chunks_mut(NR * kc).enumerate().for_each(pack_panel);
    } else {
        out.chunks_mut(NR * kc).enumerate().for_each(pack_panel);
    }
}

/// A full panel of a right-hand side stored transposed (element `(q, j)` at `base[q + j *
/// stride]`, a weight `[n, k]` read as `k x n`): for each `q`, two 16-lane gathers down the 32
/// rows.
#[target_feature(enable = "avx512f")]
unsafe fn gather_columns(base: *const f32, stride: usize, kc: usize, panel: &mut [f32]) {
    let s = stride as i32;
    let lo = _mm512_setr_epi32(
        0,
        s,
        2 * s,
        3 * s,
        4 * s,
        5 * s,
        6 * s,
        7 * s,
        8 * s,
        9 * s,
        10 * s,
        11 * s,
        12 * s,
        13 * s,
        14 * s,
        15 * s,
    );
    let hi = _mm512_add_epi32(lo, _mm512_set1_epi32(16 * s));
    let out = panel.as_mut_ptr();
    for q in 0..kc {
        let src = base.add(q);
        _mm512_storeu_ps(out.add(q * NR), _mm512_i32gather_ps::<4>(lo, src));
        _mm512_storeu_ps(out.add(q * NR + 16), _mm512_i32gather_ps::<4>(hi, src));
    }
}

/// Packs rows `i0..i0+mc`, columns `pc..pc+kc` of the left-hand side into `MR`-row panels, each
/// `[kc][MR]` with zeros past row `mc`.
unsafe fn pack_lhs(lhs: Operand, i0: usize, mc: usize, pc: usize, kc: usize, out: &mut [f32]) {
    for (ip, panel) in out.chunks_exact_mut(MR * kc).enumerate() {
        let rows = MR.min(mc - ip * MR);
        let base = lhs.ptr.add((i0 + ip * MR) * lhs.rs + pc * lhs.cs);
        if lhs.rs == 1 {
            for q in 0..kc {
                let col = &mut panel[q * MR..q * MR + MR];
                std::ptr::copy_nonoverlapping(base.add(q * lhs.cs), col.as_mut_ptr(), rows);
                col[rows..].fill(0.0);
            }
        } else {
            for r in 0..MR {
                let src = base.add(r.min(rows - 1) * lhs.rs);
                for q in 0..kc {
                    panel[q * MR + r] = if r < rows { *src.add(q * lhs.cs) } else { 0.0 };
                }
            }
        }
    }
}

/// `kernel::<R>(args)` with the const `R` equal to `rows` (1 to [`MR`]): the
/// tile kernels exist for every height, so that the last rows of a block cost what they compute.
macro_rules! by_height {
    ($rows:expr, $kernel:ident($($arg:expr),*)) => {
        match $rows {
            1 => $kernel::<1>($($arg),*),
            2 => $kernel::<2>($($arg),*),
            3 => $kernel::<3>($($arg),*),
            4 => $kernel::<4>($($arg),*),
            5 => $kernel::<5>($($arg),*),
            6 => $kernel::<6>($($arg),*),
            7 => $kernel::<7>($($arg),*),
            8 => $kernel::<8>($($arg),*),
            9 => $kernel::<9>($($arg),*),
            10 => $kernel::<10>($($arg),*),
            11 => $kernel::<11>($($arg),*),
            MR => $kernel::<MR>($($arg),*),
            other => unreachable!("a tile of {other} rows"),
        }
    };
}

/// One tile of `rows` (1 to `MR`) x `NR`: `c[rows x cols] = [c +] a · b`, where element
/// `(i, q)` of `a` is at `a[i * ars + q * acs]` and `b` is `(panel, next)`: the packed `[kc][NR]`
/// panel, and the one to fetch into L2 meanwhile (the same one where none is worth it). A tile of
/// fewer rows runs a kernel of exactly that many (ConvNeXt-T's last stage at batch 1 has 49 rows:
/// four full tiles and one of a single row, which a full-height kernel would compute 12 times).
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    kc: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    b: (*const f32, *const f32),
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    load: bool,
) {
    by_height!(rows, tile_rows(kc, a, ars, acs, b, c, ldc, cols, load))
}

/// [`tile`] for exactly `R` rows.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_rows<const R: usize>(
    kc: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    (b, next): (*const f32, *const f32),
    c: *mut f32,
    ldc: usize,
    cols: usize,
    load: bool,
) {
    let row: [*const f32; R] = std::array::from_fn(|i| a.add(i * ars));
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for q in 0..kc {
        _mm_prefetch::<_MM_HINT_T1>(next.add(q * NR) as *const i8);
        _mm_prefetch::<_MM_HINT_T1>(next.add(q * NR + 16) as *const i8);
        let b0 = _mm512_loadu_ps(b.add(q * NR));
        let b1 = _mm512_loadu_ps(b.add(q * NR + 16));
        let off = q * acs;
        for i in 0..R {
            let ai = _mm512_set1_ps(*row[i].add(off));
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    store_tile(&acc, c, ldc, cols, load);
}

/// Writes the first `cols` columns of an accumulator tile of `R` rows to `c` (`ldc` floats a
/// row), added to what is there when `load`. Always inlined into the AVX-512 kernels that call
/// it, so that the accumulators go from registers to `c` (as a call of its own, the tile was
/// zeroed, spilled to the stack and reloaded on every call).
#[inline(always)]
unsafe fn store_tile<const R: usize>(acc: &[[__m512; 2]; R], c: *mut f32, ldc: usize, cols: usize, load: bool) {
    let m0: __mmask16 = if cols >= 16 { 0xffff } else { ((1u32 << cols) - 1) as __mmask16 };
    let m1: __mmask16 = if cols >= 32 {
        0xffff
    } else if cols > 16 {
        ((1u32 << (cols - 16)) - 1) as __mmask16
    } else {
        0
    };
    for (i, row) in acc.iter().enumerate() {
        let ci = c.add(i * ldc);
        let (mut v0, mut v1) = (row[0], row[1]);
        if load {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci.add(16)));
        }
        _mm512_mask_storeu_ps(ci, m0, v0);
        _mm512_mask_storeu_ps(ci.add(16), m1, v1);
    }
}

/// Pairs of `k` a block of `kc` rows takes in the bf16 layouts: rounded up to 16 (one AMX tile
/// row of 32 bf16), the extra pairs zero.
pub(super) fn block_pairs(kc: usize) -> usize {
    kc.div_ceil(32) * 16
}

/// Elements of a bf16 row of `k` values: rounded up to 32, the extra ones zero.
pub(super) fn bf16_row_len(k: usize) -> usize {
    k.div_ceil(32) * 32
}

/// The whole `k x n` right-hand side packed for the bf16 kernels: for each block of `k`, its
/// `NR`-column panels of [`block_pairs`] pairs, each lane one `u32` holding the bf16 values of
/// rows `2q` and `2q + 1` (zero past `k` and past `n`): the operand layout of `vdpbf16ps` and of
/// AMX's `tdpbf16ps`.
pub(super) fn pack_all_bf16(rhs: Operand, k: usize, n: usize) -> Vec<u32> {
    let f32_panels = pack_all(rhs, k, n);
    let panels = n.div_ceil(NR);
    let mut out = Vec::with_capacity(panels * NR * bf16_row_len(k) / 2);
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        let block = &f32_panels[panels * NR * pc..panels * NR * (pc + kc)];
        for panel in block.chunks_exact(NR * kc) {
            for q2 in 0..block_pairs(kc) {
                for j in 0..NR {
                    let at = |q: usize| if q < kc { bf16_bits(panel[q * NR + j]) } else { 0 };
                    out.push(u32::from(at(2 * q2)) | (u32::from(at(2 * q2 + 1)) << 16));
                }
            }
        }
    }
    out
}

/// The bf16 nearest to `x`, ties to even (what `vcvtneps2bf16` gives; NaN stays NaN).
pub(super) fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    ((b + round) >> 16) as u16
}

/// Rows of `a` (`m x k`, row-major f32) as bf16 rows of [`bf16_row_len`] values, with zero rows
/// after the last up to a multiple of 32 (the AMX kernel loads 32 rows at a time).
pub(super) fn rows_to_bf16(a: &[f32], m: usize, k: usize) -> Vec<u16> {
    let k2 = bf16_row_len(k);
    let mut out = vec![0u16; m.div_ceil(32) * 32 * k2];
    let task_rows = (1 << 14) / k2.max(1) + 1;
    out[..m * k2].par_chunks_mut(k2 * task_rows).zip(a.par_chunks(k * task_rows)).for_each(|(o, i)| {
        for (orow, irow) in o.chunks_exact_mut(k2).zip(i.chunks_exact(k)) {
            // SAFETY: AVX-512 BF16 was detected before any bf16 weight could be packed.
            unsafe { convert_row(irow, orow) };
        }
    });
    out
}

/// One row of f32 values as bf16 (`dst` at least as long as `src`).
pub(super) fn row_to_bf16(src: &[f32], dst: &mut [u16]) {
    assert!(dst.len() >= src.len() && bf16_available());
    // SAFETY: AVX-512 BF16 was just checked; the lengths fit.
    unsafe { convert_row(src, dst) }
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_row(src: &[f32], dst: &mut [u16]) {
    let mut i = 0;
    while i + 16 <= src.len() {
        let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src.as_ptr().add(i)));
        _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(v));
        i += 16;
    }
    for j in i..src.len() {
        dst[j] = bf16_bits(src[j]);
    }
}

/// Whether this CPU runs the bf16 kernel.
pub(super) fn bf16_available() -> bool {
    available() && std::is_x86_feature_detected!("avx512bf16")
}

/// `dst (m x n, row stride n) = a (m x k, from [`rows_to_bf16`]) · b` (packed by
/// [`pack_all_bf16`]), f32 accumulation: on AMX where the CPU has it, else with `vdpbf16ps`
/// tiles split into tasks as [`matmul`].
///
/// # Safety
/// [`bf16_available`] returned true; `dst` has room for `m * n` floats, untouched meanwhile.
pub(super) unsafe fn matmul_bf16(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    a: &[u16],
    b: &[u32],
    threads: usize,
) {
    if super::amx::available() && !super::amx::disabled_for_tests() {
        // SAFETY: AMX was detected and enabled; the layouts are the ones it reads.
        unsafe { super::amx::matmul((m, n, k), dst, a, b, threads) };
        return;
    }
    let k2 = bf16_row_len(k);
    let split = Split::new(m, n, threads);
    let (panels, tasks) = (split.panels, &split.tasks);
    let dst = SendPtr(dst);
    // bf16 values take half the bytes of f32 ones
    let streams = k * n > 2 * STREAMED_FLOATS;
    // a task runs all blocks of `k` in turn (the weight is packed already: no task waits for
    // another between blocks)
    let run = |&(rb, p0): &(usize, usize)| {
        let (i0, mc, p1) = split.task(rb, p0);
        let mut offset = 0; // start of the current k block's panels in `b`
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let pairs = block_pairs(kc);
            let block = &b[offset..offset + panels * NR * pairs];
            offset += panels * NR * pairs;
            for p in p0..p1 {
                let cols = NR.min(n - p * NR);
                let bp = &block[p * NR * pairs..(p + 1) * NR * pairs];
                // the next panel fetched ahead where the weight streams from memory (as in `matmul`)
                let next = if streams && p + 1 < p1 { block[(p + 1) * NR * pairs..].as_ptr() } else { bp.as_ptr() };
                for ir in 0..mc.div_ceil(MR) {
                    let rows = MR.min(mc - ir * MR);
                    // SAFETY: rows i0+ir*MR.. of `a` (row length k2) exist; this task alone writes
                    // these rows of these columns of `dst`.
                    unsafe {
                        let ap = a.as_ptr().add((i0 + ir * MR) * k2 + pc);
                        let c = dst.get().add((i0 + ir * MR) * n + p * NR);
                        tile_bf16(pairs, ap, k2, (bp.as_ptr(), next), c, n, rows, cols, pc > 0);
                    }
                }
            }
        }
    };
    if threads > 1 && tasks.len() > 1 {
        tasks.par_iter().for_each(run);
    } else {
        tasks.iter().for_each(run);
    }
}

/// One tile of `rows` (1 to `MR`) x `NR` in bf16: `c = [c +] a · b` over `pairs` pairs of `k`,
/// `a` rows `ars` bf16 apart, `b` a packed pair panel and the one to fetch meanwhile; as
/// [`tile`], a kernel of exactly `rows`.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_bf16(
    pairs: usize,
    a: *const u16,
    ars: usize,
    b: (*const u32, *const u32),
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    load: bool,
) {
    by_height!(rows, tile_bf16_rows(pairs, a, ars, b, c, ldc, cols, load))
}

/// [`tile_bf16`] for exactly `R` rows.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_bf16_rows<const R: usize>(
    pairs: usize,
    a: *const u16,
    ars: usize,
    (b, next): (*const u32, *const u32),
    c: *mut f32,
    ldc: usize,
    cols: usize,
    load: bool,
) {
    let row: [*const u16; R] = std::array::from_fn(|i| a.add(i * ars));
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for q in 0..pairs {
        _mm_prefetch::<_MM_HINT_T1>(next.add(q * NR) as *const i8);
        _mm_prefetch::<_MM_HINT_T1>(next.add(q * NR + 16) as *const i8);
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR) as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR + 16) as *const _));
        for i in 0..R {
            let pair = (row[i].add(2 * q) as *const i32).read_unaligned();
            let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
        }
    }
    store_tile(&acc, c, ldc, cols, load);
}
