//! Two-stage detectors: a backbone's stage outputs through an FPN, an RPN that proposes boxes,
//! and an RoI head that classifies, refines and segments them (`mmdet/models/detectors/
//! two_stage.py`). `MaskRCNN` has a one-stage RoI head, `CascadeRCNN` a three-stage one; both
//! are this struct, as in mmdetection 2.11, and their parameters carry mmdetection's names
//! (`backbone.`, `neck.`, `rpn_head.`, `roi_head.`) so the published checkpoints load directly.

use candle_core::{bail, Result, Tensor};
use nextdet_analysis::CostTree;
use nextdet_backbones::{build_backbone, Backbone, BackboneConfig};
use nextdet_heads::roi::{RoiHead, RoiHeadConfig, RoiHeadType, DUMMY_ROIS};
use nextdet_heads::rpn::{RpnHead, RpnHeadConfig};
use nextdet_heads::{ImageMeta, ImageTargets, InstanceResult};
use nextdet_necks::fpn::{Fpn, FpnConfig};
use nextdet_ops::autocast::Autocast;
use nextdet_ops::{Losses, ParamStore};
use rand::rngs::StdRng;
use serde::Deserialize;

/// The neck, chosen by its `type` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum NeckConfig {
    /// The feature pyramid (mmdetection's `FPN`).
    FPN(FpnConfig),
}

/// The two-stage detector types, as a config's `model.type` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorType {
    /// Mask R-CNN: the RoI head must be a `StandardRoIHead`.
    MaskRCNN,
    /// Cascade (Mask) R-CNN: the RoI head must be a `CascadeRoIHead`.
    CascadeRCNN,
}

impl DetectorType {
    /// The RoI head type this detector takes.
    pub fn roi_head_type(self) -> RoiHeadType {
        match self {
            DetectorType::MaskRCNN => RoiHeadType::StandardRoIHead,
            DetectorType::CascadeRCNN => RoiHeadType::CascadeRoIHead,
        }
    }
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

impl TwoStageConfig {
    /// Whether the model predicts masks.
    pub fn with_masks(&self) -> bool {
        self.roi_head.with_masks()
    }
}

/// A built two-stage detector and the parameters it reads from.
pub struct TwoStageDetector {
    backbone: Box<dyn Backbone>,
    neck: Fpn,
    rpn: RpnHead,
    roi: RoiHead,
    kind: DetectorType,
    params: ParamStore,
}

impl TwoStageDetector {
    /// Builds the detector a `model` section of type `kind` describes; an RoI head of the other
    /// type (a `MaskRCNN` with a `CascadeRoIHead`) is a config error naming the key.
    pub fn new(cfg: &TwoStageConfig, kind: DetectorType, params: ParamStore, seed: u64) -> Result<Self> {
        if cfg.roi_head.kind != kind.roi_head_type() {
            bail!(
                "model.roi_head.type: {:?}, but model.type {kind:?} takes {:?}",
                cfg.roi_head.kind,
                kind.roi_head_type()
            );
        }
        let root = params.root();
        let backbone = build_backbone(&cfg.backbone, &root.pp("backbone"), seed)?;
        let NeckConfig::FPN(fpn) = &cfg.neck;
        let neck = Fpn::new(fpn, &backbone.out_channels(), &root.pp("neck"))?;
        let channels = fpn.out_channels;
        let rpn = RpnHead::new(&cfg.rpn_head, channels, &root.pp("rpn_head"))?;
        let roi = RoiHead::new(&cfg.roi_head, channels, &root.pp("roi_head"))?;
        Ok(Self { backbone, neck, rpn, roi, kind, params })
    }

    /// The FPN levels of a batch, computed on the parameters' device (the images are moved
    /// there) in their autocast dtype.
    fn features(&self, images: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let _autocast = Autocast::enable(self.params.autocast())?;
        let feats = self.backbone.forward(&images.to_device(self.params.device())?, train)?;
        self.neck.forward(&feats)
    }

    /// The losses of one training step on `images: [N, 3, H, W]` (normalized, padded to the
    /// batch's size); `targets[i].meta` carries image `i`'s own sizes and `rngs[i]` draws image
    /// `i`'s anchor and RoI samples (one generator per image, so that an image's sampling does
    /// not depend on its batch or rank).
    pub fn forward_train(&self, images: &Tensor, targets: &[ImageTargets], rngs: &mut [StdRng]) -> Result<Losses> {
        let feats = self.features(images, true)?;
        let rpn_out = self.rpn.forward(&feats)?;
        let mut losses = self.rpn.loss(&rpn_out, targets, rngs)?;
        let metas: Vec<ImageMeta> = targets.iter().map(|t| t.meta.clone()).collect();
        let proposals = self.rpn.proposals(&rpn_out, &metas, &self.rpn.config().train_proposals)?;
        losses.extend(self.roi.forward_train(&feats, &proposals, targets, rngs)?);
        Ok(losses)
    }

    /// Detections of each image of the batch, in original image coordinates.
    ///
    /// candle records the graph of every op on a parameter; at test time nothing is
    /// differentiated, so each stage's outputs are detached to free the activations behind them
    /// (the backbone's, at 800x1333, are most of the memory).
    pub fn predict(&self, images: &Tensor, metas: &[ImageMeta]) -> Result<Vec<InstanceResult>> {
        let detach_all = |ts: Vec<Tensor>| ts.into_iter().map(|t| t.detach()).collect::<Vec<_>>();
        nextdet_ops::on_pool(|| {
            let _autocast = Autocast::enable(self.params.autocast())?;
            let feats = detach_all(self.backbone.forward(&images.to_device(self.params.device())?, false)?);
            let feats = detach_all(self.neck.forward(&feats)?);
            let rpn_out = self.rpn.forward(&feats)?.detach();
            let proposals = self.rpn.proposals(&rpn_out, metas, &self.rpn.config().test_proposals)?;
            self.roi.simple_test(&feats, &proposals, metas)
        })
    }

    /// Whether the model predicts masks.
    pub fn with_masks(&self) -> bool {
        self.roi.with_masks()
    }

    /// Which detector this is.
    pub fn kind(&self) -> DetectorType {
        self.kind
    }

    /// The parameters (to load a checkpoint into, or to train).
    pub fn params(&self) -> &ParamStore {
        &self.params
    }
}

impl TwoStageDetector {
    /// Describes what mmdetection's `get_flops.py` counts, `forward_dummy` on `images: [N, 3, H,
    /// W]`: backbone, neck and RPN head on the image, then the RoI head on 1000 RoIs (masks on
    /// the first 100); see [`RoiHead::cost`]. Parameters of every part are registered.
    pub fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<()> {
        let feats = tree.scope("backbone", |t| self.backbone.cost(images, t))?;
        let pyramid = tree.scope("neck", |t| self.neck.cost(&feats, t))?;
        tree.scope("rpn_head", |t| self.rpn.cost(&pyramid, t))?;
        let (rois, mask_rois) = DUMMY_ROIS;
        tree.scope("roi_head", |t| self.roi.cost(&pyramid, rois, mask_rois, t))
    }
}
