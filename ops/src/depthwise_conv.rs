//! Depthwise 2-D convolution: odd square kernel, stride 1, "same" zero padding, one filter per
//! channel (PyTorch's `Conv2d(C, C, k, padding=k//2, groups=C)`).
//!
//! The kernel works channels-last so that its innermost loop runs over contiguous channels; the
//! weight keeps PyTorch's `[C, 1, k, k]` shape so checkpoints load unchanged.

use crate::cpu::{as_f32, fmadd, multiversion, rows_per_task, sum_partials};
use crate::layer_norm::{layer_norm_grads, norm_rows_in_place};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Depthwise convolution of channels-last `x: [N, H, W, C]` with `weight: [C, 1, k, k]` and
/// `bias: [C]`; returns `[N, H, W, C]`. Differentiable in all three arguments.
pub fn depthwise_conv2d_nhwc(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    check_weight(x.dim(3)?, weight, bias)?;
    if x.elem_count() == 0 {
        return x.zeros_like();
    }
    #[cfg(feature = "cuda")]
    if crate::generic::cuda_f32(x) {
        return crate::cuda::depthwise_conv2d_nhwc(x, weight, bias);
    }
    if !crate::generic::fast_cpu(x) {
        return crate::generic::depthwise_conv2d_nhwc(x, weight, bias);
    }
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, DepthwiseConv { norm_eps: None })
}

/// The depthwise convolution followed by a layer norm over channels (`norm_weight`,
/// `norm_bias`: `[C]`), as a ConvNeXt block starts: each output row is normalized while it is
/// still in cache. Differentiable in all five tensors; the backward recomputes the
/// convolution's output instead of keeping it.
pub fn depthwise_conv2d_layer_norm_nhwc(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    norm_weight: &Tensor,
    norm_bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let c = x.dim(3)?;
    check_weight(c, weight, bias)?;
    if norm_weight.dims() != [c] || norm_bias.dims() != [c] {
        bail!(
            "depthwise_conv2d_layer_norm: norm {:?} / {:?} do not fit {c} channels",
            norm_weight.dims(),
            norm_bias.dims()
        );
    }
    if x.elem_count() == 0 {
        return x.zeros_like();
    }
    #[cfg(feature = "cuda")]
    if crate::generic::cuda_f32(x) {
        let y = crate::cuda::depthwise_conv2d_nhwc(x, weight, bias)?;
        return crate::generic::layer_norm(&y, norm_weight, norm_bias, eps);
    }
    if !crate::generic::fast_cpu(x) {
        return crate::generic::depthwise_conv2d_layer_norm_nhwc(x, weight, bias, norm_weight, norm_bias, eps);
    }
    let params = Tensor::stack(&[bias, norm_weight, norm_bias], 0)?;
    x.contiguous()?.apply_op3(&weight.contiguous()?, &params, DepthwiseConv { norm_eps: Some(eps as f32) })
}

/// Checks a `[C, 1, k, k]` weight (odd square `k`) and `[C]` bias against `c` channels.
pub(crate) fn check_weight(c: usize, weight: &Tensor, bias: &Tensor) -> Result<()> {
    let (wc, one, kh, kw) = weight.dims4()?;
    if wc != c || one != 1 || kh != kw || kh % 2 == 0 {
        bail!("depthwise_conv2d: weight {:?} does not fit {c} channels with an odd square kernel", weight.dims());
    }
    if bias.dims() != [c] {
        bail!("depthwise_conv2d: bias {:?} does not fit {c} channels", bias.dims());
    }
    Ok(())
}

/// The same convolution on PyTorch's `[N, C, H, W]` layout (permutes around the NHWC kernel).
pub fn depthwise_conv2d_nchw(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let y = depthwise_conv2d_nhwc(&x.permute((0, 2, 3, 1))?, weight, bias)?;
    y.permute((0, 3, 1, 2))?.contiguous()
}

/// Geometry of one call, read from the input shapes.
#[derive(Clone, Copy)]
struct Geom {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    k: usize,
}

