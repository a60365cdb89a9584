//! The R-CNN box head: mmdet 2.11's `ConvFCBBoxHead` family (`Shared2FCBBoxHead` for Mask
//! R-CNN, the "4conv1fc" head with batch norm for Cascade Mask R-CNN; REFERENCE.md 3.4, 3.5).
//!
//! RoI features `[R, C, 7, 7]` go through optional shared 3x3 conv modules (conv, batch norm,
//! ReLU), are flattened, go through shared fully connected layers with ReLU, and end in two
//! linears: `fc_cls` with `num_classes + 1` logits (background **last**, as mmdet) and `fc_reg`
//! with `4 * num_classes` class-specific deltas (or 4 when class-agnostic). Parameter names are
//! mmdet's (`shared_convs.{i}.conv.weight`, `shared_convs.{i}.bn.*`, `shared_fcs.{i}.*`,
//! `fc_cls.*`, `fc_reg.*`).
//!
//! Training targets, losses and test-time post-processing (`get_bboxes` with `multiclass_nms`)
//! follow `bbox_head.py` and `bbox_nms.py`.

use crate::batch_norm::BatchNorm;
use crate::losses::{cross_entropy, RegLossConfig};
use crate::results::{InstanceResult, TestMeta};
use candle_core::{bail, DType, Device, Result, Tensor, D};
use nextdet_ops::nms::{batched_nms_slices, indices_tensor};
use nextdet_ops::nn::{kaiming_normal_fan_out, xavier_uniform, Conv2d, Linear};
use nextdet_ops::{relu, BatchedNmsOpts, Boxes, DeltaXywhCoder, Init, Scope};
use serde::Deserialize;

/// Which normalization the shared convolutions use (`norm_cfg`); `SyncBN` is batch norm on one
/// device.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormType {
    /// `nn.BatchNorm2d`.
    BN,
    /// `nn.SyncBatchNorm`, identical to `BN` on one device.
    SyncBN,
}

/// mmdet's `norm_cfg` of a conv module.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NormConfig {
    /// The norm layer.
    #[serde(rename = "type")]
    pub kind: NormType,
    /// Whether the norm's affine parameters train (mmdet: true; only `true` is supported).
    #[serde(default = "yes")]
    pub requires_grad: bool,
}

fn yes() -> bool {
    true
}

/// mmdet's `bbox_coder` (`DeltaXYWHBBoxCoder`).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BoxCoderConfig {
    /// `DeltaXYWHBBoxCoder` (the only coder supported), optional.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Means subtracted from the raw deltas.
    #[serde(default)]
    pub target_means: [f32; 4],
    /// Stds dividing the raw deltas.
    #[serde(default = "default_stds")]
    pub target_stds: [f32; 4],
    /// Clip decoded boxes to the image (mmdet default true).
    #[serde(default = "yes")]
    pub clip_border: bool,
}

fn default_stds() -> [f32; 4] {
    [0.1, 0.1, 0.2, 0.2]
}

impl Default for BoxCoderConfig {
    fn default() -> Self {
        Self { kind: None, target_means: [0.0; 4], target_stds: default_stds(), clip_border: true }
    }
}

impl BoxCoderConfig {
    /// The coder these settings describe.
    pub fn coder(&self) -> Result<DeltaXywhCoder> {
        if let Some(k) = &self.kind {
            if k != "DeltaXYWHBBoxCoder" {
                bail!("bbox_coder.type: only DeltaXYWHBBoxCoder is supported, got `{k}`");
            }
        }
        Ok(DeltaXywhCoder { clip_border: self.clip_border, ..DeltaXywhCoder::new(self.target_means, self.target_stds) })
    }
}

/// mmdet's `CrossEntropyLoss` config as a classification loss (softmax over `K + 1` classes).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClsLossConfig {
    /// `CrossEntropyLoss`, optional.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Sigmoid instead of softmax; only `false` is supported by the box head.
    #[serde(default)]
    pub use_sigmoid: bool,
    /// Multiplies the loss.
    #[serde(default = "one")]
    pub loss_weight: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for ClsLossConfig {
    fn default() -> Self {
        Self { kind: None, use_sigmoid: false, loss_weight: 1.0 }
    }
}

