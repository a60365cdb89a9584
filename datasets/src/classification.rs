//! Evaluation preprocessing for ImageNet classifiers, as ConvNeXt's `datasets.build_transform`
//! (and timm's `transforms_factory`) do it with torchvision on PIL images.
//!
//! For `input_size < 384`:
//! `Resize(int(input_size / crop_pct), BICUBIC)` (short side, aspect ratio kept) then
//! `CenterCrop(input_size)`. For `input_size >= 384`: `Resize((input_size, input_size))`, a warp
//! with no crop. Then `ToTensor()` and `Normalize(mean, std)`.
//!
//! One difference from ConvNeXt's code: it skips resizing altogether when `input_size <= 32`
//! (its CIFAR path); [`EvalTransform`] always resizes and crops below 384.

use serde::Deserialize;

use crate::image_io::RgbImage;
use crate::resize::{resize_rgb8, Filter};

/// ImageNet channel means (`IMAGENET_DEFAULT_MEAN`), on the 0..1 scale.
pub const IMAGENET_DEFAULT_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (`IMAGENET_DEFAULT_STD`), on the 0..1 scale.
pub const IMAGENET_DEFAULT_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// timm's and ConvNeXt's default centre-crop fraction, 224 / 256.
pub const DEFAULT_CROP_PCT: f64 = 0.875;
/// From this input size on, images are warped to a square instead of resized and cropped.
pub const WARP_MIN_INPUT_SIZE: usize = 384;

fn default_crop_pct() -> f64 {
    DEFAULT_CROP_PCT
}
fn default_mean() -> [f32; 3] {
    IMAGENET_DEFAULT_MEAN
}
fn default_std() -> [f32; 3] {
    IMAGENET_DEFAULT_STD
}

/// An invalid [`EvalTransform`] setting or input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    /// A configuration value is out of range; names the field.
    #[error("invalid eval transform setting `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The input image has no pixels.
    #[error("cannot transform an empty image ({width}x{height})")]
    EmptyImage {
        /// Width of the input.
        width: usize,
        /// Height of the input.
        height: usize,
    },
}

/// The classification evaluation transform: resize (and centre crop below 384), then normalize
/// into a CHW `f32` buffer. Deserializes from a config section with unknown keys rejected; every
/// field but `input_size` has the timm/ConvNeXt default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalTransform {
    /// Side of the square network input, e.g. 224 or 384.
    pub input_size: usize,
    /// Fraction of the resized short side that the centre crop keeps (used below 384 only).
    #[serde(default = "default_crop_pct")]
    pub crop_pct: f64,
    /// Resampling filter of the resize.
    #[serde(default)]
    pub interpolation: Filter,
    /// Per-channel mean subtracted after scaling to 0..1.
    #[serde(default = "default_mean")]
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    #[serde(default = "default_std")]
    pub std: [f32; 3],
}

impl EvalTransform {
    /// The transform for `input_size` with all other settings at their defaults.
    pub fn new(input_size: usize) -> Self {
        Self {
            input_size,
            crop_pct: DEFAULT_CROP_PCT,
            interpolation: Filter::Bicubic,
            mean: IMAGENET_DEFAULT_MEAN,
            std: IMAGENET_DEFAULT_STD,
        }
    }

    /// Checks the settings: `input_size > 0`, `0 < crop_pct <= 1` and finite, finite `mean`,
    /// finite non-zero `std`.
    pub fn validate(&self) -> Result<(), TransformError> {
        let bad = |field, reason: String| Err(TransformError::InvalidConfig { field, reason });
        if self.input_size == 0 {
            return bad("input_size", "must be positive".into());
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return bad("crop_pct", format!("must be in (0, 1], got {}", self.crop_pct));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return bad("mean", format!("must be finite, got {:?}", self.mean));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return bad("std", format!("must be finite and non-zero, got {:?}", self.std));
        }
        Ok(())
    }

    /// `true` when images are warped to `input_size` x `input_size` with no crop.
    pub fn warps(&self) -> bool {
        self.input_size >= WARP_MIN_INPUT_SIZE
    }

    /// The short side the image is resized to before the crop: `int(input_size / crop_pct)`.
    pub fn resize_short_side(&self) -> usize {
        (self.input_size as f64 / self.crop_pct) as usize
    }

    /// Size `(width, height)` of the resized image, before any crop, for an input of
    /// `width` x `height`.
    pub fn resized_size(&self, width: usize, height: usize) -> (usize, usize) {
        if self.warps() {
            (self.input_size, self.input_size)
        } else {
            resize_short_side_size(width, height, self.resize_short_side())
        }
    }

    /// Shape `[3, input_size, input_size]` of [`EvalTransform::apply`]'s output.
    pub fn output_shape(&self) -> [usize; 3] {
        [3, self.input_size, self.input_size]
    }