/// Channels handled together by the vectorized kernels.
const LANES: usize = 16;
/// Most output pixels of a row the forward kernel accumulates together (a block): with a
/// kernel row's `k` taps in registers, each input value is loaded once per block and kernel
/// row and feeds every output pixel it touches (8 accumulators and 7 taps: 15 of AVX-512's 32
/// vector registers).
const MAX_PIX: usize = 8;

impl Geom {
    fn of(x: &Layout, w: &Layout) -> Result<Self> {
        let (n, h, wd, c) = x.shape().dims4()?;
        let (_, _, k, _) = w.shape().dims4()?;
        Ok(Self { n, h, w: wd, c, k })
    }
    fn pad(&self) -> usize {
        self.k / 2
    }
    fn row_len(&self) -> usize {
        self.w * self.c
    }
    /// Rows of a zero-padded image.
    fn padded_h(&self) -> usize {
        self.h + 2 * self.pad()
    }
    /// Columns of a zero-padded image.
    fn padded_w(&self) -> usize {
        self.w + 2 * self.pad()
    }
    fn padded_image_len(&self) -> usize {
        self.padded_h() * self.padded_w() * self.c
    }
}

/// Copies `[N, H, W, C]` into a zero-padded `[N, Hp, Wp, C]` buffer, so that the weight
/// gradient's kernels need no boundary tests.
fn pad_images(x: &[f32], g: Geom) -> Vec<f32> {
    let (p, wp) = (g.pad(), g.padded_w());
    let mut out = vec![0f32; g.n * g.padded_image_len()];
    out.par_chunks_mut(g.padded_image_len()).enumerate().for_each(|(n, img)| {
        for h in 0..g.h {
            let src = &x[(n * g.h + h) * g.row_len()..][..g.row_len()];
            img[((h + p) * wp + p) * g.c..][..g.row_len()].copy_from_slice(src);
        }
    });
    out
}

/// Reorders `[C, 1, k, k]` into `[k, k, C]` taps, optionally flipped in both spatial axes
/// (the flipped kernel turns the input gradient into a forward convolution). A transpose in
/// blocks of `LANES` channels, so that both the reads (their `k * k` taps) and the writes (one
/// cache line per tap) stay in L1 (channel by channel, every write was a different line:
/// 0.3-0.4% of a ConvNeXt-T inference, on one thread while the others wait).
fn taps_channels_last(weight: &[f32], c: usize, k: usize, flip: bool) -> Vec<f32> {
    let kk = k * k;
    let mut taps = vec![0f32; kk * c];
    for c0 in (0..c).step_by(LANES) {
        let block = &weight[c0 * kk..(c0 + LANES).min(c) * kk];
        for t in 0..kk {
            // flipping both axes reverses the tap order
            let src = if flip { kk - 1 - t } else { t };
            let out = &mut taps[t * c + c0..][..block.len() / kk];
            for (o, w) in out.iter_mut().zip(block.chunks_exact(kk)) {
                *o = w[src];
            }
        }
    }
    taps
}

/// The `LANES` values at `p`, read without a bounds check.
///
/// # Safety
/// `p..p + LANES` must lie inside one live `f32` allocation.
#[inline(always)]
unsafe fn load_lanes(p: *const f32) -> [f32; LANES] {
    std::ptr::read_unaligned(p as *const [f32; LANES])
}

