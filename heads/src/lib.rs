//! Detection heads: the RPN, the RoI box and mask heads as one staged RoI head (Mask R-CNN's and
//! Cascade Mask R-CNN's), and what they train with (assigners, samplers, losses). Parameter
//! names follow mmdetection 2.11 so that the published ConvNeXt detection checkpoints load
//! directly.
//!
//! Data between the parts: [`ImageTargets`] (ground truth with its [`ImageMeta`]), [`Proposals`]
//! (tensors, from the RPN through every stage), [`nextdet_ops::Losses`] (terms and metrics),
//! [`InstanceResult`] (detections in original-image pixels).

#![deny(missing_docs)]

pub mod assigner;
pub mod batch_norm;
pub mod bbox_head;
pub mod box_coder;
pub mod classifier;
pub mod cost;
pub mod losses;
pub mod mask_head;
pub mod proposals;
pub mod results;
pub mod roi;
pub mod rpn;
pub mod sampler;
pub mod targets;

pub use nextdet_structures::ImageMeta;
pub use proposals::Proposals;
pub use results::InstanceResult;
pub use targets::ImageTargets;
