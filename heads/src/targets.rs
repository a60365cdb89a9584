//! The ground truth of one image as the heads consume it.

use candle_core::Tensor;

/// Ground truth of one image in the (resized, flipped, padded) input's pixel coordinates.
#[derive(Clone, Debug)]
pub struct ImageTargets {
    /// `[x1, y1, x2, y2]` per object, without +1.
    pub boxes: Vec<[f32; 4]>,
    /// Contiguous label `0..num_classes` per object.
    pub labels: Vec<usize>,
    /// `[G, H, W]` f32 full-image binary masks (0/1) of the objects at the input's padded size,
    /// `None` when the model has no mask head.
    pub masks: Option<Tensor>,
    /// `(height, width)` of the image inside the padded input (before padding).
    pub img_size: (usize, usize),
}
