//! Segmentations of the annotation file, checked against their image when the dataset is
//! opened and rasterized to full-image bitmaps when a sample is loaded.

use nextdet_structures::Rle;

use super::json::{RawCounts, RawSegm};
use super::ImageInfo;
use crate::sample::Bitmap;

/// A segmentation as stored in the annotation file, checked for structure.
#[derive(Clone, Debug, PartialEq)]
pub enum Segmentation {
    /// Polygons `[x0, y0, x1, y1, ...]` in pixel coordinates; the mask is their union.
    Polygons(Vec<Vec<f64>>),
    /// The column-major runs of the image's mask (compressed string counts are decoded when the
    /// file is opened).
    Rle(Rle),
}

impl Segmentation {
    /// The full-image mask of an `info`-sized image, as pycocotools' `annToMask`.
    pub fn to_bitmap(&self, info: &ImageInfo) -> Result<Bitmap, String> {
        match self {
            Segmentation::Polygons(polys) => {
                let data = nextdet_evaluation::polygons_to_mask(polys, info.height as u32, info.width as u32)
                    .map_err(|e| e.to_string())?;
                Ok(Bitmap { width: info.width, height: info.height, data })
            }
            Segmentation::Rle(rle) => Ok(Bitmap::from_rle(rle)),
        }
    }
}

/// Checks a segmentation's structure against its image and converts it.
pub(crate) fn check_segmentation(segm: &RawSegm, info: &ImageInfo) -> Result<Segmentation, String> {
    match segm {
        RawSegm::Polygons(polys) => {
            if polys.is_empty() {
                return Err("the segmentation is an empty list of polygons".into());
            }
            for (k, p) in polys.iter().enumerate() {
                if p.len() < 6 {
                    return Err(format!(
                        "polygon {k} has {} coordinates; a polygon needs at least 3 points (6 numbers)",
                        p.len()
                    ));
                }
                if p.len() % 2 != 0 {
                    return Err(format!("polygon {k} has an odd number of coordinates ({})", p.len()));
                }
            }
            Ok(Segmentation::Polygons(polys.clone()))
        }
        RawSegm::Rle { size, counts } => {
            let &[h, w] = size.as_slice() else {
                return Err(format!("RLE size has {} numbers; [height, width] has 2", size.len()));
            };
            if h as usize != info.height || w as usize != info.width {
                return Err(format!(
                    "RLE size [h={h}, w={w}] differs from the image's {}x{} (w x h)",
                    info.width, info.height
                ));
            }
            let (height, width) = (info.height as u32, info.width as u32);
            let counts: Vec<u32> = match counts {
                RawCounts::Str(s) => {
                    Rle::from_counts_string(s, height, width).map_err(|e| format!("compressed RLE string: {e}"))?.counts
                }
                RawCounts::List(list) => list
                    .iter()
                    .map(|&c| {
                        u32::try_from(c).map_err(|_| format!("RLE count {c} is not a non-negative 32-bit integer"))
                    })
                    .collect::<Result<_, _>>()?,
            };
            let rle = Rle::from_column_major_counts(height, width, counts).map_err(|e| format!("RLE counts: {e}"))?;
            Ok(Segmentation::Rle(rle))
        }
    }
}
