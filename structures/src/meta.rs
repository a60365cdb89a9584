//! Where an image came from and what the transforms did to it.

use std::path::PathBuf;

/// The geometry of one image from its file to the network input, and back: mmdetection's
/// `img_meta` (`ori_shape`, `img_shape`, `pad_shape`, `scale_factor`, `flip`). The datasets fill
/// it; the RPN reads `pad_size` (valid anchors) and `img_size` (clipping); the RoI heads read
/// `scale_factor` and `ori_size` to return boxes and masks to the original image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageMeta {
    /// The COCO `image_id` (or the index for datasets without ids).
    pub image_id: u64,
    /// The image file.
    pub file: PathBuf,
    /// `(height, width)` of the decoded original image.
    pub ori_size: (usize, usize),
    /// `(height, width)` after resizing and cropping, before padding.
    pub img_size: (usize, usize),
    /// `(height, width)` after padding (the batch pads further to the largest image).
    pub pad_size: (usize, usize),
    /// `[sx, sy]`: resized width / original width and resized height / original height, as
    /// mmdetection's `scale_factor` (predicted boxes are divided by it).
    pub scale_factor: [f32; 2],
    /// Whether the image was flipped horizontally.
    pub flipped: bool,
}

impl ImageMeta {
    /// The meta of an untransformed image of `(height, width)`.
    pub fn new(image_id: u64, file: PathBuf, ori_size: (usize, usize)) -> Self {
        Self {
            image_id,
            file,
            ori_size,
            img_size: ori_size,
            pad_size: ori_size,
            scale_factor: [1.0, 1.0],
            flipped: false,
        }
    }

    /// The meta of a network input of `(height, width)` that is its own original (benchmarks,
    /// tests): no resize, no padding.
    pub fn of_input(size: (usize, usize)) -> Self {
        Self::new(0, PathBuf::new(), size)
    }
}
