//! A Pillow-compatible image resampler for 8-bit RGB.
//!
//! torchvision's `Resize` on PIL images calls `PIL.Image.resize`, so pretrained classifiers were
//! evaluated on images resampled by Pillow's algorithm. This module re-implements it:
//!
//! - Bicubic and bilinear are separable convolutions, a horizontal pass then a vertical pass
//!   (Pillow 13 runs the vertical pass first when the height shrinks much more than the width;
//!   see [`PassOrder`]). When downscaling, the filter's support is stretched by the scale factor
//!   (antialiasing). Each output pixel's weights are normalized to sum to one, converted to fixed
//!   point with 22 fractional bits, and every pass rounds and clamps its result to 8 bits, as
//!   Pillow does. A pass whose size does not change is skipped.
//! - Nearest picks, for output pixel `x`, the source pixel `floor((x + 0.5) * in / out)`, with the
//!   source position accumulated step by step in `f64` as Pillow's affine scaler does.
//!
//! The integer arithmetic is the same as Pillow's, so outputs are expected to match it exactly;
//! the parity tests allow one intensity level.

use serde::Deserialize;

use crate::image_io::RgbImage;

/// Resampling filter, named as in PIL / torchvision's `InterpolationMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Nearest neighbour (`PIL.Image.NEAREST`).
    Nearest,
    /// Triangle filter, antialiased when downscaling (`PIL.Image.BILINEAR`).
    Bilinear,
    /// Keys cubic with `a = -0.5`, antialiased when downscaling (`PIL.Image.BICUBIC`); the
    /// default, as in timm's and ConvNeXt's evaluation transforms.
    #[default]
    Bicubic,
}

