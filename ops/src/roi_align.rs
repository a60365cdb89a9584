//! RoIAlign with average pooling, forward and backward (to the features; RoIs get no gradient).
//!
//! Semantics are mmcv's `RoIAlign(pool_mode='avg')`, which is numerically torchvision's
//! `roi_align` (`mmcv/ops/csrc/common/cuda/roi_align_cuda_kernel.cuh`): a RoI `(batch, x1, y1, x2, y2)` in image coordinates is
//! scaled by `spatial_scale` and, when `aligned`, shifted by half a pixel; when not `aligned`
//! its width and height are forced to at least 1. Each of the `ph x pw` bins averages a
//! `grid_h x grid_w` grid of bilinear samples (`sampling_ratio`, or `ceil(roi / bins)` when it is
//! 0), over `count = max(grid_h * grid_w, 1)`. A sample outside `[-1, H] x [-1, W]` reads 0;
//! inside it is clamped to the map, and on the last row/column both taps are that row/column.
//!
//! The kernels work channels-last, so that the inner loops run over contiguous channels: the
//! four bilinear weights and offsets of each sample are computed once per bin (they are
//! separable: the row and the column terms are tabulated once per RoI) and then applied
//! C-wide. `[N, C, H, W]` features are transposed once per call, in cache-sized tiles;
//! [`roi_align_nhwc`] takes channels-last features as they are and is about twice as fast.
//! The forward runs one RoI per task. In the backward each task owns a disjoint part of the
//! gradient (a band of rows of one image channels-last, a block of planes of one image for
//! `[N, C, H, W]`) and visits the RoIs in order, so every gradient value is a sum in the same
//! order whatever the thread count: results are bit-identical run to run and across layouts.

use crate::cpu::{as_f32, fmadd, multiversion};
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// A RoIAlign layer: mmcv's `RoIAlign(output_size, spatial_scale, sampling_ratio, 'avg',
/// aligned)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlign {
    /// Output bins `(ph, pw)`.
    pub output_size: (usize, usize),
    /// Factor from image coordinates to feature-map coordinates (`1 / stride`).
    pub spatial_scale: f32,
    /// Sample points per bin along each axis; 0 means adaptive, `ceil(roi_size / bins)`.
    pub sampling_ratio: usize,
    /// Shift the scaled box by half a pixel (pixel model of mmdet/detectron2's `ROIAlignV2`).
    pub aligned: bool,
}

impl RoiAlign {
    /// mmcv's defaults: adaptive sampling (`sampling_ratio = 0`) and `aligned = true`.
    pub fn new(output_size: (usize, usize), spatial_scale: f32) -> Self {
        Self { output_size, spatial_scale, sampling_ratio: 0, aligned: true }
    }

    /// Pools `features: [N, C, H, W]` (f32) over `rois: [K, 5]` rows `(batch, x1, y1, x2, y2)`;
    /// returns `[K, C, ph, pw]`. Differentiable in `features`.
    pub fn forward(&self, features: &Tensor, rois: &Tensor) -> Result<Tensor> {
        self.apply(features, rois, false)
    }

    /// As [`RoiAlign::forward`] on channels-last `features: [N, H, W, C]`; the output is still
    /// `[K, C, ph, pw]` and the gradient comes back channels-last.
    pub fn forward_nhwc(&self, features: &Tensor, rois: &Tensor) -> Result<Tensor> {
        self.apply(features, rois, true)
    }

    fn apply(&self, features: &Tensor, rois: &Tensor, nhwc: bool) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if crate::generic::cuda_f32(features) {
            return crate::cuda::roi_align(self, features, rois, nhwc);
        }
        if !crate::generic::fast_cpu(features) {
            return crate::generic::roi_align(self, features, rois, nhwc);
        }
        let params = Params::check(self)?;
        if features.rank() != 4 {
            bail!("roi_align: features must be [N, C, H, W] (or [N, H, W, C]), got {:?}", features.dims());
        }
        if features.dtype() != DType::F32 {
            bail!("roi_align: features must be f32, got {:?}", features.dtype());
        }
        if rois.rank() != 2 || rois.dim(1)? != 5 {
            bail!("roi_align: rois must be [K, 5] rows (batch, x1, y1, x2, y2), got {:?}", rois.dims());
        }
        let rois = rois.to_dtype(DType::F32)?.contiguous()?;
        features.contiguous()?.apply_op2(&rois, RoiAlignOp { params, nhwc })
    }
}

