//! What an R-CNN stage trains on: mmdet's `MaxIoUAssigner` on the stage's proposals, the ground
//! truth prepended as proposals (`add_gt_as_proposals`), then a `RandomSampler`
//! (`mmdet/core/bbox/samplers/base_sampler.py`); and the mask targets of the positives
//! (`mmdet/core/mask/mask_target.py`).

use crate::assigner::MaxIoUAssigner;
use crate::sampler::RandomSampler;
use crate::targets::ImageTargets;
use candle_core::{bail, DType, Device, Result, Tensor};
use nextdet_ops::nms::indices_tensor;
use nextdet_ops::{mask_targets, Boxes};
use rand::rngs::StdRng;

/// The sampled RoIs of one image as a stage trains on them: positives first, then negatives
/// (mmdet's `SamplingResult.bboxes` order).
#[derive(Clone, Debug)]
pub struct SampledRois {
    /// `[S, 4]` boxes of the positives, then of the negatives, on the model's device.
    pub boxes: Boxes,
    /// How many of `boxes` are positives.
    pub num_pos: usize,
    /// Index into the image's ground truth of each positive.
    pub pos_gt_inds: Vec<usize>,
    /// Whether each positive is a ground-truth box added as a proposal.
    pub pos_is_gt: Vec<bool>,
}

impl SampledRois {
    /// The `[num_pos, 4]` positive boxes.
    pub fn positives(&self) -> Result<Boxes> {
        Boxes::new(self.boxes.tensor().narrow(0, 0, self.num_pos)?)
    }
}

/// Assigns and samples the RoIs of one image as mmdet's R-CNN does: assignment on the
/// proposals (crowd regions ignored past the assigner's `ignore_iof_thr`), then (with
/// `add_gt_as_proposals`) the ground truth prepended as positives, then random sampling.
pub fn sample_rois(
    assigner: &MaxIoUAssigner,
    sampler: &RandomSampler,
    proposals: &Boxes,
    target: &ImageTargets,
    rng: &mut StdRng,
) -> Result<SampledRois> {
    let device = proposals.tensor().device();
    let gt = target.gt_boxes(device)?;
    let mut assign = assigner.assign(proposals, &gt, &target.labels, &target.ignore_boxes(device)?)?;
    let added = sampler.config().add_gt_as_proposals && !target.boxes.is_empty();
    let candidates = if added { Boxes::cat(&[gt, proposals.clone()])? } else { proposals.clone() };
    let s = sampler.sample_with_gt(&mut assign, &target.labels, rng);
    let g = if added { target.boxes.len() } else { 0 };
    let order: Vec<usize> = s.pos_inds.iter().chain(&s.neg_inds).copied().collect();
    Ok(SampledRois {
        boxes: candidates.select(&indices_tensor(&order, device)?)?,
        num_pos: s.pos_inds.len(),
        pos_is_gt: s.pos_inds.iter().map(|&i| i < g).collect(),
        pos_gt_inds: s.pos_gt_inds,
    })
}

/// Mask targets of the positives of every image, concatenated: `[P, M, M]`.
pub(crate) fn batch_mask_targets(
    samples: &[SampledRois],
    targets: &[ImageTargets],
    mask_size: usize,
    device: &Device,
) -> Result<Tensor> {
    let mut parts = Vec::new();
    for (i, (s, t)) in samples.iter().zip(targets).enumerate() {
        if s.num_pos == 0 {
            continue;
        }
        let Some(masks) = &t.masks else {
            bail!("roi head: image {i} has no ground-truth masks but the model has a mask head");
        };
        let inds: Vec<u32> = s.pos_gt_inds.iter().map(|&g| g as u32).collect();
        let inds = Tensor::from_vec(inds, s.num_pos, device)?;
        parts.push(mask_targets(masks, &inds, s.positives()?.tensor(), mask_size)?);
    }
    if parts.is_empty() {
        return Tensor::zeros((0, mask_size, mask_size), DType::F32, device);
    }
    Tensor::cat(&parts, 0)
}

/// Positive labels of every image, concatenated.
pub(crate) fn pos_labels(samples: &[SampledRois], targets: &[ImageTargets]) -> Vec<usize> {
    samples.iter().zip(targets).flat_map(|(s, t)| s.pos_gt_inds.iter().map(|&g| t.labels[g])).collect()
}
