//! The R-CNN box head: mmdet 2.11's `ConvFCBBoxHead` family (`Shared2FCBBoxHead` for Mask
//! R-CNN, the "4conv1fc" head with batch norm for Cascade Mask R-CNN), from
//! `mmdet/models/roi_heads/bbox_heads/convfc_bbox_head.py` and `bbox_head.py`.
//!
//! RoI features `[R, C, 7, 7]` go through optional shared 3x3 conv modules (conv, batch norm,
//! ReLU), are flattened, go through shared fully connected layers with ReLU, and end in two
//! linears: `fc_cls` with `num_classes + 1` logits (background **last**, as mmdet) and `fc_reg`
//! with `4 * num_classes` class-specific deltas (or 4 when class-agnostic). Parameter names are
//! mmdet's (`shared_convs.{i}.conv.weight`, `shared_convs.{i}.bn.*`, `shared_fcs.{i}.*`,
//! `fc_cls.*`, `fc_reg.*`).
//!
//! Training targets and losses ([`BBoxHead::get_targets`], [`BBoxHead::loss`]) follow `bbox_head.py`'s `get_targets` and `loss`;
//! test-time post-processing ([`BBoxHead::get_bboxes`]) its `get_bboxes` with `multiclass_nms`
//! (`mmdet/core/post_processing/bbox_nms.py`) and `regress_by_class`.

mod inference;
mod targets;

pub use inference::softmax_rows;
pub use targets::BBoxTargets;

use crate::batch_norm::BatchNorm;
use crate::box_coder::BoxCoderConfig;
use crate::losses::RegLossConfig;
use candle_core::{bail, Result, Tensor};
use nextdet_analysis::{Act, CostTree, Norm as NormSpec, NormKind, Shape, Via};
use nextdet_ops::nn::{kaiming_normal_fan_out, xavier_uniform, Conv2d, Linear};
use nextdet_ops::{relu, DeltaXywhCoder, Init, Scope};
use serde::Deserialize;

/// Which normalization the shared convolutions use (`norm_cfg`); `SyncBN` normalizes with the
/// statistics of every rank's batch (the default process group, `nextdet_dist::world`), which
/// in one process is batch norm.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormType {
    /// `nn.BatchNorm2d`.
    BN,
    /// `nn.SyncBatchNorm`, identical to `BN` in one process.
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

/// The classification losses a box head can name.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClsLossType {
    /// Softmax cross entropy over `K + 1` classes.
    #[default]
    CrossEntropyLoss,
}

/// mmdet's `CrossEntropyLoss` config as a classification loss (softmax over `K + 1` classes).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClsLossConfig {
    /// The loss (only `CrossEntropyLoss`).
    #[serde(rename = "type", default)]
    pub kind: ClsLossType,
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
        Self { kind: ClsLossType::CrossEntropyLoss, use_sigmoid: false, loss_weight: 1.0 }
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
    /// Box coder (means 0, stds `[0.1, 0.1, 0.2, 0.2]` when absent, mmdet's `BBoxHead` default).
    #[serde(default = "BoxCoderConfig::rcnn_default")]
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
        c.bbox_coder.coder("bbox_head")?;
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
            let bn = match &cfg.norm_cfg {
                Some(n) => Some(BatchNorm::new(&s.pp("bn"), out)?.synced(n.kind == NormType::SyncBN)),
                None => None,
            };
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
        let coder = cfg.bbox_coder.coder("bbox_head")?;
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
}

impl BBoxHead {
    /// Describes the head on `roi_feats: [R, C, S, S]` as mmdetection's `ConvFCBBoxHead` runs it
    /// (`shared_convs.{i}`: `conv`, `bn` (`nn.SyncBatchNorm` for SyncBN, a type mmcv's counter
    /// does not hook), `activate`; flatten; `shared_fcs.{i}` each followed by the one `relu`
    /// module; `fc_cls`, `fc_reg`); returns the shapes of the class scores and the deltas.
    pub fn cost(&self, roi_feats: &[usize], tree: &mut CostTree) -> Result<(Shape, Shape)> {
        let mut x = roi_feats.to_vec();
        for (i, m) in self.shared_convs.iter().enumerate() {
            x = tree.scope(format!("shared_convs.{i}"), |t| {
                let y = crate::cost::conv2d(t, "conv", &x, &m.conv)?;
                if let Some(bn) = &m.bn {
                    let via = match self.cfg.norm_cfg.as_ref().map(|n| n.kind) {
                        Some(NormType::SyncBN) => Via::Functional,
                        _ => Via::Module,
                    };
                    let spec = NormSpec { kind: NormKind::BatchNorm, channels: bn.channels(), affine: true, via };
                    t.norm("bn", &y, spec)?;
                }
                Ok(t.act("activate", &y, Act::Relu, Via::Module))
            })?;
        }
        let mut x = vec![x[0], x[1..].iter().product()];
        for (i, fc) in self.shared_fcs.iter().enumerate() {
            x = tree.linear(&format!("shared_fcs.{i}"), &x, fc.weight().dims(), true)?;
            x = tree.act("relu", &x, Act::Relu, Via::Module);
        }
        let cls = tree.linear("fc_cls", &x, self.fc_cls.weight().dims(), true)?;
        let reg = tree.linear("fc_reg", &x, self.fc_reg.weight().dims(), true)?;
        Ok((cls, reg))
    }
}
