//! Dense 2-D convolution on PyTorch's `[N, C, H, W]` layout (groups 1, dilation 1, square
//! kernel), with the bias fused and a hand-written backward, for the FPN, the RPN head and the
//! RoI heads.
//!
//! The work is cut into chunks of output columns (a band of output rows of one image, or a few
//! whole small images such as 7x7 RoIs), so that the im2col buffer of a chunk stays a few MB
//! however large the batch. Each chunk is one matrix multiply (the `gemm` crate, as candle
//! uses) written straight into the output, which starts as the bias. A 1x1 convolution with
//! stride 1 and no padding reads the input in place.
//!
//! Backward: the weight gradient sums `dY · colᵀ` over chunks into a fixed number of partials
//! added in order (the same bits whatever the thread count); the input gradient of a stride-1
//! convolution is the forward convolution of `dY` with the flipped, transposed weight, and for
//! larger strides a col2im of `Wᵀ · dY` per image.

use crate::cpu::{as_f32, sum_partials};
use crate::gemm::{matmul, SendPtr};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `conv2d(x, weight) + bias` for `x: [N, Cin, H, W]`, `weight: [Cout, Cin, k, k]`,
/// `bias: [Cout]`, zero padding `padding` on every side; returns `[N, Cout, H', W']` with
/// `H' = (H + 2 padding - k) / stride + 1` (PyTorch's `F.conv2d` with groups 1, dilation 1).
/// Differentiable in all arguments. An empty batch gives an empty output (and zero weight
/// gradients).
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, cin, h, w) = x.dims4()?;
    let (cout, wcin, kh, kw) = weight.dims4()?;
    if wcin != cin || kh != kw {
        bail!("conv2d: weight {:?} does not fit input {:?} with a square kernel", weight.dims(), x.dims());
    }
    if stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
        bail!("conv2d: input {:?} too small for kernel {kh}, padding {padding}, stride {stride}", x.dims());
    }
    if !crate::generic::fast_cpu(x) {
        return crate::generic::conv2d(x, weight, bias, stride, padding);
    }
    let op = Conv2dOp { stride, padding };
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => {
            if b.dims() != [cout] {
                bail!("conv2d: bias {:?} does not fit {cout} output channels", b.dims());
            }
            x.apply_op3(&weight, &b.contiguous()?, op)
        }
        None => x.apply_op2(&weight, op),
    }
}

/// Geometry of one convolution, read from the shapes.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geom {
    fn new(x: &Shape, weight: &Shape, stride: usize, pad: usize) -> Result<Self> {
        let (n, cin, h, w) = x.dims4()?;
        let (cout, _, k, _) = weight.dims4()?;
        if stride == 0 || h + 2 * pad < k || w + 2 * pad < k {
            bail!("conv2d: input {x:?} too small for kernel {k}, padding {pad}, stride {stride}");
        }
        let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
        Ok(Self { n, cin, h, w, cout, k, stride, pad, ho, wo })
    }
    /// Rows of the im2col matrix: `Cin * k * k`.
    fn ckk(&self) -> usize {
        self.cin * self.k * self.k
    }
    fn in_image(&self) -> usize {
        self.cin * self.h * self.w
    }
    fn out_plane(&self) -> usize {
        self.ho * self.wo
    }
    fn out_image(&self) -> usize {
        self.cout * self.out_plane()
    }
    fn out_shape(&self) -> Shape {
        Shape::from((self.n, self.cout, self.ho, self.wo))
    }
    /// A 1x1 convolution that reads each input column as it is (no im2col needed).
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
}

/// Floats of im2col buffer a chunk aims for (4 MB).
const CHUNK_FLOATS: usize = 1 << 20;
/// A chunk never goes below this many columns (a matrix multiply needs some width).
const MIN_CHUNK_COLS: usize = 128;
/// Work is cut into at least this many chunks when there are enough columns, so both threads
/// of a small call are busy. Fixed (not the thread count) so that results do not depend on it.
const MIN_CHUNKS: usize = 8;
/// Weight-gradient partials: chunks are summed in this many contiguous groups, then the group
/// sums in order.
const WEIGHT_GRAD_TASKS: usize = 8;

/// Output columns `[r0, r1)` of images `n0..n1` (a row band when `n1 - n0 == 1`, otherwise
/// whole images).
#[derive(Clone, Copy, Debug)]
struct Chunk {
    n0: usize,
    n1: usize,
    r0: usize,
    r1: usize,
}

impl Chunk {
    fn single(&self) -> bool {
        self.n1 - self.n0 == 1
    }
    fn cols(&self, g: &Geom) -> usize {
        (self.n1 - self.n0) * (self.r1 - self.r0) * g.wo
    }
}

