//! The second stage of a two-stage detector: mmdetection 2.11's `StandardRoIHead` (Mask R-CNN)
//! and `CascadeRoIHead` (Cascade Mask R-CNN) as one design, a list of stages of the same code
//! (`mmdet/models/roi_heads/standard_roi_head.py`, `cascade_roi_head.py`).
//!
//! A stage is a box head and, with masks, a mask head, with its own assigner, sampler and loss
//! weight; the RoI extractors are shared. Training runs the stages in turn: each assigns and
//! samples the current proposals with its own thresholds (ground truth added), trains its box
//! head on all sampled RoIs and its mask head on the positives, and (before the last stage)
//! refines the sampled RoIs with its regression into the next stage's proposals (the class of
//! the target, or the best foreground class for negatives; ground-truth RoIs dropped). A
//! cascade reports each stage's losses as `s{i}.loss_*` times the stage weight (`s{i}.acc`
//! unweighted); a standard head as `loss_cls`, `acc`, `loss_bbox`, `loss_mask`.
//!
//! Testing runs the stages on the refined boxes, averages their classification **logits**,
//! takes boxes from the last stage's regression, and averages the mask heads' sigmoids on the
//! final detections (`merge_aug_masks`); with one stage this is Mask R-CNN's test. Boxes stay
//! tensors from the proposals to the detections.

mod config;
mod sampling;

pub use config::{
    PerStage, RcnnTestConfig, RcnnTrainConfig, RoiExtractorConfig, RoiExtractorType, RoiHeadConfig, RoiHeadType,
    StageConfig,
};
pub use sampling::{sample_rois, SampledRois};

use crate::assigner::MaxIoUAssigner;
use crate::bbox_head::BBoxHead;
use crate::mask_head::{select_channels, sigmoid, FcnMaskHead};
use crate::proposals::{rois, Proposals};
use crate::results::InstanceResult;
use crate::sampler::RandomSampler;
use crate::targets::ImageTargets;
use candle_core::{bail, DType, Device, Result, Tensor, D};
use nextdet_analysis::{CostTree, Shape};
use nextdet_ops::nms::indices_tensor;
use nextdet_ops::{BinaryMask, Boxes, Losses, Scope, SingleRoiExtractor};
use nextdet_structures::ImageMeta;
use rand::rngs::StdRng;
use sampling::{batch_mask_targets, pos_labels};

/// One stage: a box head, its mask head and what it trains with.
pub struct RoiStage {
    bbox_head: BBoxHead,
    mask_head: Option<FcnMaskHead>,
    train: Option<RcnnTrainConfig>,
    loss_weight: f64,
}

impl RoiStage {
    /// The box head.
    pub fn bbox_head(&self) -> &BBoxHead {
        &self.bbox_head
    }

    /// The mask head, if the model predicts masks.
    pub fn mask_head(&self) -> Option<&FcnMaskHead> {
        self.mask_head.as_ref()
    }
}

/// The RoI head (see the module docs); parameters under `roi_head.bbox_head[.{s}]` and
/// `roi_head.mask_head[.{s}]`.
pub struct RoiHead {
    kind: RoiHeadType,
    bbox_extractor: SingleRoiExtractor,
    mask_extractor: SingleRoiExtractor,
    /// Whether the masks are pooled by the box extractor (no `mask_roi_extractor` in the config).
    shared_mask_extractor: bool,
    stages: Vec<RoiStage>,
    test: RcnnTestConfig,
}