/// `body` once for each `S` below `n` (at most `MAX_PIX + 6`: blocks of up to 8 pixels and
/// kernels of up to 7), `S` a constant in each copy.
macro_rules! unroll {
    ($s:ident in 0..$n:expr => $body:block) => {
        unroll!(@each $s, $n, $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
    };
    (@each $s:ident, $n:expr, $body:block, $($v:literal)*) => {
        $({
            const $s: usize = $v;
            if $s < $n $body
        })*
    };
}

/// `LANES` channels as the forward kernel holds them: one AVX-512 register ([`Avx512`]), or
/// an array the compiler vectorizes for the other builds ([`Portable`]).
trait Lanes: Copy {
    /// The `LANES` values at `p`. Every value of the type comes from here, so that the safe
    /// methods may rely on the CPU's instructions.
    ///
    /// # Safety
    /// `p..p + LANES` lies inside one live `f32` allocation, and the CPU runs the instructions
    /// of `Self` (AVX-512F for [`Avx512`]).
    unsafe fn load(p: *const f32) -> Self;
    /// Writes the values to `p..p + LANES`.
    ///
    /// # Safety
    /// As [`Lanes::load`], and nobody else reads or writes there meanwhile.
    unsafe fn store(self, p: *mut f32);
    /// `self * b + c`, lane by lane.
    fn mul_add(self, b: Self, c: Self) -> Self;
}

/// [`Lanes`] as a plain array (`FMA`: fused multiply-adds, as [`fmadd`]).
#[derive(Clone, Copy)]
struct Portable<const FMA: bool>([f32; LANES]);

impl<const FMA: bool> Lanes for Portable<FMA> {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Self(load_lanes(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; LANES], self.0)
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Self(std::array::from_fn(|l| fmadd::<FMA>(self.0[l], b.0[l], c.0[l])))
    }
}

/// [`Lanes`] in one AVX-512 register (as arrays, the accumulators of a block went through the
/// stack after every multiply-add). Made only inside [`conv_block_avx512`], which runs where
/// AVX-512 was detected.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx512(std::arch::x86_64::__m512);

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Self(std::arch::x86_64::_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::arch::x86_64::_mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: an `Avx512` comes only from `load`, whose contract is a CPU with AVX-512F.
        Self(unsafe { std::arch::x86_64::_mm512_fmadd_ps(self.0, b.0, c.0) })
    }
}

/// A block of `PIX` output pixels, columns `w0..w0 + PIX` of output row `h`, for kernel size
/// `K`, read straight from the image `img: [H, W, C]` (taps that fall outside it are skipped):
/// per channel vector, the bias, then kernel row by kernel row the `K` taps in registers, each
/// input value loaded once and multiplied into every output pixel it reaches. Each output sums
/// its taps row by row, left to right. Channels past the last full vector take the scalar path.
#[inline(always)]
fn conv_block_k<const K: usize, const PIX: usize, V: Lanes>(
    out: &mut [MaybeUninit<f32>],
    img: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: Geom,
    (h, w0): (usize, usize),
) {
    const { assert!(PIX + K - 1 <= 15, "unroll! covers 15 input columns") };
    let (c, w, p) = (g.c, g.w, K / 2);
    // The reads and writes below stay inside these bounds: input rows h + i - p in 0..H,
    // columns w0 + s - p in 0..W, channels c0..c0 + LANES <= c, output pixels q < PIX.
    assert!(g.k == K && h < g.h && w0 + PIX <= w && img.len() >= g.h * w * c);
    assert!(taps.len() >= K * K * c && out.len() >= PIX * c && bias.is_none_or(|b| b.len() >= c));
    let (i_lo, i_hi) = (p.saturating_sub(h), (g.h + p - h).min(K));
    let (s_lo, s_hi) = (p.saturating_sub(w0), (w + p - w0).min(PIX + K - 1));
    let full = c / LANES * LANES;
    let zeros = [0f32; LANES];
    for c0 in (0..full).step_by(LANES) {
        // SAFETY: channels c0..c0 + LANES (asserted above).
        let init = unsafe { V::load(bias.map_or(zeros.as_ptr(), |b| b.as_ptr().add(c0))) };
        let mut acc = [init; PIX];
        for i in i_lo..i_hi {
            // SAFETY: tap (i, j) < K * K, channels c0..c0 + LANES (asserted above).
            let t: [V; K] = std::array::from_fn(|j| unsafe { V::load(taps.as_ptr().add((i * K + j) * c + c0)) });
            // input row h + i - p, channel c0 (offset per column below, never outside the image)
            let row = img[(h + i - p) * w * c + c0..].as_ptr();
            // unrolled by hand: with `S` a constant in each copy, the tap each output pixel
            // takes is known at compile time and the taps stay in registers
            unroll!(S in 0..PIX + K - 1 => {
                if (s_lo..s_hi).contains(&S) {
                    // SAFETY: column w0 + S - p lies in 0..W (s_lo..s_hi), inside the image.
                    let v = unsafe { V::load(row.add((w0 + S - p) * c)) };
                    for (q, a) in acc.iter_mut().enumerate() {
                        let j = S.wrapping_sub(q);
                        if j < K {
                            *a = v.mul_add(t[j], *a);
                        }
                    }
                }
            });
        }
        for (q, a) in acc.iter().enumerate() {
            // SAFETY: pixel q < PIX, channels c0..c0 + LANES (asserted above).
            unsafe { a.store(out.as_mut_ptr().add(q * c + c0) as *mut f32) };
        }
    }
    conv_pixels_scalar(out, img, taps, bias, g, (h, w0, PIX), full);
}

