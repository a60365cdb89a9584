//! Necks: what turns a backbone's multi-scale features into the pyramid the detection heads
//! read. Only mmdetection's FPN is needed by the ConvNeXt recipes (REFERENCE 3.4).

pub mod fpn;
pub use fpn::{Fpn, FpnConfig};
