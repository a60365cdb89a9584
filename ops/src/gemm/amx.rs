//! The bf16 multiply on Intel AMX (Advanced Matrix Extensions, Sapphire Rapids and later):
//! eight tile registers of 16 rows x 64 bytes and `tdpbf16ps`, which adds a 16 x 32 bf16 tile
//! times a 32 x 16 (pair-interleaved) bf16 tile into a 16 x 16 f32 tile, 8192 multiply-adds in
//! one instruction (Intel's "Intel 64 and IA-32 Architectures Optimization Reference Manual",
//! the AMX chapter). A 32 x 32 block of the result lives in four tiles for the whole of `k`.
//!
//! The tile instructions are written with `asm!` (Rust's AMX intrinsics are not stable): they
//! name the tile registers themselves, which no compiled Rust code uses. Linux hands out the
//! tile state only to a process that asks (`arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)`), and
//! each thread loads the tile shapes (`ldtilecfg`) before its first tile instruction.

use super::avx512::{bf16_row_len, block_pairs, KC, NR};
use super::SendPtr;
use rayon::prelude::*;
use std::arch::asm;
use std::cell::Cell;
use std::sync::OnceLock;

/// Rows and columns of the result block one kernel call computes.
const BLOCK: usize = 32;

/// Whether the CPU has AMX-BF16 and the kernel granted this process the tile state (asked once).
pub(super) fn available() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    *GRANTED.get_or_init(|| has_amx_bf16() && request_tile_state())
}

/// CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE (`is_x86_feature_detected!` knows
/// them only on nightly).
fn has_amx_bf16() -> bool {
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    edx & (1 << 22) != 0 && edx & (1 << 24) != 0
}

static DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a test turned AMX off to compare with the AVX-512 BF16 kernel.
pub(super) fn disabled_for_tests() -> bool {
    DISABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Turns the AMX kernel off (or back on) for this process; for tests comparing the two bf16
/// kernels.
#[cfg(test)]
pub(super) fn disable_for_tests(off: bool) {
    DISABLED.store(off, std::sync::atomic::Ordering::Relaxed);
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` (Linux `arch/x86/include/uapi/asm/prctl.h`).
fn request_tile_state() -> bool {
    #[cfg(target_os = "linux")]
    {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: a system call with integer arguments that changes no memory of this process.
        unsafe {
            asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM,
                 in("rsi") XFEATURE_XTILEDATA, lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret == 0
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// The 64-byte tile configuration of `ldtilecfg` (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

thread_local! {
    /// Whether this thread has loaded the tile configuration.
    static CONFIGURED: Cell<bool> = const { Cell::new(false) };
}

/// Loads the tile shapes on this thread once: all eight tiles 16 rows x 64 bytes.
fn configure_thread() {
    CONFIGURED.with(|done| {
        if !done.get() {
            let mut cfg = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
            for t in 0..8 {
                cfg.colsb[t] = 64;
                cfg.rows[t] = 16;
            }
            // SAFETY: AMX was granted (`available`); the configuration is a valid palette-1 one.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack)) };
            done.set(true);
        }
    });
}

/// `dst (m x n, row stride n) = a · b`: `a` from `rows_to_bf16` (rows of `bf16_row_len(k)`,
/// zero rows up to a multiple of 32), `b` from `pack_all_bf16`; tasks own whole 32 x 32 blocks.
///
/// # Safety
/// [`available`] returned true; `dst` has room for `m * n` floats, untouched meanwhile.
pub(super) unsafe fn matmul((m, n, k): (usize, usize, usize), dst: *mut f32, a: &[u16], b: &[u32], threads: usize) {
    let k2 = bf16_row_len(k);
    let panels = n.div_ceil(NR);
    let row_blocks = m.div_ceil(BLOCK);
    // where each k block's panels start in `b`
    let blocks: Vec<(usize, usize)> = (0..k)
        .step_by(KC)
        .scan(0, |offset, pc| {
            let pairs = block_pairs(KC.min(k - pc));
            let start = *offset;
            *offset += panels * NR * pairs;
            Some((start, pairs))
        })
        .collect();
    let tasks: Vec<(usize, usize)> = (0..row_blocks).flat_map(|r| (0..panels).map(move |p| (r, p))).collect();
    let per_task = tasks.len().div_ceil((4 * threads).max(1)).max(1);
    let dst = SendPtr(dst);
    let run = |chunk: &[(usize, usize)]| {
        configure_thread();
        let mut c = [0f32; BLOCK * BLOCK];
        for &(r, p) in chunk {
            // SAFETY: rows r*32..r*32+32 of `a` exist (zero-padded); the panel pointers stay in `b`.
            unsafe { block(&blocks, a.as_ptr().add(r * BLOCK * k2), k2, b.as_ptr(), p, &mut c) };
            let (rows, cols) = (BLOCK.min(m - r * BLOCK), NR.min(n - p * NR));
            for i in 0..rows {
                // SAFETY: row r*32+i < m and columns p*32..p*32+cols < n of `dst`, written only here.
                unsafe {
                    let d = dst.get().add((r * BLOCK + i) * n + p * NR);
                    std::ptr::copy_nonoverlapping(c.as_ptr().add(i * BLOCK), d, cols);
                }
            }
        }
    };
    if threads > 1 && tasks.len() > 1 {
        tasks.par_chunks(per_task).for_each(run);
    } else {
        run(&tasks);
    }
}

/// One 32 x 32 block of the result into `c` (row-major): rows of `a` from `a_rows` (`k2` bf16
/// apart), columns of panel `p`, summed over every block of `k`.
unsafe fn block(blocks: &[(usize, usize)], a_rows: *const u16, k2: usize, b: *const u32, p: usize, c: &mut [f32]) {
    asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack));
    let (astride, bstride) = (k2 * 2, NR * 4);
    let mut kk = 0; // position in the bf16 row
    for &(start, pairs) in blocks {
        let panel = b.add(start + p * NR * pairs);
        for q in (0..pairs).step_by(16) {
            let a0 = a_rows.add(kk + 2 * q);
            let a1 = a0.add(16 * k2);
            let b0 = panel.add(q * NR);
            let b1 = b0.add(16);
            asm!(
                "tileloadd tmm4, [{a0} + {as_}]",
                "tileloadd tmm5, [{a1} + {as_}]",
                "tileloadd tmm6, [{b0} + {bs}]",
                "tileloadd tmm7, [{b1} + {bs}]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                as_ = in(reg) astride, bs = in(reg) bstride, options(nostack));
        }
        kk += 2 * pairs;
    }
    let cs = BLOCK * 4;
    let cp = c.as_mut_ptr();
    asm!(
        "tilestored [{c0} + {cs}], tmm0",
        "tilestored [{c1} + {cs}], tmm1",
        "tilestored [{c2} + {cs}], tmm2",
        "tilestored [{c3} + {cs}], tmm3",
        c0 = in(reg) cp, c1 = in(reg) cp.add(16), c2 = in(reg) cp.add(16 * BLOCK), c3 = in(reg) cp.add(16 * BLOCK + 16),
        cs = in(reg) cs, options(nostack));
}
