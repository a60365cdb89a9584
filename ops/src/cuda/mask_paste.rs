//! Mask pasting on CUDA (`kernels/mask_paste.cu`): the windows are worked out on the host from
//! the boxes, every window pixel is sampled and thresholded on the GPU, and only the binary
//! windows come back.

use super::{cuda_only, f32_view, int, ptx, THREADS};
use crate::mask_paste::{BinaryMask, MaskWindow};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

const MODULE: &str = "nextdet_mask_paste";

/// [`crate::paste_masks`] on CUDA: `masks: [K, Mh, Mw]` probabilities and `boxes: [K, 4]` on a
/// CUDA device; one [`BinaryMask`] per detection, as the CPU kernel gives them.
pub(crate) fn paste_masks(
    masks: &Tensor,
    boxes: &Tensor,
    (height, width): (usize, usize),
    threshold: f32,
) -> Result<Vec<BinaryMask>> {
    let (k, mh, mw) = masks.dims3()?;
    if boxes.dims() != [k, 4] {
        bail!("paste_masks: boxes must be [K, 4] = [{k}, 4] for {k} masks, got shape {:?}", boxes.dims());
    }
    if k == 0 {
        return Ok(Vec::new());
    }
    if mh == 0 || mw == 0 {
        bail!("paste_masks: masks have an empty size {mh}x{mw}");
    }
    let boxes = boxes.to_dtype(DType::F32)?.to_device(masks.device())?.contiguous()?;
    let host = boxes.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    let windows: Vec<MaskWindow> = host
        .chunks_exact(4)
        .map(|b| MaskWindow::for_box([b[0], b[1], b[2], b[3]], height, width))
        .map(|w| if w.is_empty() { MaskWindow::default() } else { w })
        .collect();
    let mut meta = Vec::with_capacity(5 * k);
    let mut total = 0usize;
    for w in &windows {
        meta.extend([w.y0, w.height(), w.x0, w.width(), total].map(|v| v as i64));
        total += w.height() * w.width();
    }
    let largest = windows.iter().map(|w| w.height() * w.width()).max().unwrap_or(0);
    let mut data = if total == 0 {
        Vec::new()
    } else {
        let meta = Tensor::from_vec(meta, (k, 5), masks.device())?;
        let op = PasteCuda { total, largest, threshold };
        masks.to_dtype(DType::F32)?.contiguous()?.apply_op3_no_bwd(&boxes, &meta, &op)?.to_vec1::<u8>()?
    };
    let mut out = Vec::with_capacity(k);
    for w in windows.into_iter().rev() {
        let rest = data.split_off(data.len() - w.height() * w.width());
        out.push(BinaryMask { height, width, window: w, data: rest });
    }
    out.reverse();
    Ok(out)
}

/// `(masks [K, Mh, Mw], boxes [K, 4], meta [K, 5]) -> [total]` `u8` window pixels.
struct PasteCuda {
    total: usize,
    largest: usize,
    threshold: f32,
}

impl CustomOp3 for PasteCuda {
    fn name(&self) -> &'static str {
        "paste-masks-cuda"
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
        let (k, mh, mw) = l1.shape().dims3()?;
        let (masks, boxes) = (f32_view(self.name(), s1, l1)?, f32_view(self.name(), s2, l2)?);
        let Some((a, b)) = l3.contiguous_offsets() else { bail!("{}: meta must be contiguous", self.name()) };
        let meta = s3.as_cuda_slice::<i64>()?.slice(a..b);
        let out = dev.alloc_zeros::<u8>(self.total)?;
        let f = dev.get_or_load_custom_func("paste_masks_f32", MODULE, ptx::MASK_PASTE)?;
        let (mh, mw) = (int(self.name(), mh)?, int(self.name(), mw)?);
        let blocks = self.largest.div_ceil(THREADS as usize).clamp(1, 65535) as u32;
        if k > 65535 {
            bail!("{}: {k} detections in one call is more than the kernel's grid takes (65535)", self.name());
        }
        let cfg = LaunchConfig { grid_dim: (blocks, k as u32, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        let mut launch = f.builder();
        launch.arg(&masks).arg(&boxes).arg(&meta).arg(&out).arg(&mh).arg(&mw).arg(&self.threshold);
        // SAFETY: the arguments match the kernel's signature; detection d writes its window's
        // bytes at its offset, inside the `total` bytes, and reads its own mask.
        unsafe { launch.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(self.total)))
    }
}
