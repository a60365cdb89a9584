//! RoIAlign on CUDA, forward and feature gradient (`kernels/roi_align.cu`).

use super::{cuda_only, f32_view, grid, int, ptx};
use crate::roi_align::{check_rois, Dims, Params, RoiAlign};
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};

const MODULE: &str = "nextdet_roi_align";

/// [`RoiAlign::forward`] (`nhwc == false`) or [`RoiAlign::forward_nhwc`] on CUDA: `f32`
/// features and `[K, 5]` RoIs on one CUDA device; `[K, C, ph, pw]`. The RoIs are read to the
/// host once to be checked (an out-of-range batch index must not reach the kernel's loads).
/// Differentiable in the features.
pub(crate) fn roi_align(layer: &RoiAlign, features: &Tensor, rois: &Tensor, nhwc: bool) -> Result<Tensor> {
    let params = Params::check(layer)?;
    if features.rank() != 4 || features.dtype() != DType::F32 {
        bail!("roi_align: features must be an f32 [N, C, H, W] (or [N, H, W, C]) tensor, got {:?}", features.dims());
    }
    if rois.rank() != 2 || rois.dim(1)? != 5 {
        bail!("roi_align: rois must be [K, 5] rows (batch, x1, y1, x2, y2), got {:?}", rois.dims());
    }
    let rois = rois.to_dtype(DType::F32)?.to_device(features.device())?.contiguous()?;
    let d = Dims::of(features.shape(), nhwc)?;
    check_rois(&rois.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?, d.n, &params)?;
    features.contiguous()?.apply_op2(&rois, RoiAlignCuda { params, nhwc })
}

/// The kernels' scalar arguments.
struct Args {
    k: i32,
    c: i32,
    h: i32,
    w: i32,
    ph: i32,
    pw: i32,
    scale: f32,
    sampling: i32,
    aligned: i32,
    nhwc: i32,
}

impl Args {
    fn new(op: &str, p: &Params, d: &Dims, k: usize, nhwc: bool) -> Result<Self> {
        Ok(Self {
            k: int(op, k)?,
            c: int(op, d.c)?,
            h: int(op, d.h)?,
            w: int(op, d.w)?,
            ph: int(op, p.ph)?,
            pw: int(op, p.pw)?,
            scale: p.scale,
            sampling: int(op, p.sampling)?,
            aligned: p.aligned as i32,
            nhwc: nhwc as i32,
        })
    }
}

/// Forward op: `(features, rois) -> [K, C, ph, pw]`.
struct RoiAlignCuda {
    params: Params,
    nhwc: bool,
}

impl CustomOp2 for RoiAlignCuda {
    fn name(&self) -> &'static str {
        "roi-align-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Err(cuda_only(self.name()))
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &s1.device;
        let d = Dims::of(l1.shape(), self.nhwc)?;
        let k = l2.shape().dims()[0];
        let a = Args::new(self.name(), &self.params, &d, k, self.nhwc)?;
        let (feat, rois) = (f32_view(self.name(), s1, l1)?, f32_view(self.name(), s2, l2)?);
        let total = k * d.c * self.params.bins();
        let out = dev.alloc_zeros::<f32>(total)?;
        if total > 0 {
            let f = dev.get_or_load_custom_func("roi_align_fwd_f32", MODULE, ptx::ROI_ALIGN)?;
            let mut launch = f.builder();
            launch.arg(&feat).arg(&rois).arg(&out).arg(&a.k).arg(&a.c).arg(&a.h).arg(&a.w);
            launch.arg(&a.ph).arg(&a.pw).arg(&a.scale).arg(&a.sampling).arg(&a.aligned).arg(&a.nhwc);
            // SAFETY: the arguments match the kernel's signature; the RoIs were checked on the
            // host, so every feature index the kernel forms is inside the map.
            unsafe { launch.launch(grid(total)) }.w()?;
        }
        let shape = Shape::from((k, d.c, self.params.ph, self.params.pw));
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    }

    fn bwd(
        &self,
        features: &Tensor,
        rois: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = RoiAlignGradCuda { params: self.params, nhwc: self.nhwc, shape: features.shape().clone() };
        Ok((Some(grad.contiguous()?.apply_op2_no_bwd(rois, &op)?), None))
    }
}

/// Backward op: `(grad_output [K, C, ph, pw], rois) -> grad_features`.
struct RoiAlignGradCuda {
    params: Params,
    nhwc: bool,
    shape: Shape,
}

impl CustomOp2 for RoiAlignGradCuda {
    fn name(&self) -> &'static str {
        "roi-align-grad-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Err(cuda_only(self.name()))
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &s1.device;
        let d = Dims::of(&self.shape, self.nhwc)?;
        let k = l2.shape().dims()[0];
        if l1.shape().dims() != [k, d.c, self.params.ph, self.params.pw] {
            bail!("roi_align backward: output gradient {:?} does not fit {k} RoIs", l1.shape().dims());
        }
        let a = Args::new(self.name(), &self.params, &d, k, self.nhwc)?;
        let (gout, rois) = (f32_view(self.name(), s1, l1)?, f32_view(self.name(), s2, l2)?);
        let grad = dev.alloc_zeros::<f32>(self.shape.elem_count())?;
        let total = l1.shape().elem_count();
        if total > 0 {
            let f = dev.get_or_load_custom_func("roi_align_bwd_f32", MODULE, ptx::ROI_ALIGN)?;
            let mut launch = f.builder();
            launch.arg(&gout).arg(&rois).arg(&grad).arg(&a.k).arg(&a.c).arg(&a.h).arg(&a.w);
            launch.arg(&a.ph).arg(&a.pw).arg(&a.scale).arg(&a.sampling).arg(&a.aligned).arg(&a.nhwc);
            // SAFETY: as for the forward; the gradient buffer has the features' size and starts
            // at zero.
            unsafe { launch.launch(grid(total)) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(grad, dev.clone()), self.shape.clone()))
    }
}
