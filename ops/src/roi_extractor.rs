//! Multi-level RoI feature extraction: mmdet's `SingleRoIExtractor` (`mmdet/models/roi_heads/roi_extractors/single_level_roi_extractor.py`).
//!
//! Each RoI goes to one FPN level by its size, `lvl = floor(log2(sqrt(w * h) / finest_scale +
//! 1e-6))` clamped to the levels, and is pooled there by [`RoiAlign`] with that level's
//! `1 / stride`; the results come back in the RoIs' order. The output is differentiable to the
//! features of every level (a level that gets no RoI receives a zero gradient, as in mmdet).

use crate::cpu::as_f32;
use crate::roi_align::RoiAlign;
use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// mmdet's `SingleRoIExtractor` with a `RoIAlign` layer per level.
#[derive(Debug, Clone, PartialEq)]
pub struct SingleRoiExtractor {
    /// Output bins `(ph, pw)` (7x7 for box heads, 14x14 for mask heads).
    pub output_size: (usize, usize),
    /// RoIAlign sampling ratio, 0 for adaptive.
    pub sampling_ratio: usize,
    /// RoIAlign `aligned` flag.
    pub aligned: bool,
    /// Stride of each level's feature map, finest first (`[4, 8, 16, 32]` for FPN P2-P5).
    pub featmap_strides: Vec<f32>,
    /// RoIs of `sqrt(area)` below `2 * finest_scale` go to the finest level (mmdet: 56).
    pub finest_scale: f32,
}

impl SingleRoiExtractor {
    /// The mmdet config of the ConvNeXt detectors: `RoIAlign(output_size, sampling_ratio=0,
    /// aligned=True)` on the given strides, `finest_scale = 56`.
    pub fn new(output_size: (usize, usize), featmap_strides: &[f32]) -> Self {
        Self {
            output_size,
            sampling_ratio: 0,
            aligned: true,
            featmap_strides: featmap_strides.to_vec(),
            finest_scale: 56.0,
        }
    }

    /// The level of each RoI of `rois: [K, 5]` among `num_levels` levels (see
    /// [`map_roi_levels`]).
    pub fn map_roi_levels(&self, rois: &Tensor, num_levels: usize) -> Result<Vec<usize>> {
        Ok(map_roi_levels(&roi_rows(rois)?, num_levels, self.finest_scale))
    }

    /// Pools `rois: [K, 5]` `(batch, x1, y1, x2, y2)` from `feats`, one `[N, C, H_l, W_l]`
    /// map per stride; returns `[K, C, ph, pw]` in the RoIs' order.
    pub fn forward(&self, feats: &[Tensor], rois: &Tensor) -> Result<Tensor> {
        self.extract(feats, rois, false)
    }

    /// As [`SingleRoiExtractor::forward`] with channels-last maps `[N, H_l, W_l, C]`; the
    /// output is still `[K, C, ph, pw]`.
    pub fn forward_nhwc(&self, feats: &[Tensor], rois: &Tensor) -> Result<Tensor> {
        self.extract(feats, rois, true)
    }