impl RoiHead {
    /// Builds the stages under `scope` (normally `root.pp("roi_head")`) for features of
    /// `in_channels` channels.
    pub fn new(cfg: &RoiHeadConfig, in_channels: usize, scope: &Scope) -> Result<Self> {
        let stage_cfgs = cfg.stages()?;
        let cascade = cfg.kind == RoiHeadType::CascadeRoIHead;
        let bbox_extractor = cfg.bbox_roi_extractor.build(in_channels)?;
        let mask_extractor = match &cfg.mask_roi_extractor {
            Some(m) => m.build(in_channels)?,
            None => bbox_extractor.clone(),
        };
        let mut stages = Vec::with_capacity(stage_cfgs.len());
        for (s, sc) in stage_cfgs.into_iter().enumerate() {
            let (bbox_scope, mask_scope) = if cascade {
                (scope.pp("bbox_head").pp(s), scope.pp("mask_head").pp(s))
            } else {
                (scope.pp("bbox_head"), scope.pp("mask_head"))
            };
            if let Some(m) = &cfg.mask_head {
                if m.num_classes != sc.bbox_head.num_classes() {
                    bail!(
                        "roi_head: mask_head has {} classes, bbox_head {}",
                        m.num_classes,
                        sc.bbox_head.num_classes()
                    );
                }
            }
            if let Some(t) = &sc.train {
                let key = if cascade { format!("roi_head.train.{s}") } else { "roi_head.train".to_string() };
                t.assigner.validate(&format!("{key}.assigner"))?;
                t.sampler.validate(&format!("{key}.sampler"))?;
                if t.debug {
                    bail!("{key}.debug: only false is supported");
                }
            }
            stages.push(RoiStage {
                bbox_head: BBoxHead::new(&sc.bbox_head, in_channels, &bbox_scope)?,
                mask_head: cfg.mask_head.as_ref().map(|m| FcnMaskHead::new(m, in_channels, &mask_scope)).transpose()?,
                train: sc.train,
                loss_weight: sc.loss_weight,
            });
        }
        let shared_mask_extractor = cfg.mask_roi_extractor.is_none();
        Ok(Self {
            kind: cfg.kind,
            bbox_extractor,
            mask_extractor,
            shared_mask_extractor,
            stages,
            test: cfg.test.clone(),
        })
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[RoiStage] {
        &self.stages
    }

    /// Whether the head predicts masks.
    pub fn with_masks(&self) -> bool {
        self.stages.iter().any(|s| s.mask_head.is_some())
    }

    /// The prefix of stage `s`'s loss names: `s{s}.` in a cascade, none in a standard head.
    fn loss_prefix(&self, s: usize) -> String {
        match self.kind {
            RoiHeadType::CascadeRoIHead => format!("s{s}."),
            RoiHeadType::StandardRoIHead => String::new(),
        }
    }

    /// The losses of one batch (see the module docs). `feats` are the FPN outputs (`[N, C, H,
    /// W]`, finest first; the first levels the extractors have strides for are used),
    /// `proposals[i]` image `i`'s detached proposals, `rngs[i]` the generator of image `i`'s RoI
    /// sampling in every stage.
    pub fn forward_train(
        &self,
        feats: &[Tensor],
        proposals: &[Proposals],
        targets: &[ImageTargets],
        rngs: &mut [StdRng],
    ) -> Result<Losses> {
        if proposals.len() != targets.len() || rngs.len() != targets.len() {
            bail!(
                "roi_head: {} proposal lists and {} generators for {} images",
                proposals.len(),
                rngs.len(),
                targets.len()
            );
        }
        let mut current: Vec<Boxes> = proposals.iter().map(|p| p.boxes.clone()).collect();
        let mut losses = Losses::new();
        for (s, stage) in self.stages.iter().enumerate() {
            let Some(train) = &stage.train else {
                bail!("roi_head: training needs the `train` settings");
            };
            let assigner = MaxIoUAssigner::new(&train.assigner);
            let sampler = RandomSampler::new(&train.sampler);
            let samples = current
                .iter()
                .zip(targets)
                .zip(rngs.iter_mut())
                .map(|((p, t), rng)| sample_rois(&assigner, &sampler, p, t, rng))
                .collect::<Result<Vec<_>>>()?;
            let (stage_losses, next) = self.stage_losses(s, feats, &samples, targets)?;
            losses.extend_scaled(&self.loss_prefix(s), stage_losses, stage.loss_weight)?;
            if let Some(next) = next {
                current = next;
            }
        }
        Ok(losses)
    }

    /// Stage `s`'s unweighted losses on a given sampling (the deterministic part of
    /// [`Self::forward_train`]) and, before the last stage, the refined proposals of each image
    /// (ground-truth RoIs dropped).
    pub fn stage_losses(
        &self,
        s: usize,
        feats: &[Tensor],
        samples: &[SampledRois],
        targets: &[ImageTargets],
    ) -> Result<(Losses, Option<Vec<Boxes>>)> {
        let stage = &self.stages[s];
        let Some(train) = &stage.train else { bail!("roi_head: training needs the `train` settings") };
        let device = feats.first().map(|f| f.device().clone()).unwrap_or(Device::Cpu);
        let head = &stage.bbox_head;
        let per: Vec<&Boxes> = samples.iter().map(|x| &x.boxes).collect();
        let rois = rois(&per, &device)?;
        let bbox_feats = self.bbox_extractor.forward(levels(feats, &self.bbox_extractor)?, &rois)?;
        let (cls, reg) = head.forward(&bbox_feats, true)?;
        let t = head.get_targets(samples, targets, train.pos_weight, &device)?;
        let mut losses = head.loss(&cls, &reg, &rois, &t)?;
        if let Some(mask_head) = &stage.mask_head {
            let pos = samples.iter().map(SampledRois::positives).collect::<Result<Vec<_>>>()?;
            let pos_rois = self::rois(&pos.iter().collect::<Vec<_>>(), &device)?;
            let mask_feats = self.mask_extractor.forward(levels(feats, &self.mask_extractor)?, &pos_rois)?;
            let pred = mask_head.forward(&mask_feats)?;
            let mt = batch_mask_targets(samples, targets, train.mask_size, &device)?;
            losses.push_term("loss_mask", mask_head.loss(&pred, &mt, &pos_labels(samples, targets))?);
        }
        if s + 1 == self.stages.len() {
            return Ok((losses, None));
        }
        // mmdet `refine_bboxes`: target labels, argmax foreground class for negatives.
        let k = head.num_classes();
        let best = argmax_foreground(&cls)?;
        let labels: Vec<usize> = t.labels.iter().zip(&best).map(|(&l, &b)| if l == k { b } else { l }).collect();
        let reg = reg.detach();
        let mut next = Vec::with_capacity(samples.len());
        let mut start = 0;
        for (x, target) in samples.iter().zip(targets) {
            let n = x.boxes.len();
            let boxes = rois.narrow(0, start, n)?.narrow(1, 1, 4)?;
            let refined = head.regress_by_class(
                &boxes,
                &labels[start..start + n],
                &reg.narrow(0, start, n)?,
                target.meta.img_size,
            )?;
            let keep: Vec<usize> = (0..n).filter(|&j| !(j < x.num_pos && x.pos_is_gt[j])).collect();
            next.push(Boxes::new(refined.index_select(&indices_tensor(&keep, &device)?, 0)?)?);
            start += n;
        }
        Ok((losses, Some(next)))
    }

    /// Detections per image in original-image coordinates (see the module docs).
    pub fn simple_test(
        &self,
        feats: &[Tensor],
        proposals: &[Proposals],
        metas: &[ImageMeta],
    ) -> Result<Vec<InstanceResult>> {
        if proposals.len() != metas.len() {
            bail!("roi_head: {} proposal lists for {} images", proposals.len(), metas.len());
        }
        let mask_heads: Vec<&FcnMaskHead> = self.stages.iter().filter_map(|s| s.mask_head.as_ref()).collect();
        let mut out = Vec::with_capacity(metas.len());
        for (i, (p, meta)) in proposals.iter().zip(metas).enumerate() {
            if p.is_empty() {
                let masks = (!mask_heads.is_empty()).then(Vec::new);
                out.push(InstanceResult { masks, ..Default::default() });
                continue;
            }
            let image = image_feats(feats, i)?;
            let device = p.boxes.tensor().device();
            let mut boxes = p.boxes.clone();
            let mut sum: Option<Tensor> = None;
            let mut last = None;
            for (s, stage) in self.stages.iter().enumerate() {
                let head = &stage.bbox_head;
                let rois = rois(&[&boxes], device)?;
                let f = self.bbox_extractor.forward(levels(&image, &self.bbox_extractor)?, &rois)?;
                let (cls, reg) = head.forward(&f, false)?;
                sum = Some(match sum {
                    None => cls.clone(),
                    Some(acc) => (acc + &cls)?,
                });
                if s + 1 < self.stages.len() {
                    let labels = argmax_foreground(&cls)?;
                    boxes = Boxes::new(head.regress_by_class(boxes.tensor(), &labels, &reg, meta.img_size)?)?;
                } else {
                    last = Some(reg);
                }
            }
            let (Some(sum), Some(reg)) = (sum, last) else { bail!("roi_head: no stages") };
            let n = self.stages.len();
            let cls = if n > 1 { (sum / n as f64)? } else { sum };
            let head = &self.stages[n - 1].bbox_head;
            let mut det = head.get_bboxes(boxes.tensor(), &cls, &reg, meta, &self.test)?;
            if !mask_heads.is_empty() {
                det.masks = Some(test_masks(&mask_heads, &self.mask_extractor, &image, &det, meta, &self.test)?);
            }
            out.push(det);
        }
        Ok(out)
    }
}

/// Per row of `cls_score: [R, K + 1]`, the best foreground class (background column excluded).
fn argmax_foreground(cls_score: &Tensor) -> Result<Vec<usize>> {
    let k = cls_score.dim(1)? - 1;
    let fg = cls_score.detach().narrow(1, 0, k)?;
    Ok(fg.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?.into_iter().map(|v| v as usize).collect())
}

/// The first levels of `feats` that `e` has strides for, or an error.
fn levels<'a>(feats: &'a [Tensor], e: &SingleRoiExtractor) -> Result<&'a [Tensor]> {
    let n = e.featmap_strides.len();
    if feats.len() < n {
        bail!("roi head: {} feature levels for {n} RoI extractor strides", feats.len());
    }
    Ok(&feats[..n])
}

