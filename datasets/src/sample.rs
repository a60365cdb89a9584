//! The records that flow from a detection dataset through the transforms to the loader.
//!
//! Shared by the COCO dataset (which produces [`DetSample`]s), the transforms (which change the
//! image and keep boxes and masks consistent with it) and the collate step (which pads a batch).
//! Masks are full-image bitmaps, as mmdetection's `BitmapMasks` with `poly2mask=True`, so mask
//! targets are cut from the same raster that pycocotools evaluates.

use std::path::PathBuf;

use crate::image_io::RgbImage;

/// A binary mask of one instance over the whole image, row-major, one byte (0 or 1) per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width` values, 0 or 1.
    pub data: Vec<u8>,
}

impl Bitmap {
    /// An all-zero mask.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self { width, height, data: vec![0; width * height] }
    }

    /// Number of set pixels.
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }
}

/// Where an image came from and what the transforms did to it; what is needed to map
/// predictions back to the original image.
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
}

/// One detection / instance segmentation example.
#[derive(Clone, Debug, PartialEq)]
pub struct DetSample {
    /// The image, 8-bit RGB (after the transforms: resized, flipped, cropped, padded).
    pub image: RgbImage,
    /// Ground-truth boxes `[x1, y1, x2, y2]` in the current image's pixels, without +1.
    pub boxes: Vec<[f32; 4]>,
    /// Contiguous labels `0..num_classes`, one per box.
    pub labels: Vec<usize>,
    /// One full-image mask per box (empty when masks were not loaded).
    pub masks: Vec<Bitmap>,
    /// Crowd regions `[x1, y1, x2, y2]` (mmdetection's `gt_bboxes_ignore`).
    pub ignore_boxes: Vec<[f32; 4]>,
    /// Provenance and the geometry of the transforms.
    pub meta: ImageMeta,
}