    fn extract(&self, feats: &[Tensor], rois: &Tensor, nhwc: bool) -> Result<Tensor> {
        if feats.is_empty() || feats.len() != self.featmap_strides.len() {
            bail!("roi extractor: got {} feature map(s) for {} stride(s)", feats.len(), self.featmap_strides.len());
        }
        let channel_dim = if nhwc { 3 } else { 1 };
        let (n, c) = (feats[0].dim(0)?, feats[0].dim(channel_dim)?);
        for (i, f) in feats.iter().enumerate() {
            if f.rank() != 4 || f.dim(0)? != n || f.dim(channel_dim)? != c {
                bail!("roi extractor: level {i} features {:?} do not match level 0 {:?}", f.dims(), feats[0].dims());
            }
        }
        if let Some(s) = self.featmap_strides.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            bail!("roi extractor: feature map strides must be positive, got {s}");
        }
        let layer = |i: usize| RoiAlign {
            output_size: self.output_size,
            spatial_scale: 1.0 / self.featmap_strides[i],
            sampling_ratio: self.sampling_ratio,
            aligned: self.aligned,
        };
        let pool = |i: usize, r: &Tensor| {
            if nhwc {
                layer(i).forward_nhwc(&feats[i], r)
            } else {
                layer(i).forward(&feats[i], r)
            }
        };
        if feats.len() == 1 {
            return pool(0, rois);
        }
        let rows = roi_rows(rois)?;
        let levels = map_roi_levels(&rows, feats.len(), self.finest_scale);
        // RoIs grouped by level; `position[k]` is where RoI k lands in the concatenation.
        let mut position = vec![0usize; rows.len()];
        let mut outs = Vec::with_capacity(feats.len());
        let mut next = 0usize;
        for lvl in 0..feats.len() {
            let mut picked = Vec::new();
            for (k, (row, &l)) in rows.iter().zip(&levels).enumerate() {
                if l == lvl {
                    picked.extend_from_slice(row);
                    position[k] = next;
                    next += 1;
                }
            }
            let count = picked.len() / 5;
            let level_rois = Tensor::from_vec(picked, (count, 5), &Device::Cpu)?;
            outs.push(pool(lvl, &level_rois)?);
        }
        Tensor::cat(&outs, 0)?.apply_op1(PermuteRows { from: position })
    }
}

/// mmdet's `map_roi_levels`: `scale = sqrt((x2 - x1) * (y2 - y1))`, level `floor(log2(scale /
/// finest_scale + 1e-6))` clamped to `[0, num_levels - 1]`. A RoI with one inverted side (a
/// negative area, where mmdet's level is undefined) goes to level 0.
pub fn map_roi_levels(rois: &[[f32; 5]], num_levels: usize, finest_scale: f32) -> Vec<usize> {
    let top = num_levels.saturating_sub(1) as f32;
    rois.iter()
        .map(|r| {
            let scale = ((r[3] - r[1]) * (r[4] - r[2])).sqrt();
            let lvl = (scale / finest_scale + 1e-6).log2().floor();
            if lvl.is_nan() {
                0
            } else {
                lvl.clamp(0.0, top) as usize
            }
        })
        .collect()
}

/// The rows of a `[K, 5]` RoI tensor.
fn roi_rows(rois: &Tensor) -> Result<Vec<[f32; 5]>> {
    if rois.rank() != 2 || rois.dim(1)? != 5 {
        bail!("roi extractor: rois must be [K, 5] rows (batch, x1, y1, x2, y2), got {:?}", rois.dims());
    }
    let flat = rois.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(flat.chunks_exact(5).map(|r| [r[0], r[1], r[2], r[3], r[4]]).collect())
}

/// The inverse of the permutation `p`: `q[p[i]] = i`.
fn invert(p: &[usize]) -> Vec<usize> {
    let mut q = vec![0; p.len()];
    for (i, &j) in p.iter().enumerate() {
        q[j] = i;
    }
    q
}

/// Reorders the rows (first dimension) of an `f32` tensor, `out[i] = x[from[i]]`, where `from`
/// is a permutation; the backward is the inverse reordering. This is `index_select` for the
/// one case the extractor needs, as a parallel copy each way (candle's `index_select` copies
/// serially and its backward adds into zeros).
struct PermuteRows {
    from: Vec<usize>,
}

impl CustomOp1 for PermuteRows {
    fn name(&self) -> &'static str {
        "permute-rows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), storage, layout)?;
        let shape = layout.shape().clone();
        if shape.dims().first() != Some(&self.from.len()) {
            bail!("permute-rows: {} rows for a permutation of {}", shape.dims().first().unwrap_or(&0), self.from.len());
        }
        let mut out = vec![0f32; x.len()];
        let row = x.len().checked_div(self.from.len()).unwrap_or(0);
        if row > 0 {
            out.par_chunks_mut(row)
                .zip(self.from.par_iter())
                .for_each(|(o, &f)| o.copy_from_slice(&x[f * row..][..row]));
        }
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let back = PermuteRows { from: invert(&self.from) };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&back)?))
    }
}