    /// Resizes and crops `img` to `input_size` x `input_size` 8-bit RGB, without normalizing.
    pub fn apply_rgb8(&self, img: &RgbImage) -> Result<RgbImage, TransformError> {
        self.validate()?;
        if img.is_empty() {
            return Err(TransformError::EmptyImage { width: img.width(), height: img.height() });
        }
        let (w, h) = self.resized_size(img.width(), img.height());
        let resized = if (w, h) == (img.width(), img.height()) {
            img.clone()
        } else {
            resize_rgb8(img, w, h, self.interpolation)
        };
        if self.warps() {
            Ok(resized)
        } else {
            Ok(center_crop(&resized, self.input_size, self.input_size))
        }
    }

    /// The full transform: resize, crop, scale to 0..1 and normalize with `mean` and `std`.
    /// Returns a CHW buffer of length `3 * input_size * input_size`.
    pub fn apply(&self, img: &RgbImage) -> Result<Vec<f32>, TransformError> {
        let out = self.apply_rgb8(img)?;
        Ok(normalize_chw(&out, self.mean, self.std))
    }
}

/// The output size `(width, height)` of torchvision's `Resize(size)` with an integer `size`:
/// the short side becomes `size` and the long side `int(size * long / short)` (truncated).
pub fn resize_short_side_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    if short == 0 {
        return (width, height);
    }
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Rounds half to even, as Python's `round`.
fn round_half_even(v: f64) -> f64 {
    v.round_ties_even()
}

/// torchvision's `CenterCrop((height, width))`: the crop's top-left corner is
/// `int(round((H - height) / 2))`, `int(round((W - width) / 2))` with Python's round-half-even;
/// an image smaller than the crop is first zero-padded, `(crop - size) // 2` before and the rest
/// after, as torchvision does.
pub fn center_crop(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    let img = if width > img.width() || height > img.height() {
        let pw = width.saturating_sub(img.width());
        let ph = height.saturating_sub(img.height());
        pad_zeros(img, pw / 2, ph / 2, pw - pw / 2, ph - ph / 2)
    } else {
        img.clone()
    };
    if img.width() == width && img.height() == height {
        return img;
    }
    let top = round_half_even((img.height() - height) as f64 / 2.0) as usize;
    let left = round_half_even((img.width() - width) as f64 / 2.0) as usize;
    img.crop(left, top, width, height).expect("crop lies inside the image")
}

fn pad_zeros(img: &RgbImage, left: usize, top: usize, right: usize, bottom: usize) -> RgbImage {
    let w = img.width() + left + right;
    let h = img.height() + top + bottom;
    let mut out = RgbImage::zeros(w, h);
    let src = img.as_raw();
    let row = img.width() * 3;
    let dst = out.as_raw_mut();
    for y in 0..img.height() {
        let d = ((y + top) * w + left) * 3;
        dst[d..d + row].copy_from_slice(&src[y * row..(y + 1) * row]);
    }
    out
}

/// `ToTensor()` then `Normalize(mean, std)`: `(v / 255 - mean[c]) / std[c]` in `f32`, laid out
/// CHW.
pub fn normalize_chw(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let plane = img.width() * img.height();
    let mut out = vec![0f32; 3 * plane];
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = (f32::from(px[0]) / 255.0 - mean[0]) / std[0];
        g[i] = (f32::from(px[1]) / 255.0 - mean[1]) / std[1];
        b[i] = (f32::from(px[2]) / 255.0 - mean[2]) / std[2];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_round() {
        for (v, r) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (3.5, 4.0),
            (12.5, 12.0),
            (13.5, 14.0),
            (2.4, 2.0),
            (2.6, 3.0),
            (0.0, 0.0),
        ] {
            assert_eq!(round_half_even(v), r, "{v}");
        }
    }

    #[test]
    fn short_side_sizes() {
        // torchvision truncates the long side.
        assert_eq!(resize_short_side_size(37, 23, 36), (57, 36));
        assert_eq!(resize_short_side_size(200, 300, 256), (256, 384));
        assert_eq!(resize_short_side_size(500, 375, 256), (341, 256));
        assert_eq!(resize_short_side_size(10, 10, 4), (4, 4));
        assert_eq!(EvalTransform::new(224).resize_short_side(), 256);
        assert_eq!(EvalTransform::new(32).resize_short_side(), 36);
    }

    #[test]
    fn crop_with_padding() {
        let img = RgbImage::from_raw(1, 1, vec![9, 9, 9]).unwrap();
        let c = center_crop(&img, 4, 3);
        assert_eq!((c.width(), c.height()), (4, 3));
        // pad left = 1, top = 1.
        assert_eq!(c.pixel(1, 1), Some([9, 9, 9]));
        assert_eq!(c.as_raw().iter().map(|&v| v as u32).sum::<u32>(), 27);
    }

    #[test]
    fn validation() {
        let mut t = EvalTransform::new(224);
        assert!(t.validate().is_ok());
        t.crop_pct = 0.0;
        assert!(matches!(t.validate(), Err(TransformError::InvalidConfig { field: "crop_pct", .. })));
        let mut t = EvalTransform::new(224);
        t.std[1] = 0.0;
        assert!(t.validate().is_err());
        assert!(EvalTransform::new(0).validate().is_err());
        let empty = RgbImage::zeros(0, 5);
        assert!(matches!(EvalTransform::new(8).apply(&empty), Err(TransformError::EmptyImage { .. })));
    }
}
