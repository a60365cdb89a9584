//! Instance masks in COCO's formats: polygons rasterized exactly as pycocotools'
//! `frPyObjects` + `merge` + `decode` does (through hotcoco), so that ground-truth masks and
//! mask AP agree with the reference to the pixel.

use thiserror::Error;

/// Why a segmentation could not be rasterized.
#[derive(Debug, Error, PartialEq)]
pub enum MaskError {
    /// A polygon needs at least three points (six numbers), as pycocotools requires.
    #[error("polygon {index} has {len} coordinates; a polygon needs at least 6 (three points)")]
    ShortPolygon {
        /// Which polygon of the object.
        index: usize,
        /// Its number of coordinates.
        len: usize,
    },
    /// A coordinate is NaN or infinite.
    #[error("polygon {index} has a non-finite coordinate")]
    NonFinite {
        /// Which polygon of the object.
        index: usize,
    },
    /// The image size is empty or too large for COCO's 32-bit run lengths.
    #[error("cannot rasterize into a {height}x{width} image: {reason}")]
    Size {
        /// Image height.
        height: u32,
        /// Image width.
        width: u32,
        /// Why it cannot be used.
        reason: String,
    },
}

/// Rasterizes the polygons of one object (`[x0, y0, x1, y1, ...]` each, pixel coordinates) into
/// an `height x width` row-major 0/1 mask, the union of the polygons.
pub fn polygons_to_mask(polygons: &[Vec<f64>], height: u32, width: u32) -> Result<Vec<u8>, MaskError> {
    for (index, poly) in polygons.iter().enumerate() {
        if poly.len() < 6 {
            return Err(MaskError::ShortPolygon { index, len: poly.len() });
        }
        if poly.iter().any(|v| !v.is_finite()) {
            return Err(MaskError::NonFinite { index });
        }
    }
    if height == 0 || width == 0 {
        return Err(MaskError::Size { height, width, reason: "empty image".into() });
    }
    let rle = hotcoco::mask::fr_polys(polygons, height, width).map_err(|e| MaskError::Size {
        height,
        width,
        reason: e.to_string(),
    })?;
    // COCO run lengths are column-major; the mask is returned row-major like an image.
    let column_major = hotcoco::mask::decode(&rle);
    let (h, w) = (height as usize, width as usize);
    let mut mask = vec![0u8; h * w];
    for x in 0..w {
        for y in 0..h {
            mask[y * w + x] = column_major[x * h + y];
        }
    }
    Ok(mask)
}
