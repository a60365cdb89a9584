//! The suppression mask of NMS on CUDA (`kernels/nms.cu`); the greedy walk over it runs on the
//! host, as torchvision's CUDA `nms` does.

use super::{cuda_only, f32_view, int, ptx};
use crate::nms::indices_tensor;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

const MODULE: &str = "nextdet_nms";
/// Boxes per block of the mask (one bit each in a 64-bit word).
const BLOCK: usize = 64;

/// Greedy NMS of `boxes: [N, 4]` (xyxy, `f32`, on a CUDA device) visited in `order` (indices by
/// descending score, worked out on the host): a box is kept unless a kept box before it overlaps
/// it with IoU above `thr` (already the `f32` the CPU kernel compares with). Returns the kept
/// input indices in visiting order. Only the `N x N / 64` bit mask comes back to the host.
pub(crate) fn nms_sorted(boxes: &Tensor, order: &[usize], thr: f32) -> Result<Vec<usize>> {
    let n = order.len();
    if boxes.dims() != [n, 4] {
        bail!("nms: boxes {:?} for {n} scores", boxes.dims());
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let sorted = boxes.to_dtype(DType::F32)?.index_select(&indices_tensor(order, boxes.device())?, 0)?.contiguous()?;
    let mask = sorted.apply_op1_no_bwd(&NmsMaskCuda { thr })?.flatten_all()?.to_vec1::<i64>()?;
    let blocks = n.div_ceil(BLOCK);
    let mut removed = vec![0u64; blocks];
    let mut keep = Vec::new();
    for (i, &input) in order.iter().enumerate() {
        let (block, bit) = (i / BLOCK, i % BLOCK);
        if removed[block] >> bit & 1 == 1 {
            continue;
        }
        keep.push(input);
        // Row i has bits for the boxes after it: in its own block and the later ones.
        let row = &mask[i * blocks..(i + 1) * blocks];
        for (r, &m) in removed.iter_mut().zip(row).skip(block) {
            *r |= m as u64;
        }
    }
    Ok(keep)
}

/// `[N, 4]` sorted boxes -> `[N, ceil(N / 64)]` words (`i64` holding the `u64` bits): bit `j` of
/// word `b` of row `i` is set when box `b * 64 + j`, after box `i`, overlaps it above `thr`.
struct NmsMaskCuda {
    thr: f32,
}

impl CustomOp1 for NmsMaskCuda {
    fn name(&self) -> &'static str {
        "nms-mask-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Err(cuda_only(self.name()))
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &s.device;
        let boxes = f32_view(self.name(), s, l)?;
        let n = l.shape().dims()[0];
        let blocks = n.div_ceil(BLOCK);
        // Zeros: words left of the diagonal block are never written and never read.
        let mask = dev.alloc_zeros::<i64>(n * blocks)?;
        let f = dev.get_or_load_custom_func("nms_mask_f32", MODULE, ptx::NMS)?;
        let n_i = int(self.name(), n)?;
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, blocks as u32, 1),
            block_dim: (BLOCK as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = f.builder();
        launch.arg(&boxes).arg(&mask).arg(&n_i).arg(&self.thr);
        // SAFETY: the arguments match the kernel's signature; block (x, y) reads boxes of
        // blocks x and y (below n) and writes row words of the [n, blocks] mask.
        unsafe { launch.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(mask, dev.clone()), Shape::from((n, blocks))))
    }
}