/// RoIAlign of `features: [N, C, H, W]` over `rois: [K, 5]` `(batch, x1, y1, x2, y2)` into
/// `[K, C, ph, pw]`, with average pooling; `sampling_ratio = 0` samples adaptively. See the
/// module documentation for the exact semantics. Differentiable in `features`.
pub fn roi_align(
    features: &Tensor,
    rois: &Tensor,
    output_size: (usize, usize),
    spatial_scale: f32,
    sampling_ratio: usize,
    aligned: bool,
) -> Result<Tensor> {
    RoiAlign { output_size, spatial_scale, sampling_ratio, aligned }.forward(features, rois)
}

/// [`roi_align`] on channels-last `features: [N, H, W, C]`; returns `[K, C, ph, pw]`.
pub fn roi_align_nhwc(
    features: &Tensor,
    rois: &Tensor,
    output_size: (usize, usize),
    spatial_scale: f32,
    sampling_ratio: usize,
    aligned: bool,
) -> Result<Tensor> {
    RoiAlign { output_size, spatial_scale, sampling_ratio, aligned }.forward_nhwc(features, rois)
}

/// Checked settings of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) ph: usize,
    pub(crate) pw: usize,
    pub(crate) scale: f32,
    pub(crate) sampling: usize,
    pub(crate) aligned: bool,
}

impl Params {
    pub(crate) fn check(layer: &RoiAlign) -> Result<Self> {
        let (ph, pw) = layer.output_size;
        if ph == 0 || pw == 0 {
            bail!("roi_align: output size must be positive, got {:?}", layer.output_size);
        }
        if !(layer.spatial_scale.is_finite() && layer.spatial_scale > 0.0) {
            bail!("roi_align: spatial_scale must be finite and positive, got {}", layer.spatial_scale);
        }
        if layer.sampling_ratio > MAX_SAMPLING_RATIO {
            bail!(
                "roi_align: sampling_ratio {} is above {MAX_SAMPLING_RATIO} (use 0 for the adaptive grid)",
                layer.sampling_ratio
            );
        }
        if ph.checked_mul(pw).and_then(|b| b.checked_mul(1 << 20)).is_none() {
            bail!("roi_align: output size {:?} is too large", layer.output_size);
        }
        Ok(Self { ph, pw, scale: layer.spatial_scale, sampling: layer.sampling_ratio, aligned: layer.aligned })
    }

    pub(crate) fn bins(&self) -> usize {
        self.ph * self.pw
    }
}

/// Feature map geometry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
}

impl Dims {
    pub(crate) fn of(shape: &Shape, nhwc: bool) -> Result<Self> {
        let (a, b, c, d) = shape.dims4()?;
        Ok(if nhwc { Self { n: a, h: b, w: c, c: d } } else { Self { n: a, c: b, h: c, w: d } })
    }
    fn plane(&self) -> usize {
        self.h * self.w
    }
    fn image(&self) -> usize {
        self.plane() * self.c
    }
}

/// Largest fixed `sampling_ratio`: its square is the number of samples kept per bin, so a huge
/// one would exhaust memory instead of failing (mmdet uses 0, the adaptive grid; 2 is common).
const MAX_SAMPLING_RATIO: usize = 64;

/// Largest sampling grid per bin and axis: a bigger one (an adaptive grid over a RoI of more
/// than 65536 feature pixels per bin) is refused rather than sampled for hours.
const MAX_GRID: f32 = 65536.0;

/// Checks every RoI row: a batch index that is an integer in `0..n`, finite coordinates, and
/// a sampling grid of at most `MAX_GRID` per axis.
pub(crate) fn check_rois(rois: &[f32], n: usize, p: &Params) -> Result<()> {
    for (k, roi) in rois.chunks_exact(5).enumerate() {
        let b = roi[0];
        if !(b >= 0.0 && b.fract() == 0.0 && (b as usize) < n) {
            bail!("roi_align: RoI {k} has batch index {b}, but the features hold {n} image(s)");
        }
        if roi[1..].iter().any(|v| !v.is_finite()) {
            bail!("roi_align: RoI {k} has non-finite coordinates {:?}", &roi[1..]);
        }
        let (w, h) = ((roi[3] - roi[1]) * p.scale, (roi[4] - roi[2]) * p.scale);
        if p.sampling as f32 > MAX_GRID || w / p.pw as f32 > MAX_GRID || h / p.ph as f32 > MAX_GRID {
            bail!("roi_align: RoI {k} {:?} needs more than {MAX_GRID} samples per bin and axis", &roi[1..]);
        }
    }
    Ok(())
}

