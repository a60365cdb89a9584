//! The ground truth of one image as the heads consume it.

use candle_core::{Device, Result, Tensor};
use nextdet_ops::Boxes;
use nextdet_structures::ImageMeta;

/// Ground truth of one image in the (resized, flipped, padded) input's pixel coordinates, with
/// the image's geometry.
#[derive(Clone, Debug)]
pub struct ImageTargets {
    /// `[x1, y1, x2, y2]` per object, without +1.
    pub boxes: Vec<[f32; 4]>,
    /// Contiguous label `0..num_classes` per object.
    pub labels: Vec<usize>,
    /// `[x1, y1, x2, y2]` of crowd regions (mmdetection's `gt_bboxes_ignore`): candidates
    /// covered by one beyond an assigner's `ignore_iof_thr` are neither positive nor negative.
    pub ignore_boxes: Vec<[f32; 4]>,
    /// `[G, H, W]` full-image binary masks (0/1) of the objects at the input's padded size,
    /// `None` when the model has no mask head.
    pub masks: Option<Tensor>,
    /// The image's geometry: `img_size` (the image inside the padded input) and `pad_size`
    /// (its own padded size, which decides the valid anchors).
    pub meta: ImageMeta,
}

impl ImageTargets {
    /// Targets without masks or crowd regions for an input of `(height, width)` that is its own
    /// original (tests, benchmarks).
    pub fn new(boxes: Vec<[f32; 4]>, labels: Vec<usize>, size: (usize, usize)) -> Self {
        Self { boxes, labels, ignore_boxes: Vec::new(), masks: None, meta: ImageMeta::of_input(size) }
    }

    /// The ground-truth boxes as a `[G, 4]` tensor on `device`.
    pub fn gt_boxes(&self, device: &Device) -> Result<Boxes> {
        Boxes::from_slice(&flat(&self.boxes), device)
    }

    /// The crowd regions as a `[I, 4]` tensor on `device`.
    pub fn ignore_boxes(&self, device: &Device) -> Result<Boxes> {
        Boxes::from_slice(&flat(&self.ignore_boxes), device)
    }
}

/// `[x1, y1, x2, y2]` rows as one flat slice.
pub(crate) fn flat(boxes: &[[f32; 4]]) -> Vec<f32> {
    boxes.iter().flatten().copied().collect()
}