/// Channels `from..C` of the `pix` output pixels from column `w0` of output row `h`, one value
/// at a time (any kernel size).
#[inline(always)]
fn conv_pixels_scalar(
    out: &mut [MaybeUninit<f32>],
    img: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: Geom,
    (h, w0, pix): (usize, usize, usize),
    from: usize,
) {
    let (c, k, p) = (g.c, g.k, g.pad());
    for q in 0..pix {
        let wo = w0 + q;
        let (j_lo, j_hi) = (p.saturating_sub(wo), (g.w + p - wo).min(k));
        for ch in from..c {
            let mut a = bias.map_or(0.0, |b| b[ch]);
            for i in p.saturating_sub(h)..(g.h + p - h).min(k) {
                for j in j_lo..j_hi {
                    a += img[((h + i - p) * g.w + wo + j - p) * c + ch] * taps[(i * k + j) * c + ch];
                }
            }
            out[q * c + ch].write(a);
        }
    }
}

/// `kernel::<K, PIX, V>(args)` with the const `PIX` equal to `pix` (1 to [`MAX_PIX`]).
macro_rules! by_width {
    ($pix:expr, $kernel:ident::<$k:literal, $v:ty>($($arg:expr),*)) => {
        match $pix {
            1 => $kernel::<$k, 1, $v>($($arg),*),
            2 => $kernel::<$k, 2, $v>($($arg),*),
            3 => $kernel::<$k, 3, $v>($($arg),*),
            4 => $kernel::<$k, 4, $v>($($arg),*),
            5 => $kernel::<$k, 5, $v>($($arg),*),
            6 => $kernel::<$k, 6, $v>($($arg),*),
            7 => $kernel::<$k, 7, $v>($($arg),*),
            MAX_PIX => $kernel::<$k, MAX_PIX, $v>($($arg),*),
            other => unreachable!("a block of {other} pixels"),
        }
    };
}

/// [`conv_block`]'s body for lanes of type `V`.
macro_rules! conv_block_with {
    ($v:ty, $out:expr, $img:expr, $taps:expr, $bias:expr, $g:expr, ($h:expr, $w0:expr, $pix:expr)) => {
        match $g.k {
            3 => by_width!($pix, conv_block_k::<3, $v>($out, $img, $taps, $bias, $g, ($h, $w0))),
            5 => by_width!($pix, conv_block_k::<5, $v>($out, $img, $taps, $bias, $g, ($h, $w0))),
            7 => by_width!($pix, conv_block_k::<7, $v>($out, $img, $taps, $bias, $g, ($h, $w0))),
            _ => conv_pixels_scalar($out, $img, $taps, $bias, $g, ($h, $w0, $pix), 0),
        }
    };
}