/// Cuts the output columns of a call into chunks (depends on the shapes only).
fn plan(g: &Geom) -> Vec<Chunk> {
    let plane = g.out_plane();
    let total = g.n * plane;
    if total == 0 {
        return Vec::new();
    }
    let target = (CHUNK_FLOATS / g.ckk().max(1)).max(MIN_CHUNK_COLS).min(total.div_ceil(MIN_CHUNKS)).max(1);
    let mut chunks = Vec::new();
    if plane >= target || g.n == 1 {
        let rows = (target / g.wo).max(1);
        for n in 0..g.n {
            for r0 in (0..g.ho).step_by(rows) {
                chunks.push(Chunk { n0: n, n1: n + 1, r0, r1: (r0 + rows).min(g.ho) });
            }
        }
    } else {
        let imgs = (target / plane).max(1);
        for n0 in (0..g.n).step_by(imgs) {
            chunks.push(Chunk { n0, n1: (n0 + imgs).min(g.n), r0: 0, r1: g.ho });
        }
    }
    chunks
}

/// Writes the im2col matrix of `chunk` into `col` (`[Cin*k*k, cols]`, row-major): row
/// `(ci, ki, kj)`, column `(image, output row, output column)` holds the input pixel that tap
/// reads, or zero in the padding. Every element is written (the buffer is reused between
/// chunks and not cleared first: that would be one more pass over it).
fn im2col(x: &[f32], g: &Geom, chunk: Chunk, col: &mut Vec<f32>) {
    let cols = chunk.cols(g);
    let len = g.ckk() * cols;
    if col.len() < len {
        col.resize(len, 0.0);
    }
    col.truncate(len);
    let (k, s, p) = (g.k, g.stride, g.pad as isize);
    let mut rows = col.chunks_exact_mut(cols);
    for ci in 0..g.cin {
        for ki in 0..k {
            for kj in 0..k {
                let row = rows.next().expect("ckk rows");
                // Output columns whose input column `wo * s + kj - p` lies inside the image.
                let first = (p - kj as isize).max(0) as usize;
                let first = first.div_ceil(s).min(g.wo);
                let last = ((g.w as isize + p - kj as isize - 1).div_euclid(s as isize) + 1).clamp(0, g.wo as isize);
                let last = (last as usize).max(first);
                let mut out = row.chunks_exact_mut(g.wo);
                for n in chunk.n0..chunk.n1 {
                    let plane = &x[n * g.in_image() + ci * g.h * g.w..][..g.h * g.w];
                    for ho in chunk.r0..chunk.r1 {
                        let dst = out.next().expect("one row per output row");
                        let hi = (ho * s + ki) as isize - p;
                        if hi < 0 || hi >= g.h as isize {
                            dst.fill(0.0);
                            continue;
                        }
                        dst[..first].fill(0.0);
                        dst[last..].fill(0.0);
                        let src = &plane[hi as usize * g.w..][..g.w];
                        if s == 1 {
                            let off = first + kj - g.pad;
                            dst[first..last].copy_from_slice(&src[off..off + last - first]);
                        } else {
                            for (wo, d) in dst.iter_mut().enumerate().take(last).skip(first) {
                                *d = src[wo * s + kj - g.pad];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The forward convolution: `weight` is `[Cout, Cin*k*k]` row-major; returns `[N, Cout, H', W']`.
fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Geom) -> Vec<f32> {
    let len = g.n * g.out_image();
    let mut out = Vec::<f32>::with_capacity(len);
    let dst = SendPtr(out.as_mut_ptr());
    let (ckk, plane) = (g.ckk(), g.out_plane());
    plan(g).into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(col, tmp), chunk| {
            let cols = chunk.cols(g);
            let direct = g.pointwise() && chunk.single();
            let (rhs, rhs_rs) = if direct {
                (x[chunk.n0 * g.in_image() + chunk.r0 * g.wo..].as_ptr(), plane)
            } else {
                im2col(x, g, chunk, col);
                (col.as_ptr(), cols)
            };
            // Single image: the band is a [Cout, cols] block of the output with row stride
            // `plane`; several images: a [Cout, cols] scratch, scattered afterwards.
            let (d, d_rs) = if chunk.single() {
                // SAFETY: chunks cover disjoint output columns; this block starts inside `out`.
                (unsafe { dst.get().add(chunk.n0 * g.out_image() + chunk.r0 * g.wo) }, plane)
            } else {
                tmp.clear();
                tmp.reserve(g.cout * cols);
                (tmp.as_mut_ptr(), cols)
            };
            if let Some(b) = bias {
                for (co, &bv) in b.iter().enumerate() {
                    for j in 0..cols {
                        // SAFETY: row co < Cout, column j < cols of the block chosen above.
                        unsafe { *d.add(co * d_rs + j) = bv };
                    }
                }
            }
            // SAFETY: lhs is the [Cout, ckk] weight; rhs is [ckk, cols] with row stride rhs_rs
            // inside x or col; dst as above, written only by this task.
            unsafe {
                matmul(
                    (g.cout, cols, ckk),
                    d,
                    (d_rs, 1),
                    bias.is_some(),
                    weight.as_ptr(),
                    (ckk, 1),
                    rhs,
                    (rhs_rs, 1),
                    false,
                );
            }
            if !chunk.single() {
                // SAFETY: the matmul wrote all Cout * cols values of tmp.
                unsafe { tmp.set_len(g.cout * cols) };
                for (i, n) in (chunk.n0..chunk.n1).enumerate() {
                    for co in 0..g.cout {
                        let src = &tmp[co * cols + i * plane..][..plane];
                        // SAFETY: image n's channel co is a plane no other chunk writes.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                src.as_ptr(),
                                dst.get().add(n * g.out_image() + co * plane),
                                plane,
                            )
                        };
                    }
                }
            }
        },
    );
    // SAFETY: the chunks of `plan` cover every output column of every image and channel, and
    // each was written above (bias then accumulate, or a plain multiply).
    unsafe { out.set_len(len) };
    out
}

/// Weight and bias gradients packed as `[Cout*Cin*k*k + Cout]`: `dW = Σ dY · colᵀ`,
/// `db = Σ dY`, summed per group of chunks then over groups in order.
fn weight_grads(x: &[f32], gy: &[f32], g: &Geom) -> Vec<f32> {
    let (ckk, plane) = (g.ckk(), g.out_plane());
    let wlen = g.cout * ckk;
    let chunks = plan(g);
    let per_task = chunks.len().div_ceil(WEIGHT_GRAD_TASKS).max(1);
    let partials: Vec<Vec<f32>> = chunks
        .par_chunks(per_task)
        .map(|group| {
            let mut acc = vec![0f32; wlen + g.cout];
            let (mut col, mut tmp) = (Vec::new(), Vec::new());
            for &chunk in group {
                let cols = chunk.cols(g);
                let (rhs, rhs_rs) = if g.pointwise() && chunk.single() {
                    (x[chunk.n0 * g.in_image() + chunk.r0 * g.wo..].as_ptr(), plane)
                } else {
                    im2col(x, g, chunk, &mut col);
                    (col.as_ptr(), cols)
                };
                let (lhs, lhs_rs) = if chunk.single() {
                    (gy[chunk.n0 * g.out_image() + chunk.r0 * g.wo..].as_ptr(), plane)
                } else {
                    tmp.clear();
                    for co in 0..g.cout {
                        for n in chunk.n0..chunk.n1 {
                            tmp.extend_from_slice(&gy[n * g.out_image() + co * plane..][..plane]);
                        }
                    }
                    (tmp.as_ptr(), cols)
                };
                let (dw, db) = acc.split_at_mut(wlen);
                for (co, d) in db.iter_mut().enumerate() {
                    // SAFETY: row co of the [Cout, cols] dY block chosen above.
                    let row = unsafe { std::slice::from_raw_parts(lhs.add(co * lhs_rs), cols) };
                    *d += row.iter().sum::<f32>();
                }
                // SAFETY: dW [Cout, ckk] += dY [Cout, cols] · colᵀ, col being [ckk, cols] with
                // row stride rhs_rs; all inside their buffers.
                unsafe {
                    matmul(
                        (g.cout, ckk, cols),
                        dw.as_mut_ptr(),
                        (ckk, 1),
                        true,
                        lhs,
                        (lhs_rs, 1),
                        rhs,
                        (1, rhs_rs),
                        false,
                    );
                }
            }
            acc
        })
        .collect();
    sum_partials(partials, wlen + g.cout)
}

/// Input gradient `[N, Cin, H, W]` of the convolution with `weight` (`[Cout, Cin, k, k]`).
fn input_grad(gy: &[f32], weight: &[f32], g: &Geom) -> Vec<f32> {
    let kk = g.k * g.k;
    if g.stride == 1 && g.pad < g.k {
        // dX = conv(dY, W') with W'[ci, co, i, j] = W[co, ci, k-1-i, k-1-j], padding k-1-p.
        let mut flipped = vec![0f32; weight.len()];
        for co in 0..g.cout {
            for ci in 0..g.cin {
                for t in 0..kk {
                    flipped[(ci * g.cout + co) * kk + t] = weight[(co * g.cin + ci) * kk + kk - 1 - t];
                }
            }
        }
        let gt = Geom { cin: g.cout, cout: g.cin, h: g.ho, w: g.wo, pad: g.k - 1 - g.pad, ho: g.h, wo: g.w, ..*g };
        return forward(gy, &flipped, None, &gt);
    }
    col2im_input_grad(gy, weight, g)
}

/// Input gradient for any stride: per image, `dcol = Wᵀ · dY` band by band, each band's
/// columns added back to the input pixels they were read from.
fn col2im_input_grad(gy: &[f32], weight: &[f32], g: &Geom) -> Vec<f32> {
    let (ckk, plane, (k, s, p)) = (g.ckk(), g.out_plane(), (g.k, g.stride, g.pad));
    let mut dx = vec![0f32; g.n * g.in_image()];
    let rows = (CHUNK_FLOATS / ckk.max(1) / g.wo.max(1)).max(1);
    let parallel_gemm = g.n < 2 * rayon::current_num_threads();
    dx.par_chunks_mut(g.in_image().max(1)).enumerate().for_each(|(n, dxn)| {
        let mut dcol = Vec::<f32>::new();
        for r0 in (0..g.ho).step_by(rows) {
            let r1 = (r0 + rows).min(g.ho);
            let cols = (r1 - r0) * g.wo;
            dcol.clear();
            dcol.reserve(ckk * cols);
            // SAFETY: dcol [ckk, cols] = Wᵀ [ckk, Cout] · dY band [Cout, cols] (row stride
            // plane), all inside their buffers; the multiply writes every dcol element.
            unsafe {
                matmul(
                    (ckk, cols, g.cout),
                    dcol.as_mut_ptr(),
                    (cols, 1),
                    false,
                    weight.as_ptr(),
                    (1, ckk),
                    gy[n * g.out_image() + r0 * g.wo..].as_ptr(),
                    (plane, 1),
                    parallel_gemm,
                );
                dcol.set_len(ckk * cols);
            }
            for ci in 0..g.cin {
                for ki in 0..k {
                    for kj in 0..k {
                        let row = &dcol[((ci * k + ki) * k + kj) * cols..][..cols];
                        for ho in r0..r1 {
                            let hi = (ho * s + ki) as isize - p as isize;
                            if hi < 0 || hi >= g.h as isize {
                                continue;
                            }
                            let dst = &mut dxn[(ci * g.h + hi as usize) * g.w..][..g.w];
                            for wo in 0..g.wo {
                                let wi = (wo * s + kj) as isize - p as isize;
                                if wi >= 0 && wi < g.w as isize {
                                    dst[wi as usize] += row[(ho - r0) * g.wo + wo];
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    dx
}

/// Forward op: `(x, weight[, bias]) -> y`.
#[derive(Clone, Copy)]
struct Conv2dOp {
    stride: usize,
    padding: usize,
}

impl Conv2dOp {
    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(x.1.shape(), w.1.shape(), self.stride, self.padding)?;
        let xs = as_f32("conv2d", x.0, x.1)?;
        let ws = as_f32("conv2d", w.0, w.1)?;
        Ok((CpuStorage::F32(forward(xs, ws, b, &g)), g.out_shape()))
    }

    /// `(dx, dweight, dbias)` for the output gradient `grad`.
    fn grads(&self, x: &Tensor, weight: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let dx = grad.apply_op2_no_bwd(weight, &InputGrad { op: *self, x_shape: x.shape().clone() })?;
        let packed = x.apply_op2_no_bwd(&grad, &WeightGrad { op: *self, w_shape: weight.shape().clone() })?;
        let wlen = weight.elem_count();
        let dw = packed.narrow(0, 0, wlen)?.reshape(weight.shape())?;
        let db = packed.narrow(0, wlen, weight.dim(0)?)?;
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d"
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
        let b = as_f32("conv2d", s3, l3)?;
        self.run((s1, l1), (s2, l2), Some(b))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, grad)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Backward op for the input: `(dY, weight) -> dX`.
struct InputGrad {
    op: Conv2dOp,
    x_shape: Shape,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "conv2d-input-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(&self.x_shape, l2.shape(), self.op.stride, self.op.padding)?;
        if l1.shape().dims() != g.out_shape().dims() {
            bail!("conv2d backward: gradient {:?} does not match output {:?}", l1.shape(), g.out_shape());
        }
        let dx = input_grad(as_f32(self.name(), s1, l1)?, as_f32(self.name(), s2, l2)?, &g);
        Ok((CpuStorage::F32(dx), self.x_shape.clone()))
    }
}

/// Backward op for weight and bias: `(x, dY) -> [dW flattened, db]`.
struct WeightGrad {
    op: Conv2dOp,
    w_shape: Shape,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "conv2d-weight-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.shape(), &self.w_shape, self.op.stride, self.op.padding)?;
        if l2.shape().dims() != g.out_shape().dims() {
            bail!("conv2d backward: gradient {:?} does not match output {:?}", l2.shape(), g.out_shape());
        }
        let packed = weight_grads(as_f32(self.name(), s1, l1)?, as_f32(self.name(), s2, l2)?, &g);
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}
