//! Cascade Mask R-CNN's second stage: mmdet 2.11's `CascadeRoIHead` (REFERENCE.md 3.5).
//!
//! `num_stages` box heads (`bbox_head.{s}.*`) and, with masks, one mask head per stage
//! (`mask_head.{s}.*`), sharing the RoI extractors. Training runs the stages in turn: each
//! assigns and samples the current proposals with its own thresholds (ground truth added), its
//! losses are reported as `s{i}.loss_*` times the stage weight (`s{i}.acc` unweighted), and
//! its regression refines the sampled RoIs into the next stage's proposals (the class of the
//! target, or the best foreground class for negatives; ground-truth RoIs dropped). Testing
//! averages the three stages' classification **logits**, takes boxes from the last stage's
//! regression of the RoIs refined by the earlier stages, and averages the three mask heads'
//! sigmoids on the final detections.

use crate::assigner::MaxIoUAssigner;
use crate::bbox_head::{BBoxHead, BBoxHeadConfig, RcnnTestConfig, SampledRois};
use crate::mask_head::{FcnMaskHead, FcnMaskHeadConfig};
use crate::results::{InstanceResult, TestMeta};
use crate::roi_head::{
    batch_mask_targets, boxes_to_rois, image_feats, levels, pos_labels, proposal_boxes, sample_rois, test_masks,
    RcnnTrainConfig, RoiExtractorConfig,
};
use crate::sampler::RandomSampler;
use crate::targets::ImageTargets;
use candle_core::{bail, DType, Device, Result, Tensor, D};
use nextdet_ops::{Scope, SingleRoiExtractor};
use rand::rngs::StdRng;
use serde::Deserialize;

/// `CascadeRoIHead` settings.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CascadeRoiHeadConfig {
    /// `CascadeRoIHead`, optional.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Stages (3).
    pub num_stages: usize,
    /// Loss weight per stage (`[1, 0.5, 0.25]`).
    pub stage_loss_weights: Vec<f64>,
    /// RoI pooling for the box heads (shared by the stages).
    pub bbox_roi_extractor: RoiExtractorConfig,
    /// One box head per stage.
    pub bbox_head: Vec<BBoxHeadConfig>,
    /// RoI pooling for the mask heads (the box extractor when absent).
    #[serde(default)]
    pub mask_roi_extractor: Option<RoiExtractorConfig>,
    /// The mask head config, built once per stage.
    #[serde(default)]
    pub mask_head: Option<FcnMaskHeadConfig>,
    /// Training settings per stage (required by `forward_train`).
    #[serde(default)]
    pub train: Option<Vec<RcnnTrainConfig>>,
    /// Test settings.
    #[serde(default)]
    pub test: RcnnTestConfig,
}

/// mmdet's `CascadeRoIHead` (see the module docs).
pub struct CascadeRoiHead {
    cfg: CascadeRoiHeadConfig,
    bbox_extractor: SingleRoiExtractor,
    bbox_heads: Vec<BBoxHead>,
    mask_extractor: SingleRoiExtractor,
    mask_heads: Vec<FcnMaskHead>,
}

/// Per row of `cls_score: [R, K + 1]`, the best foreground class (background column excluded).
fn argmax_foreground(cls_score: &Tensor) -> Result<Vec<usize>> {
    let k = cls_score.dim(1)? - 1;
    let fg = cls_score.detach().narrow(1, 0, k)?;
    Ok(fg.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?.into_iter().map(|v| v as usize).collect())
}

