//! Multi-head self-attention inside groups of tokens (Swin's windows), with an additive bias
//! per head and an optional additive mask per group, forward and backward in one op each.
//!
//! Semantics of `WindowAttention.forward` in `timm/models/swin_transformer.py` (and the
//! official Swin code), from the `qkv` projection to the input of `proj`:
//! `softmax(q k^T * scale + bias[h] + mask[w]) v` for every group `b` and head `h`, where
//! `w = b mod nW` (groups are window-major within an image, images one after another).
//!
//! Each (group, head) pair is two small matrix multiplies through the crate's GEMM entry point (`gemm`) reading `q`,
//! `k` and `v` in place from the `qkv` rows (no permute copies), with the scale, bias, mask and
//! softmax applied in one pass over the logits ([`crate::softmax`]). The probabilities are not
//! kept for the backward pass: it recomputes them (one more `q k^T`, as flash attention does),
//! so a training step holds `[groups, heads, N, N]` for no block at all. The bias gradient is
//! summed in fixed groups of windows, so that it has the same bits whatever the thread count.

use crate::cpu::as_f32;
use crate::gemm::{matmul, SendPtr};
use crate::softmax::{softmax_grad_rows_in_place, softmax_scaled_biased_rows_in_place};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Attention of `qkv: [B_, N, 3C]` (the output of Swin's `qkv` linear: per token `q`, then `k`,
/// then `v`, each `heads` blocks of `C / heads` channels) with `bias: [heads, N, N]` added to
/// every group's logits of that head and `mask: [nW, N, N]` (when given) added to group `b`'s
/// logits as `mask[b mod nW]`; `scale` multiplies `q k^T` (Swin: `head_dim^-0.5`).
/// Returns `[B_, N, C]`, heads concatenated along the channels. Differentiable in `qkv` and
/// `bias` (the mask is a constant).
pub fn window_attention(
    qkv: &Tensor,
    bias: &Tensor,
    mask: Option<&Tensor>,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    let (groups, n, c3) = qkv.dims3()?;
    if heads == 0 || c3 % (3 * heads) != 0 {
        bail!("window_attention: qkv {:?} does not split into q, k, v of {heads} heads", qkv.dims());
    }
    if bias.dims() != [heads, n, n] {
        bail!("window_attention: bias {:?} is not [heads, N, N] = [{heads}, {n}, {n}]", bias.dims());
    }
    let mask = match mask {
        Some(m) => {
            let (nw, a, b) = m.dims3()?;
            if a != n || b != n || nw == 0 || groups % nw != 0 {
                bail!("window_attention: mask {:?} is not [nW, {n}, {n}] with nW dividing {groups}", m.dims());
            }
            m.contiguous()?
        }
        None => Tensor::zeros((1, 0, 0), qkv.dtype(), qkv.device())?,
    };
    let op = WindowAttention { heads, scale: scale as f32 };
    qkv.contiguous()?.apply_op3(&bias.contiguous()?, &mask, op)
}

/// The shapes of one call: `groups` (B_), tokens `n`, channels `c`, `heads`, head dim `d`,
/// and the number of distinct masks `nw` (0: no mask).
#[derive(Clone, Copy, Debug)]
struct Dims {
    groups: usize,
    n: usize,
    c: usize,
    heads: usize,
    d: usize,
    nw: usize,
}

impl Dims {
    fn new(qkv: &Layout, heads: usize, mask: &Layout) -> Result<Self> {
        let (groups, n, c3) = qkv.shape().dims3()?;
        let nw = if mask.shape().elem_count() == 0 { 0 } else { mask.dims()[0] };
        Ok(Self { groups, n, c: c3 / 3, heads, d: c3 / 3 / heads, nw })
    }

    /// Windows per task: enough multiply-adds per task (about 2^18) to amortize a task,
    /// depending on the shapes only (never on the thread count).
    fn windows_per_task(&self) -> usize {
        let per_window = (self.n * self.n * self.d).max(1);
        (1usize << 18).div_ceil(per_window).clamp(1, self.groups.max(1))
    }

    /// The tasks: `(head, first window, end window)`, head-major.
    fn tasks(&self) -> Vec<(usize, usize, usize)> {
        let step = self.windows_per_task();
        (0..self.heads)
            .flat_map(|h| (0..self.groups).step_by(step).map(move |g0| (h, g0, (g0 + step).min(self.groups))))
            .collect()
    }
}

/// The inputs of one call, borrowed from the storages.
struct Inputs<'a> {
    qkv: &'a [f32],
    bias: &'a [f32],
    mask: &'a [f32],
    dims: Dims,
    scale: f32,
}

