//! Batching transformed [`DetSample`]s into one normalized, padded `f32` array.
//!
//! mmdet normalizes each image (`Normalize`), pads it bottom-right with zeros to a multiple of 32
//! (`Pad`, after `Normalize`, so the padding is 0 in normalized space), and its `collate` pads
//! every image of a batch further, again with zeros, to the largest padded height and width. The
//! result here is the same `[N, 3, H, W]` array: `H` and `W` are the maxima over the batch of the
//! heights and widths rounded up to `size_divisor`.

use crate::sample::{Bitmap, DetSample, ImageMeta};
use crate::transforms::Normalization;

/// A batch ready for a detector.
#[derive(Debug, Clone)]
pub struct DetBatch {
    /// `N * 3 * H * W` values, NCHW: normalized images, zero beyond each image (bottom, right).
    pub images: Vec<f32>,
    /// `[N, 3, H, W]`.
    pub shape: [usize; 4],
    /// The samples, in batch order: boxes, labels, ignore boxes in input pixels (unchanged), masks
    /// zero-padded to `H` x `W`, `meta.pad_size` set to the size it was padded to on its own
    /// (before the batch padding), the 8-bit image as it was before normalization.
    pub samples: Vec<DetSample>,
}

impl DetBatch {
    /// The metas of the batch, in order (mmdet's `img_metas`).
    pub fn metas(&self) -> Vec<&ImageMeta> {
        self.samples.iter().map(|s| &s.meta).collect()
    }
}

/// Why a batch could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CollateError {
    /// No samples were given.
    #[error("cannot collate an empty batch")]
    Empty,
    /// `size_divisor` is zero.
    #[error("size_divisor must be positive")]
    ZeroDivisor,
    /// A sample's image is empty or a mask's size differs from its image's; names the file.
    #[error("cannot collate {file}: {reason}")]
    BadSample {
        /// The image file of the sample.
        file: String,
        /// What is wrong.
        reason: String,
    },
}

/// Normalizes and pads `samples` into a [`DetBatch`]: per pixel `(v - mean[c]) / std[c]` in
/// `f32` (channel order per `norm.to_rgb`), padded with zeros to the batch's largest height and
/// width rounded up to `size_divisor` (use 1 for no rounding). Masks are zero-padded to the same
/// size.
pub fn collate(samples: Vec<DetSample>, norm: &Normalization, size_divisor: usize) -> Result<DetBatch, CollateError> {
    if samples.is_empty() {
        return Err(CollateError::Empty);
    }
    if size_divisor == 0 {
        return Err(CollateError::ZeroDivisor);
    }
    let round = |v: usize| v.div_ceil(size_divisor) * size_divisor;
    let mut hmax = 0;
    let mut wmax = 0;
    for s in &samples {
        let (w, h) = (s.image.width(), s.image.height());
        if s.image.is_empty() {
            return Err(CollateError::BadSample {
                file: s.meta.file.display().to_string(),
                reason: format!("empty image {w}x{h}"),
            });
        }
        if let Some(m) = s.masks.iter().find(|m| (m.width, m.height) != (w, h)) {
            return Err(CollateError::BadSample {
                file: s.meta.file.display().to_string(),
                reason: format!("a mask is {}x{} but the image is {w}x{h}", m.width, m.height),
            });
        }
        hmax = hmax.max(round(h.max(s.meta.pad_size.0)));
        wmax = wmax.max(round(w.max(s.meta.pad_size.1)));
    }
    let n = samples.len();
    let plane = hmax * wmax;
    let mut images = vec![0f32; n * 3 * plane];
    // mmcv's imnormalize: subtract the mean, multiply by 1 / std (computed in f64).
    let inv: Vec<f32> = norm.std.iter().map(|&s| (1.0 / f64::from(s)) as f32).collect();
    let order = if norm.to_rgb { [0, 1, 2] } else { [2, 1, 0] };
    let mut out_samples = Vec::with_capacity(n);
    for (i, mut s) in samples.into_iter().enumerate() {
        let (w, h) = (s.image.width(), s.image.height());
        let img = s.image.as_raw();
        let base = &mut images[i * 3 * plane..(i + 1) * 3 * plane];
        for (c, &src_c) in order.iter().enumerate() {
            let (mean, inv) = (norm.mean[c], inv[c]);
            let dst = &mut base[c * plane..(c + 1) * plane];
            for y in 0..h {
                let row = &img[y * w * 3..(y + 1) * w * 3];
                for (d, px) in dst[y * wmax..y * wmax + w].iter_mut().zip(row.chunks_exact(3)) {
                    *d = (f32::from(px[src_c]) - mean) * inv;
                }
            }
        }
        s.meta.pad_size = (round(h.max(s.meta.pad_size.0)), round(w.max(s.meta.pad_size.1)));
        for m in &mut s.masks {
            *m = pad_bitmap(m, wmax, hmax);
        }
        out_samples.push(s);
    }
    Ok(DetBatch { images, shape: [n, 3, hmax, wmax], samples: out_samples })
}

/// Zero-pads a mask bottom-right to `width` x `height` (no-op if it already has that size).
fn pad_bitmap(m: &Bitmap, width: usize, height: usize) -> Bitmap {
    if (m.width, m.height) == (width, height) {
        return m.clone();
    }
    let mut out = Bitmap::zeros(width, height);
    for y in 0..m.height.min(height) {
        let w = m.width.min(width);
        out.data[y * width..y * width + w].copy_from_slice(&m.data[y * m.width..y * m.width + w]);
    }
    out
}