/// Image `i`'s feature maps as a batch of one.
fn image_feats(feats: &[Tensor], i: usize) -> Result<Vec<Tensor>> {
    feats.iter().map(|f| f.narrow(0, i, 1)).collect()
}

/// mmdet's test-time masks for the detections of one image: RoIs are the detections scaled
/// back to the network input (`box * scale_factor`), every mask head's sigmoid is computed on
/// them and averaged (one head: as is; cascade: `merge_aug_masks`), the label channel is
/// pasted at `rois / scale_factor` into the original image and thresholded.
fn test_masks(
    heads: &[&FcnMaskHead],
    extractor: &SingleRoiExtractor,
    image: &[Tensor],
    det: &InstanceResult,
    meta: &ImageMeta,
    cfg: &RcnnTestConfig,
) -> Result<Vec<BinaryMask>> {
    if det.boxes.is_empty() {
        return Ok(Vec::new());
    }
    let [sx, sy] = meta.scale_factor;
    let scaled: Vec<f32> = det.boxes.iter().flat_map(|b| [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]).collect();
    let device = image[0].device();
    let scaled = Boxes::from_slice(&scaled, device)?;
    let rois = rois(&[&scaled], device)?;
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
    let paste = scaled.tensor().broadcast_div(&Tensor::new(&[[sx, sy, sx, sy]], device)?)?;
    heads[0].paste(&probs, &paste, meta.ori_size, cfg.mask_thr_binary)
}

