//! Detection heads: the RPN, the RoI box and mask heads, the cascade, and what they train with
//! (assigners, samplers, losses). Parameter names follow mmdetection 2.11 so that the published
//! ConvNeXt detection checkpoints load directly.

pub mod targets;
pub use targets::ImageTargets;
pub mod results;
pub use results::{InstanceResult, TestMeta};
pub mod assigner;
pub mod batch_norm;
pub mod bbox_head;
pub mod cascade;
pub mod classifier;
pub mod losses;
pub mod mask_head;
pub mod roi_head;
pub mod rpn;
pub mod sampler;
