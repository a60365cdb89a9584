//! `x @ weight^T` for the pointwise layers, written by the matrix multiply straight into a fresh
//! buffer.
//!
//! candle's matmul zero-fills its output before the multiply overwrites it, one extra pass over
//! the largest tensors of a ConvNeXt block (`[N*H*W, 4C]`); here the multiply (the same `gemm`
//! crate candle uses) writes uninitialized memory through a raw pointer and the buffer is only
//! exposed once every element is written.

use crate::cpu::as_f32;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// `x: [..., K]` times `weight: [N, K]` transposed, giving `[..., N]` (PyTorch's `F.linear`
/// without bias). Differentiable in both arguments.
pub fn linear_no_bias(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&k) {
        bail!("linear: input {:?} does not end in the weight's {k} input features", x.dims());
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
        if m * n > 0 {
            let threads = rayon::current_num_threads();
            let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
            // SAFETY: `out` has capacity m * n; gemm writes every element of the m x n row-major
            // destination (dst_rs = n, dst_cs = 1) and, with read_dst = false, reads none of it.
            // x is m x k row-major (lhs_rs = k, lhs_cs = 1); weight^T is read from the n x k
            // row-major weight (rhs_rs = 1, rhs_cs = k). Both slices hold exactly those elements.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    x.as_ptr(),
                    1,
                    k as isize,
                    w.as_ptr(),
                    k as isize,
                    1,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    parallelism,
                );
                out.set_len(m * n);
            }
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
        let dx = grad.matmul(weight)?;
        let dw = grad.t()?.matmul(x)?;
        Ok((Some(dx), Some(dw)))
    }
}
