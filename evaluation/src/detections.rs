//! What a detector returns for one image, in the original image's coordinates: the input of
//! [`crate::CocoEvaluator`] and of the results JSON writer.

use serde::{Deserialize, Serialize};

/// A binary mask in COCO's uncompressed run-length form: column-major runs, starting with a run
/// of zeros (pycocotools' `encode` before string compression).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rle {
    /// Image height.
    pub height: u32,
    /// Image width.
    pub width: u32,
    /// Alternating run lengths of 0s and 1s, column-major, summing to `height * width`.
    pub counts: Vec<u32>,
}

/// The detections of one image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Detections {
    /// The COCO `image_id` of the image.
    pub image_id: u64,
    /// Boxes `[x1, y1, x2, y2]` in original image pixels.
    pub boxes: Vec<[f32; 4]>,
    /// Confidence of each box.
    pub scores: Vec<f32>,
    /// Contiguous label (`0..num_classes`) of each box; the evaluator maps it to a category id.
    pub labels: Vec<usize>,
    /// One mask per box for instance segmentation, `None` for box-only detectors.
    pub masks: Option<Vec<Rle>>,
}
