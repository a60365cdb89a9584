//! RoIAlign as a gather: the sampling plan of every RoI is worked out on the host (the RoIs are
//! small), turned into a list of `(feature pixel, output bin, weight)` taps, and applied on the
//! features' device with an `index_select` of the pixels, a multiply by the weights and an
//! `index_add` into the bins. candle differentiates both index ops (an `index_select` backward
//! is an `index_add`, and the reverse), so the features get their gradient through autograd.

use crate::roi_align::{check_rois, Dims, Params, RoiAlign, RoiPlan, Sample};
use candle_core::{bail, DType, Device, Result, Tensor};

/// Gathered values per chunk of RoIs (`taps * C`): bounds the size of each gather.
const CHUNK_VALUES: usize = 1 << 24;

/// [`RoiAlign::forward`] (`nhwc == false`, features `[N, C, H, W]`) or
/// [`RoiAlign::forward_nhwc`] (`nhwc == true`, features `[N, H, W, C]`) in candle ops, with the
/// same sampling (the fast kernel's plan) and the same output, `[K, C, ph, pw]`. The RoIs
/// (`[K, 5]` rows `(batch, x1, y1, x2, y2)`) are read to the host; the features stay on their
/// device. Differentiable in the features.
///
/// Within a bin, samples that share a pixel are merged into one tap: at most
/// `(grid_h + 1) * (grid_w + 1)` taps per bin instead of `4 * grid_h * grid_w`.
pub fn roi_align(layer: &RoiAlign, features: &Tensor, rois: &Tensor, nhwc: bool) -> Result<Tensor> {
    roi_align_chunked(layer, features, rois, nhwc, CHUNK_VALUES)
}

/// [`roi_align`] with chunks of RoIs of about `chunk_values` gathered values (at least one RoI
/// each), so that tests can cross chunk boundaries on small inputs.
#[doc(hidden)]
pub fn roi_align_chunked(
    layer: &RoiAlign,
    features: &Tensor,
    rois: &Tensor,
    nhwc: bool,
    chunk_values: usize,
) -> Result<Tensor> {
    let p = Params::check(layer)?;
    if features.rank() != 4 {
        bail!("roi_align: features must be [N, C, H, W] (or [N, H, W, C]), got {:?}", features.dims());
    }
    if !features.dtype().is_float() {
        bail!("roi_align: features must be a float tensor, got {:?}", features.dtype());
    }
    if rois.rank() != 2 || rois.dim(1)? != 5 {
        bail!("roi_align: rois must be [K, 5] rows (batch, x1, y1, x2, y2), got {:?}", rois.dims());
    }
    let d = Dims::of(features.shape(), nhwc)?;
    let boxes = rois.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    check_rois(&boxes, d.n, &p)?;
    let k = boxes.len() / 5;
    let bins = p.bins();
    if d.n * d.h * d.w > u32::MAX as usize || k * bins > u32::MAX as usize {
        bail!("roi_align: {:?} features with {k} RoIs are too many to index with u32", features.dims());
    }
    // Channels-last rows: one row of C values per feature pixel.
    let pixels = if nhwc { features.clone() } else { features.permute((0, 2, 3, 1))? };
    let pixels = pixels.contiguous()?.reshape((d.n * d.h * d.w, d.c))?;
    let mut parts = Vec::new();
    let mut first = 0;
    while first < k {
        let mut plan = Taps::default();
        let mut last = first;
        while last < k && (last == first || plan.len() * d.c < chunk_values) {
            plan.add_roi(&boxes[5 * last..5 * last + 5], last - first, &p, &d);
            last += 1;
        }
        parts.push(plan.apply(&pixels, (last - first) * bins)?);
        first = last;
    }
    let pooled = match parts.len() {
        0 => Tensor::zeros((0, d.c), features.dtype(), features.device())?,
        1 => parts.pop().expect("one part"),
        _ => Tensor::cat(&parts, 0)?,
    };
    // [K * bins, C] -> [K, C, ph, pw].
    pooled.reshape((k, bins, d.c))?.transpose(1, 2)?.contiguous()?.reshape((k, d.c, p.ph, p.pw))
}

/// The taps of a chunk of RoIs: which pixel row each reads, which output row it adds into, and
/// its weight (bilinear weight over the bin's sample count).
#[derive(Default)]
struct Taps {
    pixel: Vec<u32>,
    bin: Vec<u32>,
    weight: Vec<f32>,
}

impl Taps {
    fn len(&self) -> usize {
        self.pixel.len()
    }

    /// Adds the taps of one RoI, the `slot`-th of its chunk, bin by bin.
    fn add_roi(&mut self, roi: &[f32], slot: usize, p: &Params, d: &Dims) {
        let plan = RoiPlan::new(roi, p, d);
        let base = plan.batch * d.h * d.w;
        let mut samples: Vec<Sample> = Vec::new();
        let mut merged: Vec<(usize, f32)> = Vec::new();
        for by in 0..p.ph {
            for bx in 0..p.pw {
                samples.clear();
                plan.bin_samples(by, bx, d.w, &mut samples);
                merged.clear();
                merged.extend(samples.iter().flat_map(|s| s.off.into_iter().zip(s.w)).filter(|&(_, w)| w != 0.0));
                merged.sort_by_key(|&(off, _)| off);
                merged.dedup_by(|later, kept| {
                    let same = later.0 == kept.0;
                    if same {
                        kept.1 += later.1;
                    }
                    same
                });
                let row = (slot * p.bins() + by * p.pw + bx) as u32;
                for &(off, w) in merged.iter() {
                    self.pixel.push((base + off) as u32);
                    self.bin.push(row);
                    self.weight.push(w / plan.count);
                }
            }
        }
    }

    /// `[rows, C]`: the weighted taps of `pixels` (`[pixels, C]`) summed into their rows.
    fn apply(&self, pixels: &Tensor, rows: usize) -> Result<Tensor> {
        let (device, dtype, c) = (pixels.device(), pixels.dtype(), pixels.dim(1)?);
        let out = Tensor::zeros((rows, c), dtype, device)?;
        if self.len() == 0 {
            return Ok(out);
        }
        let pixel = Tensor::from_slice(&self.pixel, self.len(), device)?;
        let bin = Tensor::from_slice(&self.bin, self.len(), device)?;
        let weight = Tensor::from_slice(&self.weight, (self.len(), 1), device)?.to_dtype(dtype)?;
        let values = pixels.index_select(&pixel, 0)?.broadcast_mul(&weight)?;
        out.index_add(&bin, &values, 0)
    }
}
