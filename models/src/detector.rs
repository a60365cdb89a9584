//! Two-stage detectors: a backbone's stage outputs through an FPN, an RPN that proposes boxes,
//! and RoI heads that classify, refine and segment them. `MaskRCNN` uses the standard RoI head,
//! `CascadeRCNN` the three-stage cascade; both are the same struct with a different RoI head,
//! as in mmdetection 2.11, and their parameters carry mmdetection's names (`backbone.`,
//! `neck.`, `rpn_head.`, `roi_head.`) so the published checkpoints load directly.

use candle_core::{bail, Result, Tensor};
use nextdet_backbones::{build_backbone, Backbone, BackboneConfig};
use nextdet_heads::cascade::{CascadeRoiHead, CascadeRoiHeadConfig};
use nextdet_heads::roi_head::{StandardRoiHead, StandardRoiHeadConfig};
use nextdet_heads::rpn::{RpnHead, RpnHeadConfig};
use nextdet_heads::{ImageTargets, InstanceResult, TestMeta};
use nextdet_necks::fpn::{Fpn, FpnConfig};
use nextdet_ops::ParamStore;
use rand::rngs::StdRng;
use serde::Deserialize;

/// The RoI head of a two-stage detector, chosen by its `type` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum RoiHeadConfig {
    /// One box head and one mask head (Mask R-CNN).
    StandardRoIHead(Box<StandardRoiHeadConfig>),
    /// Three box heads at rising IoU and one mask head per stage (Cascade Mask R-CNN).
    CascadeRoIHead(Box<CascadeRoiHeadConfig>),
}

/// The neck, chosen by its `type` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum NeckConfig {
    /// The feature pyramid (mmdetection's `FPN`).
    FPN(FpnConfig),
}

/// `model: {type: MaskRCNN | CascadeRCNN, backbone, neck, rpn_head, roi_head}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwoStageConfig {
    /// The trunk; its stage channels set the FPN's input channels.
    pub backbone: BackboneConfig,
    /// The feature pyramid.
    pub neck: NeckConfig,
    /// Region proposals.
    pub rpn_head: RpnHeadConfig,
    /// Box classification, regression and masks.
    pub roi_head: RoiHeadConfig,
}

/// The built RoI head.
enum RoiHead {
    Standard(Box<StandardRoiHead>),
    Cascade(Box<CascadeRoiHead>),
}

/// A built two-stage detector and the parameters it reads from.
pub struct TwoStageDetector {
    backbone: Box<dyn Backbone>,
    neck: Fpn,
    rpn: RpnHead,
    roi: RoiHead,
    cfg: TwoStageConfig,
    params: ParamStore,
}

impl TwoStageDetector {
    /// Builds the detector; `cascade` says which `type` the config named, so that a MaskRCNN
    /// config with a cascade head (or the reverse) is refused instead of silently accepted.
    pub fn new(cfg: &TwoStageConfig, cascade: bool, params: ParamStore, seed: u64) -> Result<Self> {
        let root = params.root();
        let backbone = build_backbone(&cfg.backbone, &root.pp("backbone"), seed)?;
        let NeckConfig::FPN(fpn) = &cfg.neck;
        let neck = Fpn::new(fpn, &backbone.out_channels(), &root.pp("neck"))?;
        let channels = fpn.out_channels;
        let rpn = RpnHead::new(&cfg.rpn_head, channels, &root.pp("rpn_head"))?;
        let roi = match (&cfg.roi_head, cascade) {
            (RoiHeadConfig::StandardRoIHead(c), false) => {
                RoiHead::Standard(Box::new(StandardRoiHead::new(c, channels, &root.pp("roi_head"))?))
            }
            (RoiHeadConfig::CascadeRoIHead(c), true) => {
                RoiHead::Cascade(Box::new(CascadeRoiHead::new(c, channels, &root.pp("roi_head"))?))
            }
            (_, true) => bail!("model type CascadeRCNN needs `roi_head: {{type: CascadeRoIHead}}`"),
            (_, false) => bail!("model type MaskRCNN needs `roi_head: {{type: StandardRoIHead}}`"),
        };
        Ok(Self { backbone, neck, rpn, roi, cfg: cfg.clone(), params })
    }

    /// The FPN levels of a batch.
    fn features(&self, images: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let feats = self.backbone.forward(images, train)?;
        self.neck.forward(&feats)
    }

    /// The named losses of one training step on `images: [N, 3, H, W]` (normalized, padded).
    /// `pad_sizes` are each image's own padded `(height, width)` (its size rounded up to the
    /// pad divisor, before the batch pads it further): mmdetection decides which anchors are
    /// valid from it.
    pub fn forward_train(
        &self,
        images: &Tensor,
        targets: &[ImageTargets],
        pad_sizes: &[(usize, usize)],
        rng: &mut StdRng,
    ) -> Result<Vec<(String, Tensor)>> {
        let feats = self.features(images, true)?;
        let rpn_out = self.rpn.forward(&feats)?;
        let mut losses = self.rpn.loss_with_pad_shapes(&rpn_out, targets, pad_sizes, rng)?;
        let sizes: Vec<(usize, usize)> = targets.iter().map(|t| t.img_size).collect();
        let proposals = self.rpn.proposals(&rpn_out, &sizes, &self.cfg.rpn_head.train_proposals)?;
        losses.extend(match &self.roi {
            RoiHead::Standard(head) => head.forward_train(&feats, &proposals, targets, rng)?,
            RoiHead::Cascade(head) => head.forward_train(&feats, &proposals, targets, rng)?,
        });
        Ok(losses)
    }

    /// Detections of each image of the batch, in original image coordinates.
    ///
    /// candle records the graph of every op on a parameter; at test time nothing is
    /// differentiated, so each stage's outputs are detached to free the activations behind them
    /// (the backbone's, at 800x1333, are most of the memory).
    pub fn predict(&self, images: &Tensor, metas: &[TestMeta]) -> Result<Vec<InstanceResult>> {
        let detach_all = |ts: Vec<Tensor>| ts.into_iter().map(|t| t.detach()).collect::<Vec<_>>();
        let feats = detach_all(self.backbone.forward(images, false)?);
        let feats = detach_all(self.neck.forward(&feats)?);
        let mut rpn_out = self.rpn.forward(&feats)?;
        rpn_out.cls = detach_all(rpn_out.cls);
        rpn_out.reg = detach_all(rpn_out.reg);
        let sizes: Vec<(usize, usize)> = metas.iter().map(|m| m.img_size).collect();
        let proposals = self.rpn.proposals(&rpn_out, &sizes, &self.cfg.rpn_head.test_proposals)?;
        match &self.roi {
            RoiHead::Standard(head) => head.simple_test(&feats, &proposals, metas),
            RoiHead::Cascade(head) => head.simple_test(&feats, &proposals, metas),
        }
    }

    /// Whether the model predicts masks.
    pub fn with_masks(&self) -> bool {
        match &self.cfg.roi_head {
            RoiHeadConfig::StandardRoIHead(c) => c.mask_head.is_some(),
            RoiHeadConfig::CascadeRoIHead(c) => c.mask_head.is_some(),
        }
    }

    /// The parameters (to load a checkpoint into, or to train).
    pub fn params(&self) -> &ParamStore {
        &self.params
    }
}