/// [`conv_block`] compiled for AVX-512, with the lanes in registers.
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn conv_block_avx512(
    out: &mut [MaybeUninit<f32>],
    img: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: Geom,
    (h, w0, pix): (usize, usize, usize),
) {
    conv_block_with!(Avx512, out, img, taps, bias, g, (h, w0, pix))
}

multiversion! {
    /// [`conv_block`] with portable lanes (AVX2 and FMA where the CPU has them).
    fn conv_block_portable(
        out: &mut [MaybeUninit<f32>],
        img: &[f32],
        taps: &[f32],
        bias: Option<&[f32]>,
        g: Geom,
        at: (usize, usize, usize),
    ) {
        let (h, w0, pix) = at;
        conv_block_with!(Portable<FMA>, out, img, taps, bias, g, (h, w0, pix))
    }
}

/// The `pix` output pixels from column `w0` of output row `h` of image `img`, `at = (h, w0,
/// pix)`.
fn conv_block(
    out: &mut [MaybeUninit<f32>],
    img: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: Geom,
    at: (usize, usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        // SAFETY: the features it was compiled for were just detected.
        return unsafe { conv_block_avx512(out, img, taps, bias, g, at) };
    }
    conv_block_portable(out, img, taps, bias, g, at)
}

/// A layer norm applied to each output pixel right after the convolution: `(weight, bias, eps)`.
type RowNorm<'a> = Option<(&'a [f32], &'a [f32], f32)>;

/// `out[n,h,w,c] = bias[c] + sum_ij x[n, h+i-p, w+j-p, c] * taps[i, j, c]` (zero outside the
/// image), each output pixel then normalized over channels if `norm` is given. The work is
/// blocks of at most [`MAX_PIX`] pixels of a row (a row cut as evenly as that allows: 56 pixels
/// are 7 blocks of 8, 28 are 4 of 7), dealt in runs of consecutive blocks over a few tasks per
/// thread, so that ConvNeXt's 7-row last stage still keeps every thread busy.
fn convolve(x: &[f32], taps: &[f32], bias: Option<&[f32]>, norm: RowNorm, g: Geom) -> Vec<f32> {
    let (row, image) = (g.row_len(), g.h * g.row_len());
    let rows = g.n * g.h;
    let blocks = g.w.div_ceil(MAX_PIX);
    let items = rows * blocks;
    // block b of a row: columns w * b / blocks .. w * (b + 1) / blocks
    let col = |b: usize| g.w * b / blocks;
    let offset = |item: usize| (item / blocks) * row + col(item % blocks) * g.c;
    let tasks = (4 * rayon::current_num_threads()).min(items).max(1);
    // every element is written once below: no zero-fill first
    let mut out = Vec::<f32>::with_capacity(rows * row);
    let mut parts: Vec<(std::ops::Range<usize>, &mut [MaybeUninit<f32>])> = Vec::with_capacity(tasks);
    let mut rest = &mut out.spare_capacity_mut()[..rows * row];
    for t in 0..tasks {
        let range = items * t / tasks..items * (t + 1) / tasks;
        let end = if range.end == items { rows * row } else { offset(range.end) };
        let (head, tail) = rest.split_at_mut(end - offset(range.start));
        parts.push((range, head));
        rest = tail;
    }
    parts.into_par_iter().for_each(|(range, part)| {
        let start = offset(range.start);
        for item in range {
            let (r, b) = (item / blocks, item % blocks);
            let (n, h, w0) = (r / g.h, r % g.h, col(b));
            let pix = col(b + 1) - w0;
            let o = &mut part[offset(item) - start..][..pix * g.c];
            conv_block(o, &x[n * image..][..image], taps, bias, g, (h, w0, pix));
            if let Some((w, b, eps)) = norm {
                // SAFETY: conv_block wrote every element of `o`.
                norm_rows_in_place(unsafe { &mut *(o as *mut [MaybeUninit<f32>] as *mut [f32]) }, w, b, eps);
            }
        }
    });
    // SAFETY: the tasks wrote every one of the rows * row elements.
    unsafe { out.set_len(rows * row) };
    out
}