impl Filter {
    /// Half-width of the filter kernel at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Nearest => 0.5,
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// The kernel's value at distance `x`.
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Nearest => {
                if x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fractional bits of the fixed-point weights (Pillow's `PRECISION_BITS` for 8-bit images).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point weights of a 1-D resampling: output sample `i` is the weighted sum of the `count`
/// input samples starting at `first`, with weights `weights[i * ksize..][..count]`.
struct Coefficients {
    ksize: usize,
    /// `(first, count)` per output sample.
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for (i, k) in weights.chunks_exact_mut(ksize).enumerate() {
        let center = (i as f64 + 0.5) * scale;
        // Truncation toward zero, as C's (int) cast, then clamping into the image.
        let first = ((center - support + 0.5) as i64).max(0) as usize;
        let last = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = last.saturating_sub(first).min(ksize);
        let mut total = 0.0;
        for (j, wj) in w[..count].iter_mut().enumerate() {
            *wj = filter.weight(((j + first) as f64 - center + 0.5) * inv);
            total += *wj;
        }
        for (kj, &wj) in k.iter_mut().zip(&w[..count]) {
            let v = if total != 0.0 { wj / total } else { wj };
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            *kj = if fixed < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
        }
        bounds.push((first, count));
    }
    Coefficients { ksize, bounds, weights }
}

/// Rounds a fixed-point accumulator (which already holds the +0.5 offset) to 8 bits.
#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over rows `row0..row0 + rows` of `src` (width `in_w`).
fn resample_horizontal(src: &[u8], in_w: usize, row0: usize, rows: usize, c: &Coefficients) -> Vec<u8> {
    let out_w = c.bounds.len();
    let mut out = vec![0u8; out_w * rows * 3];
    for (y, out_row) in out.chunks_exact_mut(out_w * 3).enumerate() {
        let in_row = &src[(row0 + y) * in_w * 3..(row0 + y + 1) * in_w * 3];
        for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
            let (first, count) = c.bounds[x];
            let k = &c.weights[x * c.ksize..x * c.ksize + count];
            let (mut r, mut g, mut b) = (HALF, HALF, HALF);
            for (s, &kj) in in_row[first * 3..(first + count) * 3].chunks_exact(3).zip(k) {
                r += i32::from(s[0]) * kj;
                g += i32::from(s[1]) * kj;
                b += i32::from(s[2]) * kj;
            }
            px[0] = clip8(r);
            px[1] = clip8(g);
            px[2] = clip8(b);
        }
    }
    out
}

/// Vertical pass; `c.bounds` index rows of `src` shifted by `-row0`.
fn resample_vertical(src: &[u8], width: usize, row0: usize, c: &Coefficients) -> Vec<u8> {
    let stride = width * 3;
    let out_h = c.bounds.len();
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i32; stride];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (first, count) = c.bounds[y];
        let k = &c.weights[y * c.ksize..y * c.ksize + count];
        acc.fill(HALF);
        for (j, &kj) in k.iter().enumerate() {
            let row = first + j - row0;
            let in_row = &src[row * stride..(row + 1) * stride];
            for (a, &s) in acc.iter_mut().zip(in_row) {
                *a += i32::from(s) * kj;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Nearest-neighbour source index for each output index, accumulated as Pillow's affine scaler.
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    let step = in_size as f64 / out_size as f64;
    let mut pos = step * 0.5;
    let mut idx = Vec::with_capacity(out_size);
    for _ in 0..out_size {
        idx.push((pos as usize).min(in_size - 1));
        pos += step;
    }
    idx
}

fn resize_nearest(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    let xs = nearest_indices(img.width(), out_w);
    let ys = nearest_indices(img.height(), out_h);
    let src = img.as_raw();
    let in_stride = img.width() * 3;
    let mut out = Vec::with_capacity(out_w * out_h * 3);
    for &sy in &ys {
        let row = &src[sy * in_stride..(sy + 1) * in_stride];
        for &sx in &xs {
            out.extend_from_slice(&row[sx * 3..sx * 3 + 3]);
        }
    }
    RgbImage::from_raw(out_w, out_h, out).expect("buffer size matches")
}

/// Which of the two separable passes runs first. The order changes results by a few levels where
/// bicubic overshoot is clamped between the passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassOrder {
    /// Pillow 13 and later: vertical first when the height shrinks by more than twice as many
    /// pixels as the width (`in_h - out_h > 0 && in_h - out_h > 2 * (in_w - out_w)`), else
    /// horizontal first.
    #[default]
    Pillow13,
    /// Pillow 12 and earlier: always horizontal first.
    HorizontalFirst,
}

/// Resizes `img` to `out_w` x `out_h` with Pillow's algorithm (`PIL.Image.resize(size, filter)`),
/// which is what torchvision's `Resize` does to PIL images. Passes run in Pillow 13's order; see
/// [`resize_rgb8_with_order`] to reproduce older Pillow releases.
///
/// If the input or the requested size is empty, the result is an image of the requested size
/// filled with zeros. Resizing to the same size returns a copy.
pub fn resize_rgb8(img: &RgbImage, out_w: usize, out_h: usize, filter: Filter) -> RgbImage {
    resize_rgb8_with_order(img, out_w, out_h, filter, PassOrder::default())
}

/// [`resize_rgb8`] with an explicit order of the horizontal and vertical passes (bicubic and
/// bilinear only; nearest has no passes).
pub fn resize_rgb8_with_order(
    img: &RgbImage,
    out_w: usize,
    out_h: usize,
    filter: Filter,
    order: PassOrder,
) -> RgbImage {
    if out_w == 0 || out_h == 0 || img.is_empty() {
        return RgbImage::zeros(out_w, out_h);
    }
    if out_w == img.width() && out_h == img.height() {
        return img.clone();
    }
    if filter == Filter::Nearest {
        return resize_nearest(img, out_w, out_h);
    }
    let (in_w, in_h) = (img.width(), img.height());
    let (need_h, need_v) = (out_w != in_w, out_h != in_h);
    let horizontal_first = match order {
        PassOrder::HorizontalFirst => true,
        PassOrder::Pillow13 => {
            let dh = in_h as i64 - out_h as i64;
            let dw = in_w as i64 - out_w as i64;
            !(dh > 0 && dh > 2 * dw)
        }
    };
    let vert = coefficients(in_h, out_h, filter);
    let data = if horizontal_first {
        if !need_h {
            resample_vertical(img.as_raw(), in_w, 0, &vert)
        } else {
            let horiz = coefficients(in_w, out_w, filter);
            // Only the source rows that the vertical pass reads go through the horizontal pass.
            let row0 = vert.bounds[0].0;
            let (last_first, last_count) = vert.bounds[out_h - 1];
            let rows = last_first + last_count - row0;
            let tmp = resample_horizontal(img.as_raw(), in_w, row0, rows, &horiz);
            if need_v {
                resample_vertical(&tmp, out_w, row0, &vert)
            } else {
                tmp
            }
        }
    } else {
        // Only reached when the height shrinks, so the vertical pass is always needed.
        let tmp = resample_vertical(img.as_raw(), in_w, 0, &vert);
        if need_h {
            resample_horizontal(&tmp, in_w, 0, out_h, &coefficients(in_w, out_w, filter))
        } else {
            tmp
        }
    };
    RgbImage::from_raw(out_w, out_h, data).expect("buffer size matches")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(37, 17), (23, 64), (300, 97), (5, 1), (1, 7)] {
            for f in [Filter::Bicubic, Filter::Bilinear] {
                let c = coefficients(i, o, f);
                for (x, &(first, count)) in c.bounds.iter().enumerate() {
                    assert!(count >= 1 && first + count <= i);
                    let s: i64 = c.weights[x * c.ksize..x * c.ksize + count].iter().map(|&v| i64::from(v)).sum();
                    assert!((s - (1 << PRECISION_BITS)).abs() <= count as i64, "{s}");
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_raw(7, 5, [10u8, 200, 255].repeat(35)).unwrap();
        for f in [Filter::Bicubic, Filter::Bilinear, Filter::Nearest] {
            for (w, h) in [(3, 2), (20, 11), (7, 9), (1, 1)] {
                let out = resize_rgb8(&img, w, h, f);
                assert_eq!(out.as_raw(), [10u8, 200, 255].repeat(w * h).as_slice());
            }
        }
    }

    #[test]
    fn empty_sizes() {
        let img = RgbImage::zeros(4, 4);
        assert!(resize_rgb8(&img, 0, 3, Filter::Bicubic).is_empty());
        let e = RgbImage::zeros(0, 3);
        assert_eq!(resize_rgb8(&e, 2, 2, Filter::Bicubic).as_raw(), &[0u8; 12]);
    }
}
