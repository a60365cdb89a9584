//! Necks: what turns a backbone's multi-scale features into the pyramid the detection heads
//! read. Only mmdetection's FPN is needed by the ConvNeXt recipes.

#![deny(missing_docs)]

pub mod fpn;
pub use fpn::{Fpn, FpnConfig};
