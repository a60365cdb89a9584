//! Mask R-CNN's second stage: mmdet 2.11's `StandardRoIHead` (REFERENCE.md 3.4).
//!
//! Training: per image, the proposals are assigned to the ground truth (`MaxIoUAssigner`),
//! the ground-truth boxes are prepended as proposals and a `RandomSampler` picks positives and
//! negatives; the box head trains on all sampled RoIs, the mask head on the positives with
//! RoIAligned ground-truth masks as targets. Testing: box head on the proposals, class-wise
//! NMS (`get_bboxes`), then the mask head on the detections, pasted into the original image.
//! Test images are processed one by one (mmdet's batch padding of proposals is not
//! reproduced; with one image per batch, as mmdet tests, the two agree).

use crate::assigner::{MaxIoUAssigner, MaxIoUAssignerConfig};
use crate::bbox_head::{BBoxHead, BBoxHeadConfig, RcnnTestConfig, SampledRois};
use crate::mask_head::{select_channels, sigmoid, FcnMaskHead, FcnMaskHeadConfig};
use crate::results::{InstanceResult, TestMeta};
use crate::sampler::{with_gt_prepended, RandomSampler, RandomSamplerConfig};
use crate::targets::ImageTargets;
use candle_core::{bail, DType, Device, Result, Tensor};
use nextdet_ops::{mask_targets, Scope, SingleRoiExtractor};
use rand::rngs::StdRng;
use serde::Deserialize;

/// mmdet's `SingleRoIExtractor(RoIAlign(output_size, sampling_ratio), featmap_strides)`.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoiExtractorConfig {
    /// `SingleRoIExtractor`, optional.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Output bins per side (7 for boxes, 14 for masks).
    pub output_size: usize,
    /// RoIAlign samples per bin side, 0 for adaptive.
    #[serde(default)]
    pub sampling_ratio: usize,
    /// Strides of the pooled levels, finest first (`[4, 8, 16, 32]`).
    pub featmap_strides: Vec<f32>,
    /// Feature channels (derived; must match the neck when given).
    #[serde(default)]
    pub out_channels: Option<usize>,
}

impl RoiExtractorConfig {
    /// The extractor (RoIAlign aligned=True, finest scale 56).
    pub fn build(&self, in_channels: usize) -> Result<SingleRoiExtractor> {
        if self.featmap_strides.is_empty() || self.output_size == 0 {
            bail!("roi extractor: needs an output_size > 0 and at least one featmap stride");
        }
        if let Some(c) = self.out_channels {
            if c != in_channels {
                bail!("roi extractor: out_channels is {c} but the features have {in_channels} channels");
            }
        }
        let mut e = SingleRoiExtractor::new((self.output_size, self.output_size), &self.featmap_strides);
        e.sampling_ratio = self.sampling_ratio;
        Ok(e)
    }
}

/// R-CNN training settings of one stage (mmdet `train_cfg.rcnn`).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RcnnTrainConfig {
    /// Proposal to ground-truth assignment.
    pub assigner: MaxIoUAssignerConfig,
    /// RoI sampling.
    pub sampler: RandomSamplerConfig,
    /// Mask target size (28).
    #[serde(default = "mask_size")]
    pub mask_size: usize,
    /// Classification weight of positives; `<= 0` means 1.
    #[serde(default = "minus_one")]
    pub pos_weight: f32,
    /// mmdet's debug flag (ignored).
    #[serde(default)]
    pub debug: bool,
}

fn mask_size() -> usize {
    28
}
fn minus_one() -> f32 {
    -1.0
}

/// `StandardRoIHead` settings.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StandardRoiHeadConfig {
    /// `StandardRoIHead`, optional.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// RoI pooling for the box head.
    pub bbox_roi_extractor: RoiExtractorConfig,
    /// The box head.
    pub bbox_head: BBoxHeadConfig,
    /// RoI pooling for the mask head (the box extractor when absent).
    #[serde(default)]
    pub mask_roi_extractor: Option<RoiExtractorConfig>,
    /// The mask head (none for Faster R-CNN).
    #[serde(default)]
    pub mask_head: Option<FcnMaskHeadConfig>,
    /// Training settings (required by `forward_train`).
    #[serde(default)]
    pub train: Option<RcnnTrainConfig>,
    /// Test settings.
    #[serde(default)]
    pub test: RcnnTestConfig,
}