/// Settings of every box head type (mmdet `ConvFCBBoxHead` plus `BBoxHead` arguments).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConvFcBBoxHeadConfig {
    /// Input channels; derived from the neck when absent, must match when given.
    #[serde(default)]
    pub in_channels: Option<usize>,
    /// RoI feature size (7).
    #[serde(default = "seven")]
    pub roi_feat_size: usize,
    /// Foreground classes.
    pub num_classes: usize,
    /// Shared 3x3 conv modules (fixed by the named head types).
    #[serde(default)]
    pub num_shared_convs: Option<usize>,
    /// Shared fully connected layers (fixed by the named head types).
    #[serde(default)]
    pub num_shared_fcs: Option<usize>,
    /// Channels of the shared convs.
    #[serde(default = "c256")]
    pub conv_out_channels: usize,
    /// Width of the shared fcs.
    #[serde(default = "c1024")]
    pub fc_out_channels: usize,
    /// Norm after each shared conv (the conv then has no bias).
    #[serde(default)]
    pub norm_cfg: Option<NormConfig>,
    /// Box coder.
    #[serde(default)]
    pub bbox_coder: BoxCoderConfig,
    /// One box per RoI instead of one per class.
    #[serde(default)]
    pub reg_class_agnostic: bool,
    /// Regression loss on decoded boxes (GIoU) instead of deltas.
    #[serde(default)]
    pub reg_decoded_bbox: bool,
    /// Classification loss.
    #[serde(default)]
    pub loss_cls: ClsLossConfig,
    /// Regression loss.
    pub loss_bbox: RegLossConfig,
}

fn seven() -> usize {
    7
}
fn c256() -> usize {
    256
}
fn c1024() -> usize {
    1024
}

/// A box head config, by mmdet type name.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type")]
pub enum BBoxHeadConfig {
    /// Two shared fcs (Mask R-CNN).
    Shared2FCBBoxHead(ConvFcBBoxHeadConfig),
    /// Four shared convs and one fc.
    Shared4Conv1FCBBoxHead(ConvFcBBoxHeadConfig),
    /// Any number of shared convs and fcs (Cascade's "4conv1fc" with `norm_cfg`).
    ConvFCBBoxHead(ConvFcBBoxHeadConfig),
}

impl BBoxHeadConfig {
    /// The settings with the layer counts filled in; an error if a named head type is given
    /// counts of its own.
    pub fn resolve(&self) -> Result<ConvFcBBoxHeadConfig> {
        let (c, fixed, name) = match self {
            Self::Shared2FCBBoxHead(c) => (c, Some((0, 2)), "Shared2FCBBoxHead"),
            Self::Shared4Conv1FCBBoxHead(c) => (c, Some((4, 1)), "Shared4Conv1FCBBoxHead"),
            Self::ConvFCBBoxHead(c) => (c, None, "ConvFCBBoxHead"),
        };
        let mut c = c.clone();
        if let Some((convs, fcs)) = fixed {
            if c.num_shared_convs.is_some() || c.num_shared_fcs.is_some() {
                bail!("bbox_head: {name} fixes num_shared_convs and num_shared_fcs; use ConvFCBBoxHead to set them");
            }
            c.num_shared_convs = Some(convs);
            c.num_shared_fcs = Some(fcs);
        }
        if c.num_shared_convs.unwrap_or(0) + c.num_shared_fcs.unwrap_or(0) == 0 {
            bail!("bbox_head: {name} needs at least one shared conv or fc");
        }
        if c.loss_cls.use_sigmoid {
            bail!("bbox_head.loss_cls: use_sigmoid=true is not supported (softmax cross entropy only)");
        }
        if c.norm_cfg.as_ref().is_some_and(|n| !n.requires_grad) {
            bail!("bbox_head.norm_cfg: requires_grad=false is not supported");
        }
        c.bbox_coder.coder()?;
        Ok(c)
    }

