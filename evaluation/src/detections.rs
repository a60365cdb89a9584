//! What a detector returns for one image, in the original image's coordinates: the input of
//! [`crate::CocoEvaluator`] and of the results JSON writer.

use nextdet_structures::Rle;
use serde::{Deserialize, Serialize};

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