/// The two taps of a sample along one axis: `lo` weighted by `h`, `hi` weighted by `l`.
#[derive(Debug, Clone, Copy)]
struct Tap {
    lo: usize,
    hi: usize,
    l: f32,
    h: f32,
}

/// Bilinear taps of coordinate `v` on an axis of `size` pixels, `None` outside `[-1, size]`
/// (torchvision's `pre_calc_for_bilinear_interpolate`, one axis at a time).
#[inline]
fn tap(v: f32, size: usize) -> Option<Tap> {
    if size == 0 || !(v >= -1.0 && v <= size as f32) {
        return None;
    }
    let v = if v <= 0.0 { 0.0 } else { v };
    let lo = v as usize;
    let (lo, hi, v) = if lo >= size - 1 { (size - 1, size - 1, (size - 1) as f32) } else { (lo, lo + 1, v) };
    let l = v - lo as f32;
    Some(Tap { lo, hi, l, h: 1.0 - l })
}

/// Where one RoI samples: its image, the per-axis taps of every sample row and column, and
/// the divisor of each bin.
pub(crate) struct RoiPlan {
    pub(crate) batch: usize,
    pub(crate) grid_h: usize,
    pub(crate) grid_w: usize,
    /// `ph * grid_h` row taps, bin-major.
    ys: Vec<Option<Tap>>,
    /// `pw * grid_w` column taps, bin-major.
    xs: Vec<Option<Tap>>,
    pub(crate) count: f32,
}

impl RoiPlan {
    pub(crate) fn new(roi: &[f32], p: &Params, d: &Dims) -> Self {
        let offset = if p.aligned { 0.5 } else { 0.0 };
        let start_w = roi[1] * p.scale - offset;
        let start_h = roi[2] * p.scale - offset;
        let end_w = roi[3] * p.scale - offset;
        let end_h = roi[4] * p.scale - offset;
        let (mut roi_w, mut roi_h) = (end_w - start_w, end_h - start_h);
        if !p.aligned {
            roi_w = roi_w.max(1.0);
            roi_h = roi_h.max(1.0);
        }
        // `as usize` maps a non-positive grid (an inverted box) to 0 samples.
        let grid =
            |len: f32, bins: usize| if p.sampling > 0 { p.sampling } else { (len / bins as f32).ceil() as usize };
        let (grid_h, grid_w) = (grid(roi_h, p.ph), grid(roi_w, p.pw));
        let axis = |start: f32, len: f32, bins: usize, grid: usize, size: usize| {
            let bin = len / bins as f32;
            let mut taps = Vec::with_capacity(bins * grid);
            for b in 0..bins {
                for i in 0..grid {
                    let v = start + b as f32 * bin + (i as f32 + 0.5) * bin / grid as f32;
                    taps.push(tap(v, size));
                }
            }
            taps
        };
        Self {
            batch: roi[0] as usize,
            grid_h,
            grid_w,
            ys: axis(start_h, roi_h, p.ph, grid_h, d.h),
            xs: axis(start_w, roi_w, p.pw, grid_w, d.w),
            count: (grid_h * grid_w).max(1) as f32,
        }
    }

    /// Appends the samples of bin `(by, bx)` that fall on the map to `out`, with the pixel
    /// offsets (`y * w + x`) of their four taps.
    pub(crate) fn bin_samples(&self, by: usize, bx: usize, w: usize, out: &mut Vec<Sample>) {
        let ys = &self.ys[by * self.grid_h..][..self.grid_h];
        let xs = &self.xs[bx * self.grid_w..][..self.grid_w];
        for ty in ys.iter().flatten() {
            let (lo, hi) = (ty.lo * w, ty.hi * w);
            for tx in xs.iter().flatten() {
                let (xl, xh) = (tx.lo, tx.hi);
                out.push(Sample {
                    off: [lo + xl, lo + xh, hi + xl, hi + xh],
                    w: [ty.h * tx.h, ty.h * tx.l, ty.l * tx.h, ty.l * tx.l],
                });
            }
        }
    }
}