/// Assigns and samples the RoIs of one image as mmdet's R-CNN does: assignment on the
/// proposals, then (with `add_gt_as_proposals`) the ground truth prepended as positives, then
/// random sampling.
pub fn sample_rois(
    assigner: &MaxIoUAssigner,
    sampler: &RandomSampler,
    proposals: &[[f32; 4]],
    target: &ImageTargets,
    rng: &mut StdRng,
) -> SampledRois {
    let mut assign = assigner.assign(proposals, &target.boxes, &target.labels, &[]);
    let added = sampler.config().add_gt_as_proposals && !target.boxes.is_empty();
    let candidates = if added { with_gt_prepended(proposals, &target.boxes) } else { proposals.to_vec() };
    let s = sampler.sample_with_gt(&mut assign, &target.labels, rng);
    let g = if added { target.boxes.len() } else { 0 };
    let mut boxes: Vec<[f32; 4]> = s.pos_inds.iter().map(|&i| candidates[i]).collect();
    boxes.extend(s.neg_inds.iter().map(|&i| candidates[i]));
    SampledRois {
        boxes,
        num_pos: s.pos_inds.len(),
        pos_gt_inds: s.pos_gt_inds.clone(),
        pos_is_gt: s.pos_inds.iter().map(|&i| i < g).collect(),
    }
}

/// mmdet `bbox2roi`: `[sum, 5]` rows `(image index, x1, y1, x2, y2)`.
pub fn boxes_to_rois(per_image: &[&[[f32; 4]]], device: &Device) -> Result<Tensor> {
    let mut flat = Vec::new();
    for (i, boxes) in per_image.iter().enumerate() {
        for b in boxes.iter() {
            flat.extend_from_slice(&[i as f32, b[0], b[1], b[2], b[3]]);
        }
    }
    let n = flat.len() / 5;
    Tensor::from_vec(flat, (n, 5), device)
}

/// The `[x1, y1, x2, y2]` rows of a `[P, >=4]` proposal tensor (`[P, 5]` with scores from the
/// RPN), as host boxes.
pub fn proposal_boxes(p: &Tensor) -> Result<Vec<[f32; 4]>> {
    match p.dims() {
        &[_, c] if c >= 4 => {}
        dims => bail!("proposals must be [P, 4] or [P, 5], got {dims:?}"),
    }
    let v = p.narrow(1, 0, 4)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(v.chunks_exact(4).map(|b| [b[0], b[1], b[2], b[3]]).collect())
}

/// The first `n` levels of `feats`, or an error.
pub(crate) fn levels<'a>(feats: &'a [Tensor], e: &SingleRoiExtractor) -> Result<&'a [Tensor]> {
    let n = e.featmap_strides.len();
    if feats.len() < n {
        bail!("roi head: {} feature levels for {n} RoI extractor strides", feats.len());
    }
    Ok(&feats[..n])
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
        let flat: Vec<f32> = s.boxes[..s.num_pos].iter().flatten().copied().collect();
        let pos = Tensor::from_vec(flat, (s.num_pos, 4), device)?;
        parts.push(mask_targets(masks, &inds, &pos, mask_size)?);
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

/// mmdet's `StandardRoIHead` (see the module docs); parameters `bbox_head.*`, `mask_head.*`.
pub struct StandardRoiHead {
    cfg: StandardRoiHeadConfig,
    bbox_extractor: SingleRoiExtractor,
    bbox_head: BBoxHead,
    mask_extractor: SingleRoiExtractor,
    mask_head: Option<FcnMaskHead>,
}

