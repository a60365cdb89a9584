//! The records that flow from a detection dataset through the transforms to the loader.
//!
//! Shared by the COCO dataset (which produces [`DetSample`]s), the transforms (which change the
//! image and keep boxes and masks consistent with it) and the collate step (which pads a batch).
//! Masks are full-image bitmaps, as mmdetection's `BitmapMasks` with `poly2mask=True`, so mask
//! targets are cut from the same raster that pycocotools evaluates.

use crate::image_io::RgbImage;
pub use nextdet_structures::ImageMeta;
use nextdet_structures::Rle;

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

    /// The mask a COCO run-length encoding describes.
    pub fn from_rle(rle: &Rle) -> Self {
        Self { width: rle.width as usize, height: rle.height as usize, data: rle.to_row_major_mask() }
    }

    /// The COCO run-length encoding of the mask (pycocotools' `mask.encode`).
    pub fn to_rle(&self) -> Rle {
        Rle::from_row_major_mask(&self.data, self.height as u32, self.width as u32)
            .expect("a bitmap holds height * width pixels")
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