impl Inputs<'_> {
    /// `p = softmax(q k^T * scale + bias[h] + mask[g mod nW])` for group `g`, head `h`, into
    /// `p` (`[N, N]`).
    fn probabilities(&self, g: usize, h: usize, p: &mut [f32]) {
        let Dims { groups, n, c, heads, d, nw } = self.dims;
        assert!(g < groups && h < heads && p.len() == n * n && self.qkv.len() == groups * n * 3 * c);
        let nn = n * n;
        let mask = (nw > 0).then(|| &self.mask[(g % nw) * nn..(g % nw + 1) * nn]);
        // SAFETY: q (rows 3c apart, d columns) and k (read as the columns of k^T) lie inside
        // group g's rows of qkv, checked above; p holds n * n values.
        unsafe {
            let q = self.qkv.as_ptr().add(g * n * 3 * c + h * d);
            matmul((n, n, d), p.as_mut_ptr(), (n, 1), false, q, (3 * c, 1), q.add(c), (1, 3 * c), false);
        }
        softmax_scaled_biased_rows_in_place(p, n, self.scale, &self.bias[h * nn..(h + 1) * nn], mask);
    }
}

/// Forward op: `(qkv, bias, mask) -> [B_, N, C]`.
struct WindowAttention {
    heads: usize,
    scale: f32,
}