impl StandardRoiHead {
    /// Builds the heads under `scope` (normally `root.pp("roi_head")`) for features of
    /// `in_channels` channels.
    pub fn new(cfg: &StandardRoiHeadConfig, in_channels: usize, scope: &Scope) -> Result<Self> {
        let bbox_extractor = cfg.bbox_roi_extractor.build(in_channels)?;
        let bbox_head = BBoxHead::new(&cfg.bbox_head, in_channels, &scope.pp("bbox_head"))?;
        let mask_extractor = match &cfg.mask_roi_extractor {
            Some(m) => m.build(in_channels)?,
            None => bbox_extractor.clone(),
        };
        let mask_head = match &cfg.mask_head {
            Some(m) => Some(FcnMaskHead::new(m, in_channels, &scope.pp("mask_head"))?),
            None => None,
        };
        if let Some(m) = &cfg.mask_head {
            if m.num_classes != cfg.bbox_head.num_classes() {
                bail!("roi_head: mask_head has {} classes, bbox_head {}", m.num_classes, cfg.bbox_head.num_classes());
            }
        }
        Ok(Self { cfg: cfg.clone(), bbox_extractor, bbox_head, mask_extractor, mask_head })
    }

    /// The box head.
    pub fn bbox_head(&self) -> &BBoxHead {
        &self.bbox_head
    }

    /// The mask head, if any.
    pub fn mask_head(&self) -> Option<&FcnMaskHead> {
        self.mask_head.as_ref()
    }

    /// Losses of one batch: `loss_cls`, `acc` (detached, percent), `loss_bbox` and, with a
    /// mask head, `loss_mask`. `feats` are the FPN outputs (`[N, C, H, W]`, finest first; the
    /// first levels the extractor has strides for are used), `proposals[i]` image `i`'s
    /// detached `[P, 5]` proposals.
    pub fn forward_train(
        &self,
        feats: &[Tensor],
        proposals: &[Tensor],
        targets: &[ImageTargets],
        rng: &mut StdRng,
    ) -> Result<Vec<(String, Tensor)>> {
        let Some(train) = &self.cfg.train else {
            bail!("roi_head: forward_train needs the `train` settings");
        };
        if proposals.len() != targets.len() {
            bail!("roi_head: {} proposal lists for {} images", proposals.len(), targets.len());
        }
        let assigner = MaxIoUAssigner::new(&train.assigner);
        let sampler = RandomSampler::new(&train.sampler);
        let mut samples = Vec::with_capacity(targets.len());
        for (p, t) in proposals.iter().zip(targets) {
            samples.push(sample_rois(&assigner, &sampler, &proposal_boxes(p)?, t, rng));
        }
        let device = feats.first().map(|f| f.device().clone()).unwrap_or(Device::Cpu);
        self.losses_for_samples(feats, &samples, targets, train, &device)
    }

    /// The losses for a given sampling (the deterministic part of [`Self::forward_train`]).
    pub fn losses_for_samples(
        &self,
        feats: &[Tensor],
        samples: &[SampledRois],
        targets: &[ImageTargets],
        train: &RcnnTrainConfig,
        device: &Device,
    ) -> Result<Vec<(String, Tensor)>> {
        let per: Vec<&[[f32; 4]]> = samples.iter().map(|s| s.boxes.as_slice()).collect();
        let rois = boxes_to_rois(&per, device)?;
        let bbox_feats = self.bbox_extractor.forward(levels(feats, &self.bbox_extractor)?, &rois)?;
        let (cls, reg) = self.bbox_head.forward(&bbox_feats, true)?;
        let gt_boxes: Vec<Vec<[f32; 4]>> = targets.iter().map(|t| t.boxes.clone()).collect();
        let gt_labels: Vec<Vec<usize>> = targets.iter().map(|t| t.labels.clone()).collect();
        let t = self.bbox_head.get_targets(samples, &gt_boxes, &gt_labels, train.pos_weight, device)?;
        let mut losses = self.bbox_head.loss(&cls, &reg, &rois, &t)?;
        if let Some(mask_head) = &self.mask_head {
            let pos: Vec<&[[f32; 4]]> = samples.iter().map(|s| &s.boxes[..s.num_pos]).collect();
            let pos_rois = boxes_to_rois(&pos, device)?;
            let mask_feats = self.mask_extractor.forward(levels(feats, &self.mask_extractor)?, &pos_rois)?;
            let pred = mask_head.forward(&mask_feats)?;
            let mt = batch_mask_targets(samples, targets, train.mask_size, device)?;
            losses.push(("loss_mask".into(), mask_head.loss(&pred, &mt, &pos_labels(samples, targets))?));
        }
        Ok(losses)
    }

