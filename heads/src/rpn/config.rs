//! The `rpn_head` section of a detector config: mmdetection's `RPNHead` arguments with its
//! `train_cfg.rpn`, `train_cfg.rpn_proposal` and `test_cfg.rpn` folded in.

use crate::assigner::MaxIoUAssignerConfig;
use crate::box_coder::BoxCoderConfig;
use crate::losses::RegLossConfig;
use crate::sampler::RandomSamplerConfig;
use serde::Deserialize;

/// The anchor generators a config can name.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum AnchorGeneratorType {
    /// mmdetection's `AnchorGenerator` (offset 0, no rounding, ratio-major).
    #[default]
    AnchorGenerator,
}

/// mmdet's `anchor_generator=dict(type='AnchorGenerator', ...)`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnchorGeneratorConfig {
    /// The generator (only `AnchorGenerator`).
    #[serde(rename = "type", default)]
    pub kind: AnchorGeneratorType,
    /// Anchor sizes in multiples of the level's stride (`[8]`).
    pub scales: Vec<f32>,
    /// Height / width ratios (`[0.5, 1, 2]`).
    pub ratios: Vec<f32>,
    /// Stride of each pyramid level (`[4, 8, 16, 32, 64]`).
    pub strides: Vec<usize>,
}

/// The RPN's part of mmdet's `train_cfg.rpn`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RpnTrainConfig {
    /// Which anchors are positive, negative or ignored.
    pub assigner: MaxIoUAssignerConfig,
    /// How many anchors per image are trained on.
    pub sampler: RandomSamplerConfig,
    /// Pixels an anchor may stick out of the image and still train; negative: no limit.
    pub allowed_border: i64,
}

/// Proposal generation settings (mmdet's `train_cfg.rpn_proposal` / `test_cfg.rpn`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProposalConfig {
    /// Highest-scored anchors kept per level before NMS.
    pub nms_pre: usize,
    /// Proposals kept per image after NMS.
    pub max_per_img: usize,
    /// NMS IoU threshold (a box is suppressed above it).
    pub nms_iou: f64,
    /// Boxes with a side below this are dropped before NMS (0: none).
    #[serde(default)]
    pub min_bbox_size: f32,
}

/// The `rpn_head` section of a config, mmdet's `RPNHead` arguments plus its train/test settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RpnHeadConfig {
    /// Channels of the shared 3x3 conv (256).
    #[serde(default = "default_feat_channels")]
    pub feat_channels: usize,
    /// Anchors per level.
    pub anchor_generator: AnchorGeneratorConfig,
    /// Delta normalization (means 0, stds 1 when absent).
    #[serde(default = "BoxCoderConfig::rpn_default")]
    pub bbox_coder: BoxCoderConfig,
    /// Regression loss (L1 for Mask R-CNN, SmoothL1 beta 1/9 for Cascade).
    pub loss_bbox: RegLossConfig,
    /// Assignment and sampling of anchors.
    pub train: RpnTrainConfig,
    /// Proposals handed to the RoI head during training.
    pub train_proposals: ProposalConfig,
    /// Proposals at test time.
    pub test_proposals: ProposalConfig,
}

fn default_feat_channels() -> usize {
    256
}