/// One bilinear sample: offsets and weights of its four taps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) off: [usize; 4],
    pub(crate) w: [f32; 4],
}

multiversion! {
    /// Averages the samples of one bin into `acc`, one value per channel, from a
    /// channels-last image whose pixels are `stride` values apart: each tap is a contiguous run
    /// of `acc.len()` values.
    fn pool_bin(acc: &mut [f32], img: &[f32], samples: &[Sample], stride: usize, count: f32) {
        let c = acc.len();
        acc.fill(0.0);
        for s in samples {
            let f = s.off.map(|o| &img[o * stride..o * stride + c]);
            let [w0, w1, w2, w3] = s.w;
            for ((((a, &v0), &v1), &v2), &v3) in acc.iter_mut().zip(f[0]).zip(f[1]).zip(f[2]).zip(f[3]) {
                *a = fmadd::<FMA>(w3, v3, fmadd::<FMA>(w2, v2, fmadd::<FMA>(w1, v1, fmadd::<FMA>(w0, v0, *a))));
            }
        }
        acc.iter_mut().for_each(|a| *a /= count);
    }
}

multiversion! {
    /// Adds `w * g` to the `g.len()` values at each tap `(offset, w)` of a channels-last
    /// gradient band.
    fn scatter_taps(grad: &mut [f32], taps: &[(usize, f32)], g: &[f32]) {
        let c = g.len();
        for &(off, w) in taps {
            for (d, &v) in grad[off..off + c].iter_mut().zip(g) {
                *d = fmadd::<FMA>(w, v, *d);
            }
        }
    }
}

/// Side of the square tiles the layout transposes move through registers: one cache line of
/// `f32` in each direction.
const TILE: usize = 16;

/// Copies the `rows x cols` matrix at `src` (row stride `ss`) transposed to `dst` (row stride
/// `ds`), through a `TILE x TILE` block so that whole cache lines are read and written: with a
/// stride of a power of two (C = 256 channels is 1 KiB) a direct strided copy keeps evicting
/// its own lines from the few L1 sets they map to.
#[inline(always)]
fn transpose_tile(src: &[f32], ss: usize, dst: &mut [f32], ds: usize, rows: usize, cols: usize) {
    if rows == TILE && cols == TILE {
        let mut tile = [[0f32; TILE]; TILE];
        for (r, t) in tile.iter_mut().enumerate() {
            *t = src[r * ss..r * ss + TILE].try_into().expect("TILE values");
        }
        for c in 0..TILE {
            let row: [f32; TILE] = std::array::from_fn(|r| tile[r][c]);
            dst[c * ds..c * ds + TILE].copy_from_slice(&row);
        }
    } else {
        for r in 0..rows {
            for c in 0..cols {
                dst[c * ds + r] = src[r * ss + c];
            }
        }
    }
}

multiversion! {
    /// Pixels `p0..p0 + dst.len() / c` of the `[C, H * W]` image `x`, channels-last into `dst`.
    fn pixels_to_channels_last(dst: &mut [f32], x: &[f32], p0: usize, hw: usize, c: usize) {
        let len = dst.len() / c;
        for c0 in (0..c).step_by(TILE) {
            for q in (0..len).step_by(TILE) {
                let src = &x[c0 * hw + p0 + q..];
                transpose_tile(src, hw, &mut dst[q * c + c0..], c, TILE.min(c - c0), TILE.min(len - q));
            }
        }
    }
}

/// Pixels of one task of [`nchw_to_nhwc`].
const TRANSPOSE_PIXELS: usize = 256;

/// `[N, C, H, W]` to `[N, H, W, C]`, one task per `TRANSPOSE_PIXELS` pixels.
///
/// Measured against the alternative of copying each RoI's window channels-last into a cached
/// buffer: RoIs overlap (their windows add up to ~3.6x the map in the benchmark), and reading
/// short rows from 256 planes is latency-bound, so one streaming transpose is ~3x faster.
fn nchw_to_nhwc(x: &[f32], d: Dims) -> Vec<f32> {
    let (c, hw) = (d.c, d.plane());
    let mut out = vec![0f32; x.len()];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(hw * c).zip(x.par_chunks(hw * c)).for_each(|(img, src)| {
        img.par_chunks_mut(TRANSPOSE_PIXELS * c).enumerate().for_each(|(t, dst)| {
            pixels_to_channels_last(dst, src, t * TRANSPOSE_PIXELS, hw, c);
        });
    });
    out
}