    /// Foreground classes.
    pub fn num_classes(&self) -> usize {
        match self {
            Self::Shared2FCBBoxHead(c) | Self::Shared4Conv1FCBBoxHead(c) | Self::ConvFCBBoxHead(c) => c.num_classes,
        }
    }
}

/// A 3x3 conv module: conv (no bias when normed), optional batch norm, ReLU.
struct ConvModule {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

impl ConvModule {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv.forward(x)?;
        let y = match &self.bn {
            Some(bn) => bn.forward(&y, train)?,
            None => y,
        };
        relu(&y)
    }
}

/// The sampled RoIs of one image as the heads train on them: positives first, then negatives
/// (mmdet's `SamplingResult.bboxes` order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampledRois {
    /// `[x1, y1, x2, y2]` of the positives, then of the negatives.
    pub boxes: Vec<[f32; 4]>,
    /// How many of `boxes` are positives.
    pub num_pos: usize,
    /// Index into the image's ground truth of each positive.
    pub pos_gt_inds: Vec<usize>,
    /// Whether each positive is a ground-truth box added as a proposal.
    pub pos_is_gt: Vec<bool>,
}

/// Classification and regression targets of all sampled RoIs of a batch (mmdet `get_targets`
/// with `concat=True`).
#[derive(Clone, Debug)]
pub struct BBoxTargets {
    /// Label per RoI, `num_classes` for background.
    pub labels: Vec<usize>,
    /// Classification weight per RoI (`pos_weight` for positives, 1 for negatives).
    pub label_weights: Vec<f32>,
    /// Row of each positive RoI in the batch.
    pub pos_rows: Vec<usize>,
    /// `[num_pos, 4]` regression targets of the positives: encoded deltas, or the ground-truth
    /// boxes with `reg_decoded_bbox`.
    pub pos_targets: Tensor,
}

/// R-CNN test settings (mmdet `test_cfg.rcnn`).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RcnnTestConfig {
    /// Keep class scores strictly above this (0.05).
    #[serde(default = "score_thr")]
    pub score_thr: f32,
    /// Class-wise NMS IoU threshold (0.5).
    #[serde(default = "half")]
    pub nms_iou: f64,
    /// Detections kept per image (100).
    #[serde(default = "hundred")]
    pub max_per_img: usize,
    /// Mask binarization threshold (0.5).
    #[serde(default = "half_f32")]
    pub mask_thr_binary: f32,
}

fn score_thr() -> f32 {
    0.05
}
fn half() -> f64 {
    0.5
}
fn half_f32() -> f32 {
    0.5
}
fn hundred() -> usize {
    100
}

impl Default for RcnnTestConfig {
    fn default() -> Self {
        Self { score_thr: 0.05, nms_iou: 0.5, max_per_img: 100, mask_thr_binary: 0.5 }
    }
}

/// mmdet's `ConvFCBBoxHead` (see the module docs).
pub struct BBoxHead {
    cfg: ConvFcBBoxHeadConfig,
    shared_convs: Vec<ConvModule>,
    shared_fcs: Vec<Linear>,
    fc_cls: Linear,
    fc_reg: Linear,
    coder: DeltaXywhCoder,
}

