//! What the heads return at test time for one image, in the original image's coordinates.

use nextdet_ops::BinaryMask;

/// Geometry the test-time post-processing needs to map boxes and masks back to the original image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestMeta {
    /// `(height, width)` of the resized image inside the padded input (boxes are clipped to it).
    pub img_size: (usize, usize),
    /// `(height, width)` of the original image (masks are pasted at this size).
    pub ori_size: (usize, usize),
    /// `[sx, sy]` resize factors; boxes are divided by them to return to the original image.
    pub scale_factor: [f32; 2],
}

/// Detections of one image after class-wise NMS, in original image pixels.
#[derive(Clone, Debug, Default)]
pub struct InstanceResult {
    /// `[x1, y1, x2, y2]` per detection.
    pub boxes: Vec<[f32; 4]>,
    /// Score per detection.
    pub scores: Vec<f32>,
    /// Contiguous label per detection.
    pub labels: Vec<usize>,
    /// Binary masks pasted at `ori_size`, one per detection, when the model has a mask head.
    pub masks: Option<Vec<BinaryMask>>,
}
