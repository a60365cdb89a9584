//! What the heads return at test time for one image, in the original image's coordinates.

use nextdet_ops::BinaryMask;

/// Detections of one image after class-wise NMS, in original image pixels.
#[derive(Clone, Debug, Default)]
pub struct InstanceResult {
    /// `[x1, y1, x2, y2]` per detection.
    pub boxes: Vec<[f32; 4]>,
    /// Score per detection.
    pub scores: Vec<f32>,
    /// Contiguous label per detection.
    pub labels: Vec<usize>,
    /// Binary masks pasted at the original size, one per detection, when the model has a mask
    /// head.
    pub masks: Option<Vec<BinaryMask>>,
}