impl BBoxHead {
    /// Builds the head under `scope` (e.g. `roi_head.bbox_head`) with mmdet's initialization:
    /// conv modules Kaiming-normal (fan-out), shared fcs Xavier-uniform, `fc_cls` normal(0.01),
    /// `fc_reg` normal(0.001), biases zero, norms weight 1 bias 0.
    pub fn new(cfg: &BBoxHeadConfig, in_channels: usize, scope: &Scope) -> Result<Self> {
        let cfg = cfg.resolve()?;
        if let Some(c) = cfg.in_channels {
            if c != in_channels {
                bail!("bbox_head.in_channels is {c} but the RoI features have {in_channels} channels");
            }
        }
        let area = cfg.roi_feat_size * cfg.roi_feat_size;
        let mut dim = in_channels;
        let mut shared_convs = Vec::new();
        for i in 0..cfg.num_shared_convs.unwrap_or(0) {
            let s = scope.pp("shared_convs").pp(i);
            let (inp, out) = (dim, cfg.conv_out_channels);
            let init = kaiming_normal_fan_out(out * 9);
            let normed = cfg.norm_cfg.is_some();
            let conv = if normed {
                Conv2d::new_no_bias(&s.pp("conv"), inp, out, 3, 1, 1, init)?
            } else {
                Conv2d::new(&s.pp("conv"), inp, out, 3, 1, 1, init)?
            };
            let bn = if normed { Some(BatchNorm::new(&s.pp("bn"), out)?) } else { None };
            shared_convs.push(ConvModule { conv, bn });
            dim = out;
        }
        let mut shared_fcs = Vec::new();
        let fcs = cfg.num_shared_fcs.unwrap_or(0);
        if fcs > 0 {
            dim *= area;
            for i in 0..fcs {
                let out = cfg.fc_out_channels;
                shared_fcs.push(Linear::new(&scope.pp("shared_fcs").pp(i), dim, out, xavier_uniform(dim, out))?);
                dim = out;
            }
        } else {
            dim *= area;
        }
        let k = cfg.num_classes;
        let fc_cls = Linear::new(&scope.pp("fc_cls"), dim, k + 1, Init::Normal { std: 0.01 })?;
        let reg_out = if cfg.reg_class_agnostic { 4 } else { 4 * k };
        let fc_reg = Linear::new(&scope.pp("fc_reg"), dim, reg_out, Init::Normal { std: 0.001 })?;
        let coder = cfg.bbox_coder.coder()?;
        Ok(Self { cfg, shared_convs, shared_fcs, fc_cls, fc_reg, coder })
    }

    /// The resolved settings.
    pub fn config(&self) -> &ConvFcBBoxHeadConfig {
        &self.cfg
    }