/// The forward of every RoI from channels-last images: `[K, C, ph, pw]`.
fn forward(img: &[f32], rois: &[f32], p: &Params, d: &Dims) -> Vec<f32> {
    let (bins, c) = (p.bins(), d.c);
    let mut out = vec![0f32; rois.len() / 5 * c * bins];
    if out.is_empty() {
        return out;
    }
    let scratch = || (Vec::new(), vec![0f32; bins * c]);
    out.par_chunks_mut(c * bins).zip(rois.par_chunks(5)).for_each_init(scratch, |(samples, pooled), (o, roi)| {
        let plan = RoiPlan::new(roi, p, d);
        let image = &img[plan.batch * d.image()..][..d.image()];
        // `pooled` is `[bins, C]`; the output block of the RoI is `[C, bins]`.
        for (bin, acc) in pooled.chunks_exact_mut(c).enumerate() {
            samples.clear();
            plan.bin_samples(bin / p.pw, bin % p.pw, d.w, samples);
            pool_bin(acc, image, samples, c, plan.count);
        }
        for b0 in (0..bins).step_by(TILE) {
            for c0 in (0..c).step_by(TILE) {
                let (rows, cols) = (TILE.min(bins - b0), TILE.min(c - c0));
                transpose_tile(&pooled[b0 * c + c0..], c, &mut o[c0 * bins + b0..], bins, rows, cols);
            }
        }
    });
    out
}

/// `n` zeros, written out in parallel. The backward adds into its buffer: on memory that
/// `calloc` left untouched, each page would fault twice (a read maps the shared zero page, the
/// write then copies it and flushes the other cores' TLBs), which measured ~40% of the backward.
fn written_zeros(n: usize) -> Vec<f32> {
    (0..n).into_par_iter().with_min_len(1 << 16).map(|_| 0f32).collect()
}

/// One task of the backward: rows `y0..y1` of image `n`, channels `c0..c0 + cw`.
#[derive(Debug, Clone, Copy)]
struct GradPart {
    n: usize,
    y0: usize,
    y1: usize,
    c0: usize,
    cw: usize,
}

/// Adds to `dst`, the channels-last block `[y1 - y0, W, cw]` of `part`, the taps of every RoI
/// that fall in it, visiting the RoIs in order: every gradient value is a sum in the same order
/// whatever the partition into tasks.
fn accumulate_grad(dst: &mut [f32], part: GradPart, go: &[f32], rois: &[f32], p: &Params, d: &Dims) {
    let GradPart { n, y0, y1, c0, cw } = part;
    let bins = p.bins();
    let in_rows = |y: usize| y >= y0 && y < y1;
    let (mut samples, mut taps) = (Vec::new(), Vec::new());
    let mut g = vec![0f32; bins * cw];
    for (k, roi) in rois.chunks_exact(5).enumerate() {
        if roi[0] as usize != n {
            continue;
        }
        let plan = RoiPlan::new(roi, p, d);
        if plan.grid_w == 0 || !plan.ys.iter().flatten().any(|ty| in_rows(ty.lo) || in_rows(ty.hi)) {
            continue;
        }
        // `g` is the RoI's gradient for these channels as `[bins, cw]`.
        let gk = &go[(k * d.c + c0) * bins..][..cw * bins];
        for l0 in (0..cw).step_by(TILE) {
            for b0 in (0..bins).step_by(TILE) {
                let (rows, cols) = (TILE.min(cw - l0), TILE.min(bins - b0));
                transpose_tile(&gk[l0 * bins + b0..], bins, &mut g[b0 * cw + l0..], cw, rows, cols);
            }
        }
        for by in 0..p.ph {
            let ys = &plan.ys[by * plan.grid_h..][..plan.grid_h];
            if !ys.iter().flatten().any(|ty| in_rows(ty.lo) || in_rows(ty.hi)) {
                continue;
            }
            for bx in 0..p.pw {
                samples.clear();
                plan.bin_samples(by, bx, d.w, &mut samples);
                taps.clear();
                for s in samples.iter() {
                    for (&off, &w) in s.off.iter().zip(&s.w) {
                        if w != 0.0 && in_rows(off / d.w) {
                            taps.push(((off - y0 * d.w) * cw, w / plan.count));
                        }
                    }
                }
                let bin = by * p.pw + bx;
                scatter_taps(dst, &taps, &g[bin * cw..][..cw]);
            }
        }
    }
}

