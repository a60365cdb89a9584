//! The `bbox_coder` section of the RPN and of every box head: mmdetection's
//! `DeltaXYWHBBoxCoder` settings (`mmdet/core/bbox/coder/delta_xywh_bbox_coder.py`).

use nextdet_ops::DeltaXywhCoder;
use serde::Deserialize;

/// The box coders a config can name.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BoxCoderType {
    /// Deltas `(dx, dy, dw, dh)` normalized by means and stds.
    #[default]
    DeltaXYWHBBoxCoder,
}

/// `bbox_coder: {type: DeltaXYWHBBoxCoder, target_means, target_stds, clip_border}`. A section
/// given in a config replaces the head's default as a whole, as in mmdetection, so an omitted
/// key takes the coder's own default (means 0, stds 1, clipping on).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BoxCoderConfig {
    /// The coder (only `DeltaXYWHBBoxCoder`).
    #[serde(rename = "type", default)]
    pub kind: BoxCoderType,
    /// Subtracted from the raw deltas.
    #[serde(default)]
    pub target_means: [f32; 4],
    /// Divide the raw deltas.
    #[serde(default = "ones")]
    pub target_stds: [f32; 4],
    /// Clip decoded boxes to the image.
    #[serde(default = "yes")]
    pub clip_border: bool,
}

fn ones() -> [f32; 4] {
    [1.0; 4]
}

fn yes() -> bool {
    true
}

impl BoxCoderConfig {
    /// The RPN's default (`AnchorHead`): means 0, stds 1.
    pub fn rpn_default() -> Self {
        Self { kind: BoxCoderType::DeltaXYWHBBoxCoder, target_means: [0.0; 4], target_stds: ones(), clip_border: true }
    }

    /// The box heads' default (`BBoxHead`): means 0, stds `[0.1, 0.1, 0.2, 0.2]`.
    pub fn rcnn_default() -> Self {
        Self { target_stds: [0.1, 0.1, 0.2, 0.2], ..Self::rpn_default() }
    }

    /// The coder, or an error naming `section` when a std is not positive.
    pub fn coder(&self, section: &str) -> candle_core::Result<DeltaXywhCoder> {
        if self.target_stds.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            candle_core::bail!("{section}.bbox_coder.target_stds: must be positive, got {:?}", self.target_stds);
        }
        let BoxCoderType::DeltaXYWHBBoxCoder = self.kind;
        Ok(DeltaXywhCoder { clip_border: self.clip_border, ..DeltaXywhCoder::new(self.target_means, self.target_stds) })
    }
}