/// RoIs the box heads see in mmdetection's `forward_dummy` (`two_stage.py`: `torch.randn(1000, 4)`
/// proposals), and the first of them the mask heads see (`standard_roi_head.py`,
/// `cascade_roi_head.py`: `rois[:100]`): what `get_flops.py` counts.
pub const DUMMY_ROIS: (usize, usize) = (1000, 100);

impl RoiHead {
    /// Describes mmdetection's `forward_dummy` on the pyramid `feats`: every stage's box head on
    /// `rois` RoIs and every stage's mask head on `mask_rois` (the same RoIs, unrefined, for
    /// every stage), each behind its RoIAlign (`{bbox,mask}_roi_extractor[.{s}].roi_layers.0`,
    /// a custom op to both counters). mmdetection builds one extractor per cascade stage; a
    /// Mask R-CNN without a `mask_roi_extractor` pools masks with the box extractor.
    pub fn cost(&self, feats: &[Shape], rois: usize, mask_rois: usize, tree: &mut CostTree) -> Result<()> {
        let c = feats.first().map_or(0, |f| f.get(1).copied().unwrap_or(0));
        let cascade = self.kind == RoiHeadType::CascadeRoIHead;
        let stage_path = |name: &str, s: usize| if cascade { format!("{name}.{s}") } else { name.to_string() };
        let pooled = |e: &SingleRoiExtractor, n: usize| vec![n, c, e.output_size.0, e.output_size.1];
        for (s, stage) in self.stages.iter().enumerate() {
            let feats = pooled(&self.bbox_extractor, rois);
            tree.roi_align(&format!("{}.roi_layers.0", stage_path("bbox_roi_extractor", s)), &feats);
            tree.scope(stage_path("bbox_head", s), |t| stage.bbox_head.cost(&feats, t))?;
        }
        for (s, stage) in self.stages.iter().enumerate() {
            let Some(mask_head) = &stage.mask_head else { continue };
            let feats = pooled(&self.mask_extractor, mask_rois);
            let extractor = if self.shared_mask_extractor { "bbox_roi_extractor" } else { "mask_roi_extractor" };
            tree.roi_align(&format!("{}.roi_layers.0", stage_path(extractor, s)), &feats);
            tree.scope(stage_path("mask_head", s), |t| mask_head.cost(&feats, t))?;
        }
        Ok(())
    }
}