    /// Foreground classes `K`.
    pub fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }

    /// The box coder.
    pub fn coder(&self) -> &DeltaXywhCoder {
        &self.coder
    }

    /// `roi_feats: [R, C, S, S]` to `(cls_score [R, K + 1], bbox_pred [R, 4K])`; `train`
    /// selects batch statistics in the norms.
    pub fn forward(&self, roi_feats: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let mut x = roi_feats.clone();
        for m in &self.shared_convs {
            x = m.forward(&x, train)?;
        }
        let mut x = x.flatten_from(1)?;
        for fc in &self.shared_fcs {
            x = relu(&fc.forward(&x)?)?;
        }
        Ok((self.fc_cls.forward(&x)?, self.fc_reg.forward(&x)?))
    }

    /// mmdet `get_targets` over the images of a batch: positives get their ground-truth label
    /// and weight `pos_weight` (1 when `<= 0`), negatives the background label `K` and weight 1;
    /// regression targets of the positives are encoded deltas, or the ground-truth boxes when
    /// `reg_decoded_bbox`. `gt_boxes[i]`, `gt_labels[i]` are image `i`'s ground truth.
    pub fn get_targets(
        &self,
        samples: &[SampledRois],
        gt_boxes: &[Vec<[f32; 4]>],
        gt_labels: &[Vec<usize>],
        pos_weight: f32,
        device: &Device,
    ) -> Result<BBoxTargets> {
        let k = self.num_classes();
        let w = if pos_weight <= 0.0 { 1.0 } else { pos_weight };
        let (mut labels, mut label_weights, mut pos_rows) = (Vec::new(), Vec::new(), Vec::new());
        let (mut pos_boxes, mut pos_gts) = (Vec::new(), Vec::new());
        for (img, s) in samples.iter().enumerate() {
            let (gts, gls) = (&gt_boxes[img], &gt_labels[img]);
            for (j, b) in s.boxes.iter().enumerate() {
                if j < s.num_pos {
                    let g = s.pos_gt_inds[j];
                    let (Some(gb), Some(&gl)) = (gts.get(g), gls.get(g)) else {
                        bail!("bbox targets: positive {j} of image {img} names ground truth {g} of {}", gts.len());
                    };
                    pos_rows.push(labels.len());
                    labels.push(gl);
                    label_weights.push(w);
                    pos_boxes.extend_from_slice(b);
                    pos_gts.extend_from_slice(gb);
                } else {
                    labels.push(k);
                    label_weights.push(1.0);
                }
            }
        }
        let n = pos_rows.len();
        let gt = Tensor::from_vec(pos_gts, (n, 4), device)?;
        let pos_targets = if self.cfg.reg_decoded_bbox || n == 0 {
            gt
        } else {
            let p = Boxes::new(Tensor::from_vec(pos_boxes, (n, 4), device)?)?;
            self.coder.encode(&p, &Boxes::new(gt)?)?
        };
        Ok(BBoxTargets { labels, label_weights, pos_rows, pos_targets })
    }

    /// mmdet `BBoxHead.loss`: `loss_cls` (softmax cross entropy weighted by the label weights,
    /// averaged over the RoIs with a positive weight), `loss_bbox` (the regression loss of the
    /// positives' ground-truth-class boxes, summed and divided by the number of sampled RoIs)
    /// and `acc` (top-1 accuracy in percent over all RoIs, detached). `rois: [R, 5]` are the
    /// sampled RoIs (needed to decode boxes with `reg_decoded_bbox`).
    pub fn loss(
        &self,
        cls_score: &Tensor,
        bbox_pred: &Tensor,
        rois: &Tensor,
        t: &BBoxTargets,
    ) -> Result<Vec<(String, Tensor)>> {
        let r = cls_score.dim(0)?;
        if r != t.labels.len() || bbox_pred.dim(0)? != r || rois.dims() != [r, 5] {
            bail!(
                "bbox loss: {r} scores, {} box predictions, rois {:?} for {} targets",
                bbox_pred.dim(0)?,
                rois.dims(),
                t.labels.len()
            );
        }
        let dev = cls_score.device();
        let mut out = Vec::new();
        if r > 0 {
            let nll = cross_entropy(cls_score, &t.labels)?;
            let weights = Tensor::new(t.label_weights.as_slice(), dev)?;
            let avg = (t.label_weights.iter().filter(|&&w| w > 0.0).count() as f64).max(1.0);
            let loss_cls = ((nll * weights)?.sum_all()? * (self.cfg.loss_cls.loss_weight / avg))?;
            out.push(("loss_cls".to_string(), loss_cls));
            out.push(("acc".to_string(), accuracy(&cls_score.detach(), &t.labels)?));
        }
        let loss_bbox = if t.pos_rows.is_empty() {
            (bbox_pred.sum_all()? * 0.0)?
        } else {
            let pred = if self.cfg.reg_decoded_bbox {
                self.coder.decode(&Boxes::new(rois.narrow(1, 1, 4)?)?, bbox_pred, None)?
            } else {
                bbox_pred.clone()
            };
            let pos_pred = self.select_class_boxes(&pred, &t.pos_rows, &t.labels)?;
            self.cfg.loss_bbox.compute(&pos_pred, &t.pos_targets, None, Some(r as f64))?
        };
        out.push(("loss_bbox".to_string(), loss_bbox));
        Ok(out)
    }

    /// `[rows.len(), 4]`: for each `rows[i]`, the 4 columns of class `labels[rows[i]]` of `pred:
    /// [R, 4K]` (all of `pred`'s columns when class-agnostic). Differentiable.
    fn select_class_boxes(&self, pred: &Tensor, rows: &[usize], labels: &[usize]) -> Result<Tensor> {
        let dev = pred.device();
        if self.cfg.reg_class_agnostic {
            return pred.index_select(&indices_tensor(rows, dev)?, 0);
        }
        let k = self.num_classes();
        let flat: Vec<usize> = rows.iter().map(|&i| i * k + labels[i]).collect();
        let r = pred.dim(0)?;
        pred.reshape((r * k, 4))?.index_select(&indices_tensor(&flat, dev)?, 0)
    }

    /// mmdet `regress_by_class`: decodes, for each RoI, the deltas of class `labels[i]` of
    /// `bbox_pred: [P, 4K]` from `boxes: [P, 4]`, clipped to `img_size = (h, w)`. `[P, 4]`.
    pub fn regress_by_class(
        &self,
        boxes: &Tensor,
        labels: &[usize],
        bbox_pred: &Tensor,
        img_size: (usize, usize),
    ) -> Result<Tensor> {
        let rows: Vec<usize> = (0..labels.len()).collect();
        let deltas = self.select_class_boxes(bbox_pred, &rows, labels)?;
        self.coder.decode(&Boxes::new(boxes.clone())?, &deltas, Some((img_size.0 as f32, img_size.1 as f32)))
    }

    /// mmdet `get_bboxes` + `multiclass_nms` for one image: softmax of `cls_score: [P, K + 1]`,
    /// boxes decoded from `boxes: [P, 4]` (the RoIs without the batch column) by `bbox_pred`
    /// and clipped to `meta.img_size`, divided by the scale factor, then per class the scores
    /// `> score_thr`, class-wise NMS and the best `max_per_img`.
    pub fn get_bboxes(
        &self,
        boxes: &Tensor,
        cls_score: &Tensor,
        bbox_pred: &Tensor,
        meta: &TestMeta,
        cfg: &RcnnTestConfig,
    ) -> Result<InstanceResult> {
        let p = boxes.dim(0)?;
        if p == 0 {
            return Ok(InstanceResult::default());
        }
        let k = self.num_classes();
        let scores = softmax_rows(&cls_score.detach())?;
        let (h, w) = meta.img_size;
        let decoded =
            self.coder.decode(&Boxes::new(boxes.detach())?, &bbox_pred.detach(), Some((h as f32, w as f32)))?;
        let [sx, sy] = meta.scale_factor;
        let decoded = decoded
            .reshape((p, decoded.dim(1)? / 4, 4))?
            .broadcast_div(&Tensor::new(&[[[sx, sy, sx, sy]]], boxes.device())?)?;
        let per_row = decoded.dim(1)?;
        let b = decoded.flatten_all()?.to_vec1::<f32>()?;
        let s = scores.flatten_all()?.to_vec1::<f32>()?;
        let (mut xyxy, mut sc, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..p {
            for c in 0..k {
                let v = s[i * (k + 1) + c];
                if v > cfg.score_thr {
                    let j = if per_row == 1 { 0 } else { c };
                    xyxy.extend_from_slice(&b[(i * per_row + j) * 4..(i * per_row + j) * 4 + 4]);
                    sc.push(v);
                    ids.push(c as i64);
                }
            }
        }
        let mut keep = batched_nms_slices(&xyxy, &sc, &ids, &BatchedNmsOpts::new(cfg.nms_iou))?;
        keep.truncate(cfg.max_per_img);
        Ok(InstanceResult {
            boxes: keep.iter().map(|&i| [xyxy[4 * i], xyxy[4 * i + 1], xyxy[4 * i + 2], xyxy[4 * i + 3]]).collect(),
            scores: keep.iter().map(|&i| sc[i]).collect(),
            labels: keep.iter().map(|&i| ids[i] as usize).collect(),
            masks: None,
        })
    }
}

/// Row-wise softmax of `[R, C]` (PyTorch's `F.softmax(dim=-1)`).
pub fn softmax_rows(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// mmdet `accuracy(topk=1)`: the percentage of rows whose arg-max (first on ties) is the label.
fn accuracy(scores: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let pred = scores.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let hit = pred.iter().zip(labels).filter(|(&p, &l)| p as usize == l).count();
    Tensor::new(100.0 * hit as f32 / labels.len().max(1) as f32, scores.device())
}
