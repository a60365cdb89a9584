//! `x @ weight^T` for the pointwise layers, and its two gradients, each written by the matrix
//! multiply straight into a fresh buffer.
//!
//! candle's matmul zero-fills its output before the multiply overwrites it, one extra pass over
//! the largest tensors of a ConvNeXt block (`[N*H*W, 4C]`); here the multiply (the same `gemm`
//! crate candle uses) writes uninitialized memory through a raw pointer and the buffer is only
//! exposed once every element is written.

use crate::cpu::as_f32;
use crate::gemm::{matmul, matmul_packed, PackedWeight};
use candle_core::CustomOp1;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::sync::Arc;

/// `x: [..., K]` times `weight: [N, K]` transposed, giving `[..., N]` (PyTorch's `F.linear`
/// without bias). Differentiable in both arguments.
pub fn linear_no_bias(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&k) {
        bail!("linear: input {:?} does not end in the weight's {k} input features", x.dims());
    }
    if !crate::generic::fast_cpu(x) {
        return crate::generic::linear_no_bias(x, weight);
    }
    let rows = x.elem_count() / k.max(1);
    let y = x.contiguous()?.reshape((rows, k))?.apply_op2(&weight.contiguous()?, LinearNoBias)?;
    *dims.last_mut().expect("at least one dim") = n;
    y.reshape(dims)
}

/// Forward op: `(x [M, K], weight [N, K]) -> x @ weight^T`.
struct LinearNoBias;

impl CustomOp2 for LinearNoBias {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s1, l1)?;
        let w = as_f32(self.name(), s2, l2)?;
        let (m, k) = l1.shape().dims2()?;
        let (n, _) = l2.shape().dims2()?;
        let mut out = Vec::<f32>::with_capacity(m * n);
        // SAFETY: `out` has capacity m * n and the multiply writes every element of the m x n
        // row-major destination without reading it; x is m x k row-major and weight^T is read
        // from the n x k row-major weight with strides (1, k).
        unsafe {
            matmul((m, n, k), out.as_mut_ptr(), (n, 1), false, x.as_ptr(), (k, 1), w.as_ptr(), (1, k), true);
            out.set_len(m * n);
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = grad.apply_op2_no_bwd(weight, &LinearGrad::Input)?;
        let dw = grad.apply_op2_no_bwd(x, &LinearGrad::Weight)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Backward ops, `grad [M, N]` with the other forward argument: `Input` takes the weight
/// `[N, K]` and gives `dX = grad · W [M, K]`; `Weight` takes `x [M, K]` and gives
/// `dW = gradᵀ · x [N, K]` (a reduction over the M rows). Written into fresh buffers, as the
/// forward.
enum LinearGrad {
    Input,
    Weight,
}

impl CustomOp2 for LinearGrad {
    fn name(&self) -> &'static str {
        match self {
            LinearGrad::Input => "linear-grad-input",
            LinearGrad::Weight => "linear-grad-weight",
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = as_f32(self.name(), s1, l1)?;
        let other = as_f32(self.name(), s2, l2)?;
        let (m, n) = l1.shape().dims2()?;
        let (rows, k) = l2.shape().dims2()?;
        let (out_rows, shape) = match self {
            LinearGrad::Input if rows == n => (m, Shape::from((m, k))),
            LinearGrad::Weight if rows == m => (n, Shape::from((n, k))),
            _ => bail!("{}: grad {:?} does not fit {:?}", self.name(), l1.dims(), l2.dims()),
        };
        let mut out = Vec::<f32>::with_capacity(out_rows * k);
        // SAFETY: `out` has capacity out_rows * k and the multiply writes all of it without
        // reading it. Input: [m, n] · [n, k], both row-major. Weight: gradᵀ is read from the
        // row-major [m, n] grad with strides (1, n), times the row-major [m, k] x.
        unsafe {
            match self {
                LinearGrad::Input => {
                    matmul((m, k, n), out.as_mut_ptr(), (k, 1), false, g.as_ptr(), (n, 1), other.as_ptr(), (k, 1), true)
                }
                LinearGrad::Weight => {
                    matmul((n, k, m), out.as_mut_ptr(), (k, 1), false, g.as_ptr(), (1, n), other.as_ptr(), (k, 1), true)
                }
            }
            out.set_len(out_rows * k);
        }
        Ok((CpuStorage::F32(out), shape))
    }
}

/// `x: [..., K]` times a packed weight's `weightᵀ`, giving `[..., N]`: [`linear_no_bias`] for
/// inference, with the weight packed once ([`PackedWeight`]). Not differentiable.
pub fn linear_packed(x: &Tensor, weight: &Arc<PackedWeight>) -> Result<Tensor> {
    let (k, n) = weight.dims();
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&k) {
        bail!("linear: input {:?} does not end in the weight's {k} input features", x.dims());
    }
    let rows = x.elem_count() / k.max(1);
    let y = x.contiguous()?.reshape((rows, k))?.apply_op1_no_bwd(&LinearPacked(weight.clone()))?;
    *dims.last_mut().expect("at least one dim") = n;
    y.reshape(dims)
}

/// Forward only: `x [M, K]` times a packed weight.
struct LinearPacked(Arc<PackedWeight>);

impl CustomOp1 for LinearPacked {
    fn name(&self) -> &'static str {
        "linear-packed"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s, l)?;
        let (m, k) = l.shape().dims2()?;
        let (wk, n) = self.0.dims();
        if k != wk {
            bail!("linear: input has {k} features, the packed weight {wk}");
        }
        let mut out = Vec::<f32>::with_capacity(m * n);
        // SAFETY: x is m x k row-major, `out` has room for m x n and is fully written.
        unsafe {
            matmul_packed(m, out.as_mut_ptr(), x.as_ptr(), &self.0, true);
            out.set_len(m * n);
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}
