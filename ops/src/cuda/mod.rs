//! CUDA kernels for the ops whose device-generic path is slow on a GPU (`kernels/*.cu`, compiled
//! to PTX at build time and loaded on first use): the depthwise convolution (candle's grouped
//! convolution runs one small convolution per channel), RoIAlign (forward and backward), the
//! NMS suppression mask and mask pasting. Each is a candle custom op whose `cuda_fwd` launches
//! the kernel; its CPU side refuses (the public ops send CPU tensors to the CPU kernels first).
//!
//! The kernels compute what the CPU kernels compute, with the same formulas; the parity tests of
//! `tools/gpu-check.sh` compare them on a GPU.

mod depthwise_conv;
mod mask_paste;
mod nms;
mod roi_align;

pub(crate) use depthwise_conv::depthwise_conv2d_nhwc;
pub(crate) use mask_paste::paste_masks;
pub(crate) use nms::nms_sorted;
pub(crate) use roi_align::roi_align;

use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig};
use candle_core::{bail, CudaStorage, Layout, Result};

/// The PTX of each kernel file, as `build.rs` embedded it.
mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

/// Threads per block of the elementwise-style kernels.
const THREADS: u32 = 256;

/// A launch of `total` grid-stride iterations: enough blocks for every element, at most 65535
/// (the kernels loop over the rest).
fn grid(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(THREADS as usize).clamp(1, 65535) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// The contiguous `f32` data a layout addresses in a CUDA storage.
fn f32_view<'a>(op: &str, s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, f32>> {
    let Some((start, end)) = l.contiguous_offsets() else { bail!("{op}: input must be contiguous") };
    Ok(s.as_cuda_slice::<f32>()?.slice(start..end))
}

/// A size as the kernels' `int`, or an error naming the op.
fn int(op: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("{op}: size {v} is too large for the CUDA kernel")))
}

/// The error of a custom op that only has a CUDA kernel, called on another device.
fn cuda_only(op: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: this op runs on CUDA only (the public op sends other devices elsewhere)"))
}