/// Adds one output row's contribution to the tap gradients for kernel size `K`:
/// `acc[i, j, c] += sum_w gy[h, w, c] * xp[h + i, w + j, c]`, with the `K` taps of a kernel
/// row held in registers.
#[inline(always)]
fn weight_grad_row_k<const K: usize, const FMA: bool>(acc: &mut [f32], gy_row: &[f32], xp: &[f32], h: usize, g: Geom) {
    let (c, wp) = (g.c, g.padded_w());
    // The reads below stay inside these bounds: rows h..h+K of the padded image, columns up to
    // w - 1 + K - 1 < wp, channels c0..c0+LANES <= c.
    assert!(g.k == K && xp.len() >= (h + K) * wp * c && gy_row.len() >= g.w * c && acc.len() >= K * K * c);
    let full = c / LANES * LANES;
    for c0 in (0..full).step_by(LANES) {
        for i in 0..K {
            let row = xp[(h + i) * wp * c + c0..].as_ptr();
            let mut a = [[0f32; LANES]; K];
            for wo in 0..g.w {
                // SAFETY: pixel wo < w, channels c0..c0 + LANES (asserted above).
                let gv = unsafe { load_lanes(gy_row.as_ptr().add(wo * c + c0)) };
                for (j, aj) in a.iter_mut().enumerate() {
                    // SAFETY: column wo + j < wp (asserted above).
                    let s = unsafe { load_lanes(row.add((wo + j) * c)) };
                    for l in 0..LANES {
                        aj[l] = fmadd::<FMA>(gv[l], s[l], aj[l]);
                    }
                }
            }
            for (j, aj) in a.iter().enumerate() {
                let t = &mut acc[(i * K + j) * c + c0..][..LANES];
                t.iter_mut().zip(aj).for_each(|(t, v)| *t += v);
            }
        }
    }
    weight_grad_row_scalar(acc, gy_row, xp, h, g, full);
}

/// Channels `from..C` of [`weight_grad_row_k`], one value at a time (any kernel size).
#[inline(always)]
fn weight_grad_row_scalar(acc: &mut [f32], gy_row: &[f32], xp: &[f32], h: usize, g: Geom, from: usize) {
    let (c, k, wp) = (g.c, g.k, g.padded_w());
    for i in 0..k {
        for j in 0..k {
            for ch in from..c {
                let mut a = 0f32;
                for wo in 0..g.w {
                    a += gy_row[wo * c + ch] * xp[((h + i) * wp + wo + j) * c + ch];
                }
                acc[(i * k + j) * c + ch] += a;
            }
        }
    }
}

multiversion! {
    /// Adds the contribution of output row `h` (gradient `gy_row`) to `acc = [taps..., bias...]`.
    fn weight_grad_row(acc: &mut [f32], gy_row: &[f32], xp: &[f32], h: usize, g: Geom) {
        let (taps, db) = acc.split_at_mut(g.k * g.k * g.c);
        for px in gy_row.chunks_exact(g.c) {
            db.iter_mut().zip(px).for_each(|(d, v)| *d += v);
        }
        match g.k {
            3 => weight_grad_row_k::<3, FMA>(taps, gy_row, xp, h, g),
            5 => weight_grad_row_k::<5, FMA>(taps, gy_row, xp, h, g),
            7 => weight_grad_row_k::<7, FMA>(taps, gy_row, xp, h, g),
            _ => weight_grad_row_scalar(taps, gy_row, xp, h, g, 0),
        }
    }
}