impl CustomOp3 for WindowAttention {
    fn name(&self) -> &'static str {
        "window-attention"
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
        let dims = Dims::new(l1, self.heads, l3)?;
        let inputs = Inputs {
            qkv: as_f32(self.name(), s1, l1)?,
            bias: as_f32(self.name(), s2, l2)?,
            mask: as_f32(self.name(), s3, l3)?,
            dims,
            scale: self.scale,
        };
        let (n, c, d) = (dims.n, dims.c, dims.d);
        let total = dims.groups * n * c;
        let mut out = Vec::<f32>::with_capacity(total);
        let dst = SendPtr(out.as_mut_ptr());
        dims.tasks().into_par_iter().for_each_init(
            || vec![0f32; n * n],
            |p, (h, g0, g1)| {
                for g in g0..g1 {
                    inputs.probabilities(g, h, p);
                    // SAFETY: g < groups and h < heads (checked by `probabilities`); v is read in
                    // place from group g's rows of qkv; the output block of (g, h) (rows of group
                    // g, columns h*d..(h+1)*d) is written by this task only.
                    unsafe {
                        let v = inputs.qkv.as_ptr().add(g * n * 3 * c + 2 * c + h * d);
                        let o = dst.get().add(g * n * c + h * d);
                        matmul((n, d, n), o, (c, 1), false, p.as_ptr(), (n, 1), v, (3 * c, 1), false);
                    }
                }
            },
        );
        // SAFETY: the tasks cover every (group, head) block, and each block was written in full.
        unsafe { out.set_len(total) };
        Ok((CpuStorage::F32(out), Shape::from((dims.groups, n, c))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        bias: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = WindowAttentionGrad { heads: self.heads, scale: self.scale, mask: mask.clone() };
        let packed = qkv.apply_op3_no_bwd(bias, &grad.contiguous()?, &op)?;
        let len = qkv.elem_count();
        let dqkv = packed.narrow(0, 0, len)?.reshape(qkv.shape())?;
        let dbias = packed.narrow(0, len, bias.elem_count())?.reshape(bias.shape())?;
        Ok((Some(dqkv), Some(dbias), None))
    }
}

/// Backward op: `(qkv, bias, dout) -> [dqkv, dbias]` packed flat; the mask rides along (a
/// custom op takes at most three tensors) and is read in place.
struct WindowAttentionGrad {
    heads: usize,
    scale: f32,
    mask: Tensor,
}

impl CustomOp3 for WindowAttentionGrad {
    fn name(&self) -> &'static str {
        "window-attention-grad"
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
        let (mask_storage, mask_layout) = self.mask.storage_and_layout();
        let Storage::Cpu(mask_cpu) = &*mask_storage else {
            bail!("{}: the mask is not on the CPU", self.name());
        };
        let dims = Dims::new(l1, self.heads, mask_layout)?;
        let inputs = Inputs {
            qkv: as_f32(self.name(), s1, l1)?,
            bias: as_f32(self.name(), s2, l2)?,
            mask: as_f32(self.name(), mask_cpu, mask_layout)?,
            dims,
            scale: self.scale,
        };
        let gout = as_f32(self.name(), s3, l3)?;
        let (n, c, d) = (dims.n, dims.c, dims.d);
        if gout.len() != dims.groups * n * c {
            bail!("{}: gradient {:?} does not fit qkv {:?}", self.name(), l3.dims(), l1.dims());
        }
        let (nn, len, bias_len) = (n * n, inputs.qkv.len(), inputs.bias.len());
        let mut packed = Vec::<f32>::with_capacity(len + bias_len);
        let dst = SendPtr(packed.as_mut_ptr());
        let scale = self.scale;
        let tasks = dims.tasks();
        let partials: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(h, g0, g1)| {
                let mut p = vec![0f32; nn];
                let mut ds = vec![0f32; nn];
                let mut dbias = vec![0f32; nn];
                for g in g0..g1 {
                    inputs.probabilities(g, h, &mut p);
                    // SAFETY: g < groups and h < heads (checked by `probabilities`). q, k, v and
                    // dout are read in place; the dq, dk, dv blocks of (g, h) (rows of group g,
                    // columns h*d.. of each third of dqkv) are written by this task only.
                    unsafe {
                        let q = inputs.qkv.as_ptr().add(g * n * 3 * c + h * d);
                        let (k, v) = (q.add(c), q.add(2 * c));
                        let go = gout.as_ptr().add(g * n * c + h * d);
                        let dq = dst.get().add(g * n * 3 * c + h * d);
                        let (dk, dv) = (dq.add(c), dq.add(2 * c));
                        // dP [n, n] = dO [n, d] v^T.
                        matmul((n, n, d), ds.as_mut_ptr(), (n, 1), false, go, (c, 1), v, (1, 3 * c), false);
                        // dV [n, d] = P^T dO.
                        matmul((n, d, n), dv, (3 * c, 1), false, p.as_ptr(), (1, n), go, (c, 1), false);
                        // dS = P * (dP - <P, dP>), the gradient of the logits (= of the bias).
                        softmax_grad_rows_in_place(&p, &mut ds, n);
                        dbias.iter_mut().zip(&ds).for_each(|(a, &v)| *a += v);
                        ds.iter_mut().for_each(|v| *v *= scale);
                        // dQ [n, d] = dS k * scale; dK = dS^T q * scale.
                        matmul((n, d, n), dq, (3 * c, 1), false, ds.as_ptr(), (n, 1), k, (3 * c, 1), false);
                        matmul((n, d, n), dk, (3 * c, 1), false, ds.as_ptr(), (1, n), q, (3 * c, 1), false);
                    }
                }
                dbias
            })
            .collect();
        // SAFETY: the tasks wrote every (group, head) block of dqkv; dbias follows it in the
        // capacity and is written below, the per-task partials summed in task order.
        unsafe {
            let dbias = std::slice::from_raw_parts_mut(dst.get().add(len), bias_len);
            dbias.fill(0.0);
            for (&(h, _, _), part) in tasks.iter().zip(&partials) {
                dbias[h * nn..(h + 1) * nn].iter_mut().zip(part).for_each(|(a, &v)| *a += v);
            }
            packed.set_len(len + bias_len);
        }
        let total = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(total)))
    }
}