impl CascadeRoiHead {
    /// Builds the stages under `scope` (normally `root.pp("roi_head")`).
    pub fn new(cfg: &CascadeRoiHeadConfig, in_channels: usize, scope: &Scope) -> Result<Self> {
        let n = cfg.num_stages;
        if n == 0 || cfg.bbox_head.len() != n || cfg.stage_loss_weights.len() != n {
            bail!(
                "cascade roi_head: num_stages {n} needs as many bbox_head configs ({}) and stage_loss_weights ({})",
                cfg.bbox_head.len(),
                cfg.stage_loss_weights.len()
            );
        }
        if let Some(t) = &cfg.train {
            if t.len() != n {
                bail!("cascade roi_head: {} train configs for {n} stages", t.len());
            }
        }
        let bbox_extractor = cfg.bbox_roi_extractor.build(in_channels)?;
        let bbox_heads = (0..n)
            .map(|s| BBoxHead::new(&cfg.bbox_head[s], in_channels, &scope.pp("bbox_head").pp(s)))
            .collect::<Result<Vec<_>>>()?;
        let mask_extractor = match &cfg.mask_roi_extractor {
            Some(m) => m.build(in_channels)?,
            None => bbox_extractor.clone(),
        };
        let mask_heads = match &cfg.mask_head {
            Some(m) => (0..n)
                .map(|s| FcnMaskHead::new(m, in_channels, &scope.pp("mask_head").pp(s)))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        Ok(Self { cfg: cfg.clone(), bbox_extractor, bbox_heads, mask_extractor, mask_heads })
    }

    /// The box head of each stage.
    pub fn bbox_heads(&self) -> &[BBoxHead] {
        &self.bbox_heads
    }

    /// The mask head of each stage (empty without masks).
    pub fn mask_heads(&self) -> &[FcnMaskHead] {
        &self.mask_heads
    }

    /// Losses of one batch, `s{i}.loss_cls`, `s{i}.acc`, `s{i}.loss_bbox`, `s{i}.loss_mask` per
    /// stage (see the module docs); arguments as `StandardRoiHead::forward_train`.
    pub fn forward_train(
        &self,
        feats: &[Tensor],
        proposals: &[Tensor],
        targets: &[ImageTargets],
        rng: &mut StdRng,
    ) -> Result<Vec<(String, Tensor)>> {
        let Some(train) = &self.cfg.train else {
            bail!("cascade roi_head: forward_train needs the `train` settings");
        };
        if proposals.len() != targets.len() {
            bail!("cascade roi_head: {} proposal lists for {} images", proposals.len(), targets.len());
        }
        let device = feats.first().map(|f| f.device().clone()).unwrap_or(Device::Cpu);
        let mut current: Vec<Vec<[f32; 4]>> = proposals.iter().map(proposal_boxes).collect::<Result<_>>()?;
        let mut losses = Vec::new();
        for (stage, cfg) in train.iter().enumerate() {
            let assigner = MaxIoUAssigner::new(&cfg.assigner);
            let sampler = RandomSampler::new(&cfg.sampler);
            let samples: Vec<SampledRois> =
                current.iter().zip(targets).map(|(p, t)| sample_rois(&assigner, &sampler, p, t, rng)).collect();
            let (stage_losses, next) = self.stage_train(stage, feats, &samples, targets, cfg, &device)?;
            losses.extend(stage_losses);
            if let Some(next) = next {
                current = next;
            }
        }
        Ok(losses)
    }

    /// One training stage on a given sampling: its weighted losses and, before the last stage,
    /// the refined proposals per image (ground-truth RoIs dropped).
    #[allow(clippy::type_complexity)]
    pub fn stage_train(
        &self,
        stage: usize,
        feats: &[Tensor],
        samples: &[SampledRois],
        targets: &[ImageTargets],
        cfg: &RcnnTrainConfig,
        device: &Device,
    ) -> Result<(Vec<(String, Tensor)>, Option<Vec<Vec<[f32; 4]>>>)> {
        let head = &self.bbox_heads[stage];
        let lw = self.cfg.stage_loss_weights[stage];
        let per: Vec<&[[f32; 4]]> = samples.iter().map(|s| s.boxes.as_slice()).collect();
        let rois = boxes_to_rois(&per, device)?;
        let bbox_feats = self.bbox_extractor.forward(levels(feats, &self.bbox_extractor)?, &rois)?;
        let (cls, reg) = head.forward(&bbox_feats, true)?;
        let gt_boxes: Vec<Vec<[f32; 4]>> = targets.iter().map(|t| t.boxes.clone()).collect();
        let gt_labels: Vec<Vec<usize>> = targets.iter().map(|t| t.labels.clone()).collect();
        let t = head.get_targets(samples, &gt_boxes, &gt_labels, cfg.pos_weight, device)?;
        let mut losses = Vec::new();
        for (name, v) in head.loss(&cls, &reg, &rois, &t)? {
            let v = if name.contains("loss") { (v * lw)? } else { v };
            losses.push((format!("s{stage}.{name}"), v));
        }
        if let Some(mask_head) = self.mask_heads.get(stage) {
            let pos: Vec<&[[f32; 4]]> = samples.iter().map(|s| &s.boxes[..s.num_pos]).collect();
            let pos_rois = boxes_to_rois(&pos, device)?;
            let mask_feats = self.mask_extractor.forward(levels(feats, &self.mask_extractor)?, &pos_rois)?;
            let pred = mask_head.forward(&mask_feats)?;
            let mt = batch_mask_targets(samples, targets, cfg.mask_size, device)?;
            let l = mask_head.loss(&pred, &mt, &pos_labels(samples, targets))?;
            losses.push((format!("s{stage}.loss_mask"), (l * lw)?));
        }
        if stage + 1 == self.bbox_heads.len() {
            return Ok((losses, None));
        }
        // mmdet `refine_bboxes`: target labels, argmax foreground class for negatives.
        let k = head.num_classes();
        let best = argmax_foreground(&cls)?;
        let labels: Vec<usize> = t.labels.iter().zip(&best).map(|(&l, &b)| if l == k { b } else { l }).collect();
        let reg = reg.detach();
        let mut next = Vec::with_capacity(samples.len());
        let mut start = 0;
        for (s, target) in samples.iter().zip(targets) {
            let n = s.boxes.len();
            let boxes = rois.narrow(0, start, n)?.narrow(1, 1, 4)?;
            let refined =
                head.regress_by_class(&boxes, &labels[start..start + n], &reg.narrow(0, start, n)?, target.img_size)?;
            let v = refined.flatten_all()?.to_vec1::<f32>()?;
            let keep = v
                .chunks_exact(4)
                .enumerate()
                .filter(|(j, _)| !(*j < s.num_pos && s.pos_is_gt[*j]))
                .map(|(_, b)| [b[0], b[1], b[2], b[3]])
                .collect();
            next.push(keep);
            start += n;
        }
        Ok((losses, Some(next)))
    }

    /// Detections per image in original-image coordinates, with mmdet 2.11's ensemble of the
    /// stages (see the module docs).
    pub fn simple_test(
        &self,
        feats: &[Tensor],
        proposals: &[Tensor],
        metas: &[TestMeta],
    ) -> Result<Vec<InstanceResult>> {
        if proposals.len() != metas.len() {
            bail!("cascade roi_head: {} proposal lists for {} images", proposals.len(), metas.len());
        }
        let mut out = Vec::with_capacity(metas.len());
        for (i, (p, meta)) in proposals.iter().zip(metas).enumerate() {
            if p.dim(0)? == 0 {
                let masks = (!self.mask_heads.is_empty()).then(Vec::new);
                out.push(InstanceResult { masks, ..Default::default() });
                continue;
            }
            let image = image_feats(feats, i)?;
            let mut boxes = p.narrow(1, 0, 4)?.to_dtype(DType::F32)?.contiguous()?;
            let mut sum: Option<Tensor> = None;
            let mut last = None;
            for (s, head) in self.bbox_heads.iter().enumerate() {
                let rois = boxes_to_rois(&[&boxes_vec(&boxes)?], boxes.device())?;
                let f = self.bbox_extractor.forward(levels(&image, &self.bbox_extractor)?, &rois)?;
                let (cls, reg) = head.forward(&f, false)?;
                sum = Some(match sum {
                    None => cls.clone(),
                    Some(acc) => (acc + &cls)?,
                });
                if s + 1 < self.bbox_heads.len() {
                    let labels = argmax_foreground(&cls)?;
                    boxes = head.regress_by_class(&boxes, &labels, &reg, meta.img_size)?;
                } else {
                    last = Some(reg);
                }
            }
            let (Some(sum), Some(reg)) = (sum, last) else { bail!("cascade roi_head: no stages") };
            let cls = (sum / self.bbox_heads.len() as f64)?;
            let head = &self.bbox_heads[self.bbox_heads.len() - 1];
            let mut det = head.get_bboxes(&boxes, &cls, &reg, meta, &self.cfg.test)?;
            if !self.mask_heads.is_empty() {
                let heads: Vec<&FcnMaskHead> = self.mask_heads.iter().collect();
                det.masks = Some(test_masks(&heads, &self.mask_extractor, &image, &det, meta, &self.cfg.test)?);
            }
            out.push(det);
        }
        Ok(out)
    }
}

/// Host rows of a `[P, 4]` box tensor.
fn boxes_vec(t: &Tensor) -> Result<Vec<[f32; 4]>> {
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(v.chunks_exact(4).map(|b| [b[0], b[1], b[2], b[3]]).collect())
}
