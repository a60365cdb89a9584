//! Depthwise 2-D convolution: odd square kernel, stride 1, "same" zero padding, one filter per
//! channel (PyTorch's `Conv2d(C, C, k, padding=k//2, groups=C)`).
//!
//! The kernel works channels-last so that its innermost loop runs over contiguous channels; the
//! weight keeps PyTorch's `[C, 1, k, k]` shape so checkpoints load unchanged.

use crate::cpu::{as_f32, fmadd, multiversion, rows_per_task, sum_partials};
use crate::layer_norm::{layer_norm_grads, norm_rows_in_place};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

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
/// Output pixels accumulated together in registers by the forward kernel.
const PIX: usize = 4;

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
    /// Columns of a zero-padded image: the padding plus `PIX - 1` spare zero columns, so that a
    /// block of `PIX` output pixels never reads past a row.
    fn padded_w(&self) -> usize {
        self.w + 2 * self.pad() + PIX - 1
    }
    fn padded_image_len(&self) -> usize {
        self.padded_h() * self.padded_w() * self.c
    }
}

/// Copies `[N, H, W, C]` into a zero-padded `[N, Hp, Wp, C]` buffer (see [`Geom::padded_w`]),
/// so that the kernels need no boundary tests.
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
/// (the flipped kernel turns the input gradient into a forward convolution).
fn taps_channels_last(weight: &[f32], c: usize, k: usize, flip: bool) -> Vec<f32> {
    let mut taps = vec![0f32; k * k * c];
    for ch in 0..c {
        for i in 0..k {
            for j in 0..k {
                let (si, sj) = if flip { (k - 1 - i, k - 1 - j) } else { (i, j) };
                taps[(i * k + j) * c + ch] = weight[ch * k * k + si * k + sj];
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

/// One output row for kernel size `K` from the `K` zero-padded input rows it reads: blocks of
/// `PIX` pixels x `LANES` channels accumulate all `K * K` taps in registers before one store.
/// Channels past the last full block take the scalar path.
#[inline(always)]
fn conv_row_k<const K: usize, const FMA: bool>(
    out: &mut [f32],
    rows: &[&[f32]],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: Geom,
) {
    let (c, w, wp) = (g.c, g.w, g.padded_w());
    // The reads below stay inside these bounds: K rows of wp padded columns, columns up to
    // w0 + PIX - 1 + K - 1 < wp (the spare columns), channels c0..c0+LANES <= c.
    assert!(g.k == K && rows.len() == K && rows.iter().all(|r| r.len() >= wp * c));
    assert!(taps.len() >= K * K * c && out.len() >= w * c);
    let full = c / LANES * LANES;
    for c0 in (0..full).step_by(LANES) {
        let init = bias.map_or([0f32; LANES], |b| b[c0..c0 + LANES].try_into().expect("LANES values"));
        for w0 in (0..w).step_by(PIX) {
            let mut acc = [init; PIX];
            for (i, input_row) in rows.iter().enumerate() {
                let row = input_row[w0 * c + c0..].as_ptr();
                for j in 0..K {
                    // SAFETY: within the bounds asserted above.
                    let t = unsafe { load_lanes(taps.as_ptr().add((i * K + j) * c + c0)) };
                    for (p, a) in acc.iter_mut().enumerate() {
                        // SAFETY: column w0 + p + j < wp, channels c0..c0 + LANES (asserted above).
                        let s = unsafe { load_lanes(row.add((p + j) * c)) };
                        for l in 0..LANES {
                            a[l] = fmadd::<FMA>(s[l], t[l], a[l]);
                        }
                    }
                }
            }
            for (p, a) in acc.iter().enumerate().take(w - w0) {
                out[(w0 + p) * c + c0..][..LANES].copy_from_slice(a);
            }
        }
    }
    conv_row_scalar(out, rows, taps, bias, g, full);
}

/// Channels `from..C` of one output row, one value at a time (any kernel size).
#[inline(always)]
fn conv_row_scalar(out: &mut [f32], rows: &[&[f32]], taps: &[f32], bias: Option<&[f32]>, g: Geom, from: usize) {
    let (c, k) = (g.c, g.k);
    for wo in 0..g.w {
        for ch in from..c {
            let mut a = bias.map_or(0.0, |b| b[ch]);
            for (i, row) in rows.iter().enumerate() {
                for j in 0..k {
                    a += row[(wo + j) * c + ch] * taps[(i * k + j) * c + ch];
                }
            }
            out[wo * c + ch] = a;
        }
    }
}

multiversion! {
    /// One output row from the `k` zero-padded input rows it reads.
    fn conv_row(out: &mut [f32], rows: &[&[f32]], taps: &[f32], bias: Option<&[f32]>, g: Geom) {
        match g.k {
            3 => conv_row_k::<3, FMA>(out, rows, taps, bias, g),
            5 => conv_row_k::<5, FMA>(out, rows, taps, bias, g),
            7 => conv_row_k::<7, FMA>(out, rows, taps, bias, g),
            _ => conv_row_scalar(out, rows, taps, bias, g, 0),
        }
    }
}

/// The `k` zero-padded input rows around an output row, kept as a ring so that consecutive
/// output rows copy one new input row each instead of padding the whole image up front.
struct RowWindow {
    /// `k` buffers of `padded_w * C` values; the padding columns stay zero.
    buffers: Vec<Vec<f32>>,
    /// Which `(image, input row)` each buffer holds (rows outside the image are all zeros).
    holds: Vec<Option<(usize, isize)>>,
    g: Geom,
}

impl RowWindow {
    fn new(g: Geom) -> Self {
        Self { buffers: vec![vec![0f32; g.padded_w() * g.c]; g.k], holds: vec![None; g.k], g }
    }

    /// The padded input rows `h - p ..= h + p` of image `n`, loading those not yet held.
    fn rows_for(&mut self, x: &[f32], n: usize, h: usize) -> Vec<&[f32]> {
        let g = self.g;
        let (k, p, row_len) = (g.k as isize, g.pad(), g.row_len());
        let mut slots = Vec::with_capacity(g.k);
        for i in 0..k {
            let r = h as isize + i - p as isize;
            let slot = r.rem_euclid(k) as usize;
            if self.holds[slot] != Some((n, r)) {
                let interior = &mut self.buffers[slot][p * g.c..][..row_len];
                if (0..g.h as isize).contains(&r) {
                    interior.copy_from_slice(&x[(n * g.h + r as usize) * row_len..][..row_len]);
                } else {
                    interior.fill(0.0);
                }
                self.holds[slot] = Some((n, r));
            }
            slots.push(slot);
        }
        slots.into_iter().map(|s| self.buffers[s].as_slice()).collect()
    }
}

/// A layer norm applied to each output pixel right after the convolution: `(weight, bias, eps)`.
type RowNorm<'a> = Option<(&'a [f32], &'a [f32], f32)>;

/// `out[n,h,w,c] = bias[c] + sum_ij x[n, h+i-p, w+j-p, c] * taps[i, j, c]`, parallel over rows,
/// each row then normalized over channels if `norm` is given.
fn convolve(x: &[f32], taps: &[f32], bias: Option<&[f32]>, norm: RowNorm, g: Geom) -> Vec<f32> {
    let row = g.row_len();
    let rows = g.n * g.h;
    let mut out = vec![0f32; rows * row];
    // A few runs of consecutive rows per thread, so that each run's window is reused.
    let run = rows.div_ceil(4 * rayon::current_num_threads()).max(1);
    out.par_chunks_mut(run * row).enumerate().for_each(|(chunk, out_rows)| {
        let mut window = RowWindow::new(g);
        for (r, out_row) in out_rows.chunks_mut(row).enumerate() {
            let global = chunk * run + r;
            let (n, h) = (global / g.h, global % g.h);
            conv_row(out_row, &window.rows_for(x, n, h), taps, bias, g);
            if let Some((w, b, eps)) = norm {
                norm_rows_in_place(out_row, w, b, eps);
            }
        }
    });
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
