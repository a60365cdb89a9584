//! Depthwise 2-D convolution: odd square kernel, stride 1, "same" zero padding, one filter per
//! channel (PyTorch's `Conv2d(C, C, k, padding=k//2, groups=C)`).
//!
//! The kernel works channels-last so that its innermost loop runs over contiguous channels; the
//! weight keeps PyTorch's `[C, 1, k, k]` shape so checkpoints load unchanged.

use crate::cpu::{as_f32, rows_per_task, sum_partials};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Depthwise convolution of channels-last `x: [N, H, W, C]` with `weight: [C, 1, k, k]` and
/// `bias: [C]`; returns `[N, H, W, C]`. Differentiable in all three arguments.
pub fn depthwise_conv2d_nhwc(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (_, _, _, c) = x.dims4()?;
    let (wc, one, kh, kw) = weight.dims4()?;
    if wc != c || one != 1 || kh != kw || kh % 2 == 0 {
        bail!("depthwise_conv2d: weight {:?} does not fit {c} channels with an odd square kernel", weight.dims());
    }
    if bias.dims() != [c] {
        bail!("depthwise_conv2d: bias {:?} does not fit {c} channels", bias.dims());
    }
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, DepthwiseConv)
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

impl Geom {
    fn of(x: &Layout, w: &Layout) -> Result<Self> {
        let (n, h, wd, c) = x.shape().dims4()?;
        let (_, _, k, _) = w.shape().dims4()?;
        Ok(Self { n, h, w: wd, c, k })
    }
    fn pad(&self) -> isize {
        (self.k / 2) as isize
    }
    fn row_len(&self) -> usize {
        self.w * self.c
    }
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

/// `out[n,h,w,c] = bias[c] + sum_ij x[n, h+i-p, w+j-p, c] * taps[i, j, c]`, parallel over rows.
fn convolve(x: &[f32], taps: &[f32], bias: Option<&[f32]>, g: Geom) -> Vec<f32> {
    let row = g.row_len();
    let mut out = vec![0f32; g.n * g.h * row];
    let p = g.pad();
    let chunk_rows = rows_per_task(row * g.k * g.k, 1 << 16);
    out.par_chunks_mut(row * chunk_rows).enumerate().for_each(|(chunk, out_rows)| {
        for (r, out_row) in out_rows.chunks_mut(row).enumerate() {
            let global = chunk * chunk_rows + r;
            let (n, h) = (global / g.h, global % g.h);
            match bias {
                Some(b) => out_row.chunks_mut(g.c).for_each(|px| px.copy_from_slice(b)),
                None => out_row.fill(0.0),
            }
            for i in 0..g.k {
                let hh = h as isize + i as isize - p;
                if hh < 0 || hh >= g.h as isize {
                    continue;
                }
                let in_row = &x[(n * g.h + hh as usize) * row..][..row];
                for j in 0..g.k {
                    let tap = &taps[(i * g.k + j) * g.c..][..g.c];
                    let shift = j as isize - p;
                    let w_lo = (-shift).max(0) as usize;
                    let w_hi = (g.w as isize - shift).min(g.w as isize).max(0) as usize;
                    for wo in w_lo..w_hi {
                        let wi = (wo as isize + shift) as usize;
                        let src = &in_row[wi * g.c..][..g.c];
                        let dst = &mut out_row[wo * g.c..][..g.c];
                        for ((d, s), t) in dst.iter_mut().zip(src).zip(tap) {
                            *d += s * t;
                        }
                    }
                }
            }
        }
    });
    out
}

/// Weight and bias gradients: `dw[c,i,j] = sum x[.., h+i-p, w+j-p, c] * gy[.., h, w, c]`,
/// `db[c] = sum gy[.., c]`; packed as `[C*k*k + C]` in PyTorch's weight order then the bias.
fn weight_grads(x: &[f32], gy: &[f32], g: Geom) -> Vec<f32> {
    let row = g.row_len();
    let kk = g.k * g.k;
    let p = g.pad();
    let rows = g.n * g.h;
    let chunk_rows = rows_per_task(row * kk, 1 << 17);
    let partials: Vec<Vec<f32>> = (0..rows.div_ceil(chunk_rows))
        .into_par_iter()
        .map(|chunk| {
            let mut acc = vec![0f32; kk * g.c + g.c];
            let (taps, db) = acc.split_at_mut(kk * g.c);
            for global in chunk * chunk_rows..((chunk + 1) * chunk_rows).min(rows) {
                let (n, h) = (global / g.h, global % g.h);
                let gy_row = &gy[global * row..][..row];
                for px in gy_row.chunks(g.c) {
                    db.iter_mut().zip(px).for_each(|(d, v)| *d += v);
                }
                for i in 0..g.k {
                    let hh = h as isize + i as isize - p;
                    if hh < 0 || hh >= g.h as isize {
                        continue;
                    }
                    let in_row = &x[(n * g.h + hh as usize) * row..][..row];
                    for j in 0..g.k {
                        let tap = &mut taps[(i * g.k + j) * g.c..][..g.c];
                        let shift = j as isize - p;
                        let w_lo = (-shift).max(0) as usize;
                        let w_hi = (g.w as isize - shift).min(g.w as isize).max(0) as usize;
                        for wo in w_lo..w_hi {
                            let wi = (wo as isize + shift) as usize;
                            let src = &in_row[wi * g.c..][..g.c];
                            let gv = &gy_row[wo * g.c..][..g.c];
                            for ((t, s), v) in tap.iter_mut().zip(src).zip(gv) {
                                *t += s * v;
                            }
                        }
                    }
                }
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

/// Forward op: `(x, weight, bias) -> y`.
struct DepthwiseConv;

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
        let out = convolve(x, &taps, Some(as_f32(self.name(), s3, l3)?), g);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = grad.apply_op2_no_bwd(weight, &InputGrad)?;
        let packed = x.contiguous()?.apply_op2_no_bwd(&grad, &WeightGrad { k: weight.dim(2)? })?;
        let (c, kk) = (weight.dim(0)?, weight.elem_count() / weight.dim(0)?);
        let dw = packed.narrow(0, 0, c * kk)?.reshape(weight.shape())?;
        let db = packed.narrow(0, c * kk, c)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
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
        let out = convolve(as_f32(self.name(), s1, l1)?, &taps, None, g);
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
