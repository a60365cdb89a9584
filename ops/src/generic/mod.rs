//! Device-generic paths of the custom ops: the same maths as the fast CPU kernels, written with
//! candle tensor ops so that it runs on every candle device (CUDA and Metal on candle's own
//! kernels) and in every float dtype.
//!
//! Each op's public function sends a tensor on the CPU to its fast kernel (`f32` only, as
//! before) and a tensor on any other device here (or, with the `cuda` feature, to a CUDA kernel
//! where one exists). The forward is
//! candle ops; the backward is candle's autograd through them, except where candle 0.11's
//! autograd is missing or differs from PyTorch (noted at each function), where the ops are
//! chosen so that autograd gives PyTorch's gradient. The functions are public so that tests can
//! run them on the CPU against the fast kernels: `ops/tests/generic.rs` checks every one,
//! forward within 1e-5 and gradients within 1e-4.
//!
//! The dense convolution and the matrix multiplies honour [`crate::autocast`]'s autocast
//! (inputs cast to bf16 or f16, the result back to the input dtype; the weights stay `f32`).

mod batch_norm;
mod conv;
mod elementwise;
mod layer_norm;
mod linear;
mod resample;
mod roi_align;

pub use batch_norm::batch_norm_train;
pub use conv::{conv2d, depthwise_conv2d_layer_norm_nhwc, depthwise_conv2d_nhwc};
pub use elementwise::{bias_add, bias_gelu, drop_path_scaled, layer_scale_drop_path_residual, relu};
pub use layer_norm::layer_norm;
pub use linear::{gelu_linear, linear_no_bias};
pub use resample::{resize_bilinear, resize_nearest, subsample_stride2};
pub use roi_align::{roi_align, roi_align_chunked};

use candle_core::{DType, Tensor};

/// Whether `x` goes to the fast CPU kernel: any tensor on the CPU (the kernels take `f32` and
/// refuse other dtypes, as they always have). Tensors on other devices take the generic path
/// (or a device kernel).
pub(crate) fn fast_cpu(x: &Tensor) -> bool {
    x.device().is_cpu()
}

/// Whether `x` goes to a CUDA kernel of this crate (built with the `cuda` feature): an `f32`
/// tensor on a CUDA device.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_f32(x: &Tensor) -> bool {
    x.device().is_cuda() && x.dtype() == DType::F32
}

/// The dtype reductions are computed in: `f32` for the 16-bit floats (as PyTorch's autocast
/// runs normalizations in `f32`), the input's own dtype otherwise.
pub(crate) fn accumulation_dtype(dtype: DType) -> DType {
    match dtype {
        DType::BF16 | DType::F16 => DType::F32,
        d => d,
    }
}