/// The gradient of the features, given the output gradient `go: [K, C, ph, pw]`, in the
/// features' layout. Channels-last: each task owns a band of rows of one image (a contiguous
/// part of the result). `[N, C, H, W]`: each task owns a block of planes of one image, accumulates
/// them channels-last in a scratch block and transposes that into its planes.
fn backward(go: &[f32], rois: &[f32], p: &Params, d: &Dims, nhwc: bool) -> Vec<f32> {
    let mut grad = written_zeros(d.n * d.image());
    if grad.is_empty() {
        return grad;
    }
    if nhwc {
        let row = d.w * d.c;
        let bands_per_image = (4 * rayon::current_num_threads()).div_ceil(d.n).clamp(1, d.h);
        let band_rows = d.h.div_ceil(bands_per_image);
        let bands = grad.par_chunks_mut(d.image()).enumerate().flat_map(|(n, img)| {
            img.par_chunks_mut(band_rows * row).enumerate().map(move |(b, band)| (n, b * band_rows, band))
        });
        bands.for_each(|(n, y0, band)| {
            let part = GradPart { n, y0, y1: y0 + band.len() / row, c0: 0, cw: d.c };
            accumulate_grad(band, part, go, rois, p, d);
        });
    } else {
        // Wide blocks amortize the per-RoI work of a task; narrow ones give every thread work.
        let hw = d.plane();
        let per_image = (2 * rayon::current_num_threads()).div_ceil(d.n);
        let cw = (d.c / per_image).next_multiple_of(TILE).clamp(TILE, 4 * TILE);
        let blocks = grad
            .par_chunks_mut(d.image())
            .enumerate()
            .flat_map(|(n, img)| img.par_chunks_mut(cw * hw).enumerate().map(move |(b, planes)| (n, b * cw, planes)));
        blocks.for_each(|(n, c0, planes)| {
            let cw = planes.len() / hw;
            let mut block = Vec::with_capacity(hw * cw);
            block.resize(hw * cw, 0f32);
            accumulate_grad(&mut block, GradPart { n, y0: 0, y1: d.h, c0, cw }, go, rois, p, d);
            for q in (0..hw).step_by(TILE) {
                transpose_tile(&block[q * cw..], cw, &mut planes[q..], hw, TILE.min(hw - q), cw);
            }
        });
    }
    grad
}

/// Forward op: `(features, rois) -> [K, C, ph, pw]`.
struct RoiAlignOp {
    params: Params,
    nhwc: bool,
}

impl CustomOp2 for RoiAlignOp {
    fn name(&self) -> &'static str {
        "roi-align"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), self.nhwc)?;
        let x = as_f32(self.name(), s1, l1)?;
        let rois = as_f32(self.name(), s2, l2)?;
        check_rois(rois, d.n, &self.params)?;
        let k = rois.len() / 5;
        let out = if self.nhwc {
            forward(x, rois, &self.params, &d)
        } else {
            forward(&nchw_to_nhwc(x, d), rois, &self.params, &d)
        };
        Ok((CpuStorage::F32(out), Shape::from((k, d.c, self.params.ph, self.params.pw))))
    }

    fn bwd(
        &self,
        features: &Tensor,
        rois: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = RoiAlignGrad { params: self.params, nhwc: self.nhwc, shape: features.shape().clone() };
        Ok((Some(grad.contiguous()?.apply_op2_no_bwd(rois, &op)?), None))
    }
}

/// Backward op: `(grad_output [K, C, ph, pw], rois) -> grad_features` in the features' layout.
struct RoiAlignGrad {
    params: Params,
    nhwc: bool,
    shape: Shape,
}

impl CustomOp2 for RoiAlignGrad {
    fn name(&self) -> &'static str {
        "roi-align-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(&self.shape, self.nhwc)?;
        let go = as_f32(self.name(), s1, l1)?;
        let rois = as_f32(self.name(), s2, l2)?;
        check_rois(rois, d.n, &self.params)?;
        let k = rois.len() / 5;
        if l1.shape().dims() != [k, d.c, self.params.ph, self.params.pw] {
            bail!("roi_align backward: output gradient {:?} does not fit {k} RoIs", l1.shape().dims());
        }
        Ok((CpuStorage::F32(backward(go, rois, &self.params, &d, self.nhwc)), self.shape.clone()))
    }
}
