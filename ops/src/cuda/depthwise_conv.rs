//! The depthwise convolution on CUDA: forward, input gradient and weight/bias gradients
//! (`kernels/depthwise_conv.cu`).

use super::{cuda_only, f32_view, grid, int, ptx};
use crate::depthwise_conv::check_weight;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

const MODULE: &str = "nextdet_depthwise_conv";

/// [`crate::depthwise_conv2d_nhwc`] on CUDA: `x: [N, H, W, C]`, `weight: [C, 1, k, k]`,
/// `bias: [C]`, all `f32` on one CUDA device. Differentiable in all three.
pub(crate) fn depthwise_conv2d_nhwc(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    check_weight(x.dim(3)?, weight, bias)?;
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, DepthwiseConvCuda)
}

/// `(n, h, w, c, k)` of a call, as the kernels' ints.
fn dims(x: &Shape, k: usize) -> Result<(i32, i32, i32, i32, i32)> {
    let (n, h, w, c) = x.dims4()?;
    let op = "depthwise_conv2d";
    Ok((int(op, n)?, int(op, h)?, int(op, w)?, int(op, c)?, int(op, k)?))
}

/// Forward op: `(x, weight, bias) -> y`.
struct DepthwiseConvCuda;

impl CustomOp3 for DepthwiseConvCuda {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Err(cuda_only(self.name()))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &s1.device;
        let (x, w, b) =
            (f32_view(self.name(), s1, l1)?, f32_view(self.name(), s2, l2)?, f32_view(self.name(), s3, l3)?);
        let (n, h, wd, c, k) = dims(l1.shape(), l2.shape().dims()[2])?;
        let total = l1.shape().elem_count();
        // SAFETY: the kernel writes every one of the `total` outputs.
        let y = unsafe { dev.alloc::<f32>(total)? };
        let f = dev.get_or_load_custom_func("dwconv_fwd_f32", MODULE, ptx::DEPTHWISE_CONV)?;
        let mut launch = f.builder();
        launch.arg(&x).arg(&w).arg(&b).arg(&y).arg(&n).arg(&h).arg(&wd).arg(&c).arg(&k);
        // SAFETY: the arguments match the kernel's signature; every index it forms is inside
        // the [N, H, W, C] input/output and the [C, k, k] weight.
        unsafe { launch.launch(grid(total)) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), l1.shape().clone()))
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
        let dx = grad.apply_op2_no_bwd(weight, &InputGradCuda)?;
        let (c, k) = (weight.dim(0)?, weight.dim(2)?);
        // [parts, k * k + 1, C] partial sums, added here in a fixed order.
        let partials = x.apply_op2_no_bwd(&grad, &WeightGradCuda { k })?;
        let sums = partials.sum(0)?;
        let dw = sums.narrow(0, 0, k * k)?.t()?.reshape((c, 1, k, k))?;
        let db = sums.get(k * k)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Backward op for the input: `(grad_y, weight) -> grad_x`.
struct InputGradCuda;

impl CustomOp2 for InputGradCuda {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-input-grad-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Err(cuda_only(self.name()))
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &s1.device;
        let (gy, w) = (f32_view(self.name(), s1, l1)?, f32_view(self.name(), s2, l2)?);
        let (n, h, wd, c, k) = dims(l1.shape(), l2.shape().dims()[2])?;
        let total = l1.shape().elem_count();
        // SAFETY: the kernel writes every one of the `total` outputs.
        let dx = unsafe { dev.alloc::<f32>(total)? };
        let f = dev.get_or_load_custom_func("dwconv_input_grad_f32", MODULE, ptx::DEPTHWISE_CONV)?;
        let mut launch = f.builder();
        launch.arg(&gy).arg(&w).arg(&dx).arg(&n).arg(&h).arg(&wd).arg(&c).arg(&k);
        // SAFETY: as for the forward.
        unsafe { launch.launch(grid(total)) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(dx, dev.clone()), l1.shape().clone()))
    }
}

/// Backward op for the weight and bias: `(x, grad_y) -> [parts, k * k + 1, C]` partial sums.
struct WeightGradCuda {
    k: usize,
}

/// Pixel-row partitions of the weight gradient: blocks per (tap, 32 channels).
const PARTS: usize = 16;

impl CustomOp2 for WeightGradCuda {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-weight-grad-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Err(cuda_only(self.name()))
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &s1.device;
        let (x, gy) = (f32_view(self.name(), s1, l1)?, f32_view(self.name(), s2, l2)?);
        let (n, h, wd, c, k) = dims(l1.shape(), self.k)?;
        let (channels, taps) = (l1.shape().dims()[3], self.k * self.k + 1);
        let out = dev.alloc_zeros::<f32>(PARTS * taps * channels)?;
        let f = dev.get_or_load_custom_func("dwconv_weight_grad_partial_f32", MODULE, ptx::DEPTHWISE_CONV)?;
        let parts = PARTS as i32;
        let cfg = LaunchConfig {
            grid_dim: (taps as u32, channels.div_ceil(32) as u32, PARTS as u32),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = f.builder();
        launch.arg(&x).arg(&gy).arg(&out).arg(&n).arg(&h).arg(&wd).arg(&c).arg(&k).arg(&parts);
        // SAFETY: the grid covers every (tap, channel block, part) once; the kernel writes
        // out[part, tap, channel] for channels below C only.
        unsafe { launch.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((PARTS, taps, channels))))
    }
}
