//! CPU kernels for nextdet as candle custom ops, each with a forward and a backward pass.
//!
//! candle's own depthwise convolution is a loop over groups and its fused layer norm has no
//! backward (gaps of candle 0.11), so the ConvNeXt block is built from the ops
//! here. All kernels work on `f32`, run on rayon's pool, and accept any layout (inputs are made
//! contiguous at the API boundary).
//!
//! ConvNeXt works channels-last: a stage keeps its activations as `[N, H, W, C]` from the
//! depthwise convolution to the residual, so that layer norm, the pointwise linears and the
//! fused elementwise steps all run over contiguous channel rows.

#![deny(missing_docs)]

pub mod autocast;
pub mod batch_norm;
pub mod batch_norm_layer;
pub mod bias_relu;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod depthwise_conv;
pub mod drop_path;
pub mod gelu;
mod gemm;
pub mod generic;
pub use gemm::{bf16_supported, inference_precision, set_inference_precision, PackedWeight, Precision};
pub mod layer_norm;
pub mod linear;
pub mod losses;
pub mod params;
pub mod residual;
pub mod sync_batch_norm;

pub use batch_norm::{batch_norm_train, BatchStats};
pub use bias_relu::{bias_add, relu};
pub use cpu::on_pool;
pub use depthwise_conv::{depthwise_conv2d_layer_norm_nhwc, depthwise_conv2d_nchw, depthwise_conv2d_nhwc};
pub use drop_path::{drop_path, drop_path_scales};
pub use gelu::bias_gelu;
pub use layer_norm::{layer_norm, layer_norm_channels_first};
pub use linear::{linear_no_bias, linear_packed};
pub use losses::{LossItem, LossKind, Losses};
pub use params::{weights_changed, weights_generation, Init, LoadReport, ParamStore, Scope};
pub use residual::{layer_scale_drop_path_residual, layer_scale_residual};
pub use sync_batch_norm::sync_batch_norm_train;
pub mod mask_paste;
pub mod resample;
pub mod roi_align;
pub use mask_paste::{
    binary_masks_to_tensor, mask_targets, mask_targets_soft, paste_masks, paste_masks_soft, BinaryMask, MaskWindow,
    PastedMask, SoftMask,
};
pub use resample::{resize_bilinear, resize_nearest, subsample_stride2};
pub use roi_align::{roi_align, roi_align_nhwc, RoiAlign};
pub mod anchors;
pub mod boxes;
pub mod nms;
pub use anchors::{anchor_inside_flags, AnchorGenerator};
pub use boxes::{aligned_giou, box_iof, box_iou, generalized_box_iou, Boxes, DeltaXywhCoder};
pub use nms::{batched_nms, nms, BatchedNmsOpts};
pub mod roi_extractor;
pub use roi_extractor::{map_roi_levels, SingleRoiExtractor};
pub mod conv2d;
pub mod convnext_mlp;
pub use convnext_mlp::{convnext_mlp_inference, PackedMlp};
pub mod gelu_linear;
pub mod nn;
pub use gelu_linear::{gelu_linear, gelu_linear_chunked};
pub mod max_pool;
pub use max_pool::max_pool_3x3_stride2_nonnegative;
pub mod attention;
pub mod gather_rows;
pub mod softmax;
pub use attention::window_attention;
pub use gather_rows::{gather_rows, scatter_rows, RowMap};
pub use softmax::{log_softmax_last_dim, softmax_last_dim};