    /// Detections per image in original-image coordinates (`proposals[i]`: `[P, 4 or 5]`).
    pub fn simple_test(
        &self,
        feats: &[Tensor],
        proposals: &[Tensor],
        metas: &[TestMeta],
    ) -> Result<Vec<InstanceResult>> {
        if proposals.len() != metas.len() {
            bail!("roi_head: {} proposal lists for {} images", proposals.len(), metas.len());
        }
        let mut out = Vec::with_capacity(metas.len());
        for (i, (p, meta)) in proposals.iter().zip(metas).enumerate() {
            let boxes = proposal_boxes(p)?;
            if boxes.is_empty() {
                let masks = self.mask_head.as_ref().map(|_| Vec::new());
                out.push(InstanceResult { masks, ..Default::default() });
                continue;
            }
            let image = image_feats(feats, i)?;
            let rois = boxes_to_rois(&[&boxes], p.device())?;
            let f = self.bbox_extractor.forward(levels(&image, &self.bbox_extractor)?, &rois)?;
            let (cls, reg) = self.bbox_head.forward(&f, false)?;
            let mut det = self.bbox_head.get_bboxes(&rois.narrow(1, 1, 4)?, &cls, &reg, meta, &self.cfg.test)?;
            if let Some(mask_head) = &self.mask_head {
                let masks = test_masks(&[mask_head], &self.mask_extractor, &image, &det, meta, &self.cfg.test)?;
                det.masks = Some(masks);
            }
            out.push(det);
        }
        Ok(out)
    }
}

/// Image `i`'s feature maps as a batch of one.
pub(crate) fn image_feats(feats: &[Tensor], i: usize) -> Result<Vec<Tensor>> {
    feats.iter().map(|f| f.narrow(0, i, 1)).collect()
}

/// mmdet's test-time masks for the detections of one image: RoIs are the detections scaled
/// back to the network input (`box * scale_factor`), every mask head's sigmoid is computed on
/// them and averaged (one head: as is; cascade: `merge_aug_masks`), the label channel is
/// pasted at `rois / scale_factor` into the original image and thresholded.
pub(crate) fn test_masks(
    heads: &[&FcnMaskHead],
    extractor: &SingleRoiExtractor,
    image: &[Tensor],
    det: &InstanceResult,
    meta: &TestMeta,
    cfg: &RcnnTestConfig,
) -> Result<Vec<nextdet_ops::BinaryMask>> {
    if det.boxes.is_empty() {
        return Ok(Vec::new());
    }
    let [sx, sy] = meta.scale_factor;
    let scaled: Vec<[f32; 4]> = det.boxes.iter().map(|b| [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]).collect();
    let device = image[0].device();
    let rois = boxes_to_rois(&[&scaled], device)?;
    let f = extractor.forward(levels(image, extractor)?, &rois)?;
    let mut sum: Option<Tensor> = None;
    for h in heads {
        let p = sigmoid(&h.forward(&f)?)?;
        sum = Some(match sum {
            None => p,
            Some(s) => (s + p)?,
        });
    }
    let Some(sum) = sum else { bail!("test masks: no mask head") };
    let probs = if heads.len() > 1 { (sum / heads.len() as f64)? } else { sum };
    let agnostic = heads[0].config().class_agnostic;
    let probs = select_channels(&probs, &det.labels, agnostic)?;
    let paste: Vec<[f32; 4]> = scaled.iter().map(|b| [b[0] / sx, b[1] / sy, b[2] / sx, b[3] / sy]).collect();
    heads[0].paste(&probs, &paste, meta.ori_size, cfg.mask_thr_binary)
}