/// Weight and bias gradients: `dw[c,i,j] = sum x[.., h+i-p, w+j-p, c] * gy[.., h, w, c]`,
/// `db[c] = sum gy[.., c]`; packed as `[C*k*k + C]` in PyTorch's weight order then the bias.
fn weight_grads(x: &[f32], gy: &[f32], g: Geom) -> Vec<f32> {
    let xp = pad_images(x, g);
    let row = g.row_len();
    let kk = g.k * g.k;
    let rows = g.n * g.h;
    let chunk_rows = rows_per_task(row * kk, 1 << 17);
    let partials: Vec<Vec<f32>> = (0..rows.div_ceil(chunk_rows))
        .into_par_iter()
        .map(|chunk| {
            let mut acc = vec![0f32; kk * g.c + g.c];
            for global in chunk * chunk_rows..((chunk + 1) * chunk_rows).min(rows) {
                let (n, h) = (global / g.h, global % g.h);
                let img = &xp[n * g.padded_image_len()..][..g.padded_image_len()];
                weight_grad_row(&mut acc, &gy[global * row..][..row], img, h, g);
            }
            acc
        })
        .collect();
    let acc = sum_partials(partials, kk * g.c + g.c);
    let (taps, db) = acc.split_at(kk * g.c);
    let mut packed = vec![0f32; g.c * kk + g.c];
    for ch in 0..g.c {
        for t in 0..kk {
            packed[ch * kk + t] = taps[t * g.c + ch];
        }
    }
    packed[g.c * kk..].copy_from_slice(db);
    packed
}

/// Forward op: `(x, weight, bias) -> y`, or with `norm_eps`,
/// `(x, weight, [bias; norm_weight; norm_bias]) -> layer_norm(y)`.
struct DepthwiseConv {
    norm_eps: Option<f32>,
}

impl CustomOp3 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
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
        let g = Geom::of(l1, l2)?;
        let x = as_f32(self.name(), s1, l1)?;
        let taps = taps_channels_last(as_f32(self.name(), s2, l2)?, g.c, g.k, false);
        let params = as_f32(self.name(), s3, l3)?;
        let norm = self.norm_eps.map(|eps| (&params[g.c..2 * g.c], &params[2 * g.c..3 * g.c], eps));
        let out = convolve(x, &taps, Some(&params[..g.c]), norm, g);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(eps) = self.norm_eps else {
            let (dx, dw, db) = conv_grads(x, weight, grad)?;
            return Ok((Some(dx), Some(dw), Some(db)));
        };
        let (bias, norm_weight) = (params.get(0)?, params.get(1)?);
        let y = x.apply_op3_no_bwd(weight, &bias, &DepthwiseConv { norm_eps: None })?;
        let (dy, dnw, dnb) = layer_norm_grads(&y, &norm_weight, grad, eps)?;
        let (dx, dw, db) = conv_grads(x, weight, &dy)?;
        Ok((Some(dx), Some(dw), Some(Tensor::stack(&[db, dnw, dnb], 0)?)))
    }
}

/// `(dx, dweight, dbias)` of the convolution of `x` with `weight`, given its output gradient.
fn conv_grads(x: &Tensor, weight: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let grad = grad.contiguous()?;
    let dx = grad.apply_op2_no_bwd(weight, &InputGrad)?;
    let packed = x.contiguous()?.apply_op2_no_bwd(&grad, &WeightGrad { k: weight.dim(2)? })?;
    let (c, kk) = (weight.dim(0)?, weight.elem_count() / weight.dim(0)?);
    let dw = packed.narrow(0, 0, c * kk)?.reshape(weight.shape())?;
    Ok((dx, dw, packed.narrow(0, c * kk, c)?))
}

/// Backward op for the input: the forward convolution with the spatially flipped kernel.
struct InputGrad;

impl candle_core::CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-input-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::of(l1, l2)?;
        let taps = taps_channels_last(as_f32(self.name(), s2, l2)?, g.c, g.k, true);
        let out = convolve(as_f32(self.name(), s1, l1)?, &taps, None, None, g);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Backward op for weight and bias, packed into one flat tensor (see [`weight_grads`]).
struct WeightGrad {
    k: usize,
}

impl candle_core::CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-weight-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, h, w, c) = l1.shape().dims4()?;
        let g = Geom { n, h, w, c, k: self.k };
        let packed = weight_grads(as_f32(self.name(), s1, l1)?, as_f32(self.name(), s2, l2)?, g);
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}
