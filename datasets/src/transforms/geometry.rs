//! The geometric primitives of the detection transforms, with mmcv's and OpenCV's arithmetic.
//!
//! - [`rescale_size`]: mmcv's `rescale_size` for a `(long, short)` bound (keep-ratio resize).
//! - [`resize_linear`]: `cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)` on 8-bit RGB,
//!   bit-exact: half-pixel centres, 11-bit fixed-point weights computed from `f32` positions, a
//!   horizontal pass into `i32` rows, then OpenCV's vertical rounding
//!   `((b0 * (r0 >> 4)) >> 16) + ((b1 * (r1 >> 4)) >> 16) + 2) >> 2`. Horizontally, positions
//!   outside the image are clamped with zero weight on the neighbour; vertically the row indices
//!   are clamped but the weights are kept, as OpenCV does (this changes border rows by one level).
//! - [`resize_nearest`]: `cv2.INTER_NEAREST` on a [`Bitmap`]: source index
//!   `min(floor(x / (out / in)), in - 1)`, what mmdet's `BitmapMasks.rescale` uses.
//! - [`resize_sample`], [`flip_sample`], [`crop_sample`]: mmdet 2.11's `Resize`, `RandomFlip`
//!   and `RandomCrop._crop_data` on a whole [`DetSample`] with the random choices made.

use crate::image_io::RgbImage;
use crate::sample::{Bitmap, DetSample};

/// mmcv's `rescale_size((w, h), scale)` for a tuple `scale`: the largest size with the aspect
/// ratio of `w` x `h` whose long side is at most `max(scale)` and short side at most `min(scale)`.
/// Returns `(new_w, new_h, factor)` with `factor = min(long / max(w, h), short / min(w, h))` and
/// `new = int(old * factor + 0.5)`. The order of `scale`'s two values does not matter.
pub fn rescale_size(width: usize, height: usize, scale: [usize; 2]) -> (usize, usize, f64) {
    let long = scale[0].max(scale[1]) as f64;
    let short = scale[0].min(scale[1]) as f64;
    let factor = (long / width.max(height) as f64).min(short / width.min(height) as f64);
    let round = |v: usize| (v as f64 * factor + 0.5) as usize;
    (round(width), round(height), factor)
}

/// OpenCV's fixed-point scale for 8-bit linear resizing (`INTER_RESIZE_COEF_SCALE`).
const COEF_SCALE: f32 = 2048.0;

/// Per output position: the first source index and the two fixed-point weights.
fn linear_coefficients(in_size: usize, out_size: usize, clamp: bool) -> Vec<(isize, i32, i32)> {
    let scale = 1.0 / (out_size as f64 / in_size as f64);
    (0..out_size)
        .map(|d| {
            let pos = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = pos.floor() as isize;
            let mut f = pos - s as f32;
            if clamp && s < 0 {
                s = 0;
                f = 0.0;
            }
            if clamp && s >= in_size as isize - 1 {
                s = in_size as isize - 1;
                f = 0.0;
            }
            let w0 = ((1.0 - f) * COEF_SCALE).round_ties_even() as i32;
            let w1 = (f * COEF_SCALE).round_ties_even() as i32;
            (s, w0, w1)
        })
        .collect()
}

/// `cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)` on an 8-bit RGB image,
/// bit-exact (see the module docs). Same size returns a copy; an empty input or output gives a
/// zero image of the requested size.
pub fn resize_linear(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    if out_w == 0 || out_h == 0 || img.is_empty() {
        return RgbImage::zeros(out_w, out_h);
    }
    if (out_w, out_h) == (img.width(), img.height()) {
        return img.clone();
    }
    let (in_w, in_h) = (img.width(), img.height());
    let xs = linear_coefficients(in_w, out_w, true);
    let ys = linear_coefficients(in_h, out_h, false);
    let row_of = |s: isize| s.clamp(0, in_h as isize - 1) as usize;
    // Horizontal pass for every source row that the vertical pass reads.
    let first = row_of(ys[0].0);
    let last = row_of(ys[out_h - 1].0 + 1);
    let stride = out_w * 3;
    let src = img.as_raw();
    let mut rows = vec![0i32; (last - first + 1) * stride];
    for (r, out_row) in rows.chunks_exact_mut(stride).enumerate() {
        let in_row = &src[(first + r) * in_w * 3..(first + r + 1) * in_w * 3];
        for (px, &(s, w0, w1)) in out_row.chunks_exact_mut(3).zip(&xs) {
            let s = s as usize;
            let s1 = (s + 1).min(in_w - 1);
            let (p0, p1) = (&in_row[s * 3..s * 3 + 3], &in_row[s1 * 3..s1 * 3 + 3]);
            px[0] = i32::from(p0[0]) * w0 + i32::from(p1[0]) * w1;
            px[1] = i32::from(p0[1]) * w0 + i32::from(p1[1]) * w1;
            px[2] = i32::from(p0[2]) * w0 + i32::from(p1[2]) * w1;
        }
    }
    let mut out = vec![0u8; out_h * stride];
    for (out_row, &(s, b0, b1)) in out.chunks_exact_mut(stride).zip(&ys) {
        let r0 = &rows[(row_of(s) - first) * stride..][..stride];
        let r1 = &rows[(row_of(s + 1) - first) * stride..][..stride];
        for ((o, &a), &b) in out_row.iter_mut().zip(r0).zip(r1) {
            let v = (((b0 * (a >> 4)) >> 16) + ((b1 * (b >> 4)) >> 16) + 2) >> 2;
            *o = v.clamp(0, 255) as u8;
        }
    }
    RgbImage::from_raw(out_w, out_h, out).expect("buffer size matches")
}

/// Source indices of OpenCV's `INTER_NEAREST` for one axis.
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    let inv = 1.0 / (out_size as f64 / in_size as f64);
    (0..out_size).map(|x| ((x as f64 * inv).floor() as usize).min(in_size - 1)).collect()
}

/// `cv2.resize(mask, (out_w, out_h), interpolation=cv2.INTER_NEAREST)` on a [`Bitmap`], as
/// mmdet's `BitmapMasks.rescale` / `resize` do.
pub fn resize_nearest(mask: &Bitmap, out_w: usize, out_h: usize) -> Bitmap {
    if out_w == 0 || out_h == 0 || mask.width == 0 || mask.height == 0 {
        return Bitmap::zeros(out_w, out_h);
    }
    let xs = nearest_indices(mask.width, out_w);
    let ys = nearest_indices(mask.height, out_h);
    let mut data = vec![0u8; out_w * out_h];
    for (y, &sy) in ys.iter().enumerate() {
        if y > 0 && ys[y - 1] == sy {
            // Upscaling repeats source rows: copy the previous output row.
            data.copy_within((y - 1) * out_w..y * out_w, y * out_w);
            continue;
        }
        let row = &mask.data[sy * mask.width..(sy + 1) * mask.width];
        for (d, &sx) in data[y * out_w..(y + 1) * out_w].iter_mut().zip(&xs) {
            *d = row[sx];
        }
    }
    Bitmap { width: out_w, height: out_h, data }
}

/// Scales boxes by `(sx, sy)` in `f32` and clips them to `[0, w] x [0, h]`, as mmdet's
/// `Resize._resize_bboxes` with `bbox_clip_border=True`.
fn scale_boxes(boxes: &mut [[f32; 4]], sx: f32, sy: f32, w: usize, h: usize) {
    for b in boxes {
        *b = [
            (b[0] * sx).clamp(0.0, w as f32),
            (b[1] * sy).clamp(0.0, h as f32),
            (b[2] * sx).clamp(0.0, w as f32),
            (b[3] * sy).clamp(0.0, h as f32),
        ];
    }
}

/// mmdet's `Resize` with a chosen scale. With `keep_ratio`, the image is rescaled to
/// [`rescale_size`] of `scale` (`(long, short)` bound in any order); otherwise it is warped to
/// `scale = (w, h)`. Image: [`resize_linear`]; masks: [`resize_nearest`] to the same size; boxes
/// and ignore boxes scaled by `new_w / w`, `new_h / h` and clipped. The meta's `img_size` and
/// `pad_size` become the new size and `scale_factor` this resize's factors (mmdet keeps only the
/// last resize's factors, also after a crop).
pub fn resize_sample(mut s: DetSample, scale: [usize; 2], keep_ratio: bool) -> DetSample {
    let (w, h) = (s.image.width(), s.image.height());
    let (nw, nh) = if keep_ratio {
        let (nw, nh, _) = rescale_size(w, h, scale);
        (nw, nh)
    } else {
        (scale[0], scale[1])
    };
    let sx = (nw as f64 / w as f64) as f32;
    let sy = (nh as f64 / h as f64) as f32;
    s.image = resize_linear(&s.image, nw, nh);
    for m in &mut s.masks {
        *m = resize_nearest(m, nw, nh);
    }
    scale_boxes(&mut s.boxes, sx, sy, nw, nh);
    scale_boxes(&mut s.ignore_boxes, sx, sy, nw, nh);
    s.meta.img_size = (nh, nw);
    s.meta.pad_size = (nh, nw);
    s.meta.scale_factor = [sx, sy];
    s
}

/// mmdet's horizontal `RandomFlip` with the flip chosen: mirrors the image and the masks, maps
/// boxes and ignore boxes to `[W - x2, y1, W - x1, y2]` (no +1), sets `meta.flipped`.
pub fn flip_sample(mut s: DetSample) -> DetSample {
    let w = s.image.width();
    for row in s.image.as_raw_mut().chunks_exact_mut(w * 3) {
        let (mut i, mut j) = (0, w);
        while i + 1 < j {
            j -= 1;
            for c in 0..3 {
                row.swap(i * 3 + c, j * 3 + c);
            }
            i += 1;
        }
    }
    for m in &mut s.masks {
        for row in m.data.chunks_exact_mut(m.width.max(1)) {
            row.reverse();
        }
    }
    let wf = w as f32;
    for b in s.boxes.iter_mut().chain(s.ignore_boxes.iter_mut()) {
        *b = [wf - b[2], b[1], wf - b[0], b[3]];
    }
    s.meta.flipped = !s.meta.flipped;
    s
}

/// Crops boxes by the offset, clips them to the crop and returns which ones keep an area.
fn crop_boxes(boxes: &[[f32; 4]], x: usize, y: usize, w: usize, h: usize) -> (Vec<[f32; 4]>, Vec<bool>) {
    let (ox, oy, wf, hf) = (x as f32, y as f32, w as f32, h as f32);
    let cropped: Vec<[f32; 4]> = boxes
        .iter()
        .map(|b| {
            [
                (b[0] - ox).clamp(0.0, wf),
                (b[1] - oy).clamp(0.0, hf),
                (b[2] - ox).clamp(0.0, wf),
                (b[3] - oy).clamp(0.0, hf),
            ]
        })
        .collect();
    let valid = cropped.iter().map(|b| b[2] > b[0] && b[3] > b[1]).collect();
    (cropped, valid)
}

/// mmdet 2.11's `RandomCrop._crop_data` with the window chosen: keeps the `w` x `h` window at
/// `(x, y)` (which must lie inside the image), shifts and clips boxes and ignore boxes, drops
/// those left without area (with their labels and masks), and crops the kept masks. Returns the
/// sample and whether any ground-truth box survived (mmdet rejects the sample when none did and
/// `allow_negative_crop` is false). `None` if the window is not inside the image.
pub fn crop_sample(mut s: DetSample, x: usize, y: usize, w: usize, h: usize) -> Option<(DetSample, bool)> {
    let image = s.image.crop(x, y, w, h)?;
    let (boxes, valid) = crop_boxes(&s.boxes, x, y, w, h);
    let any_valid = valid.iter().any(|&v| v);
    let has_masks = !s.masks.is_empty();
    let mut kept_boxes = Vec::new();
    let mut kept_labels = Vec::new();
    let mut kept_masks = Vec::new();
    for (i, (b, ok)) in boxes.into_iter().zip(valid).enumerate() {
        if !ok {
            continue;
        }
        kept_boxes.push(b);
        if let Some(&l) = s.labels.get(i) {
            kept_labels.push(l);
        }
        if has_masks {
            let m = &s.masks[i];
            let mut data = Vec::with_capacity(w * h);
            for row in y..y + h {
                data.extend_from_slice(&m.data[row * m.width + x..row * m.width + x + w]);
            }
            kept_masks.push(Bitmap { width: w, height: h, data });
        }
    }
    let (ignore, ignore_valid) = crop_boxes(&s.ignore_boxes, x, y, w, h);
    s.ignore_boxes = ignore.into_iter().zip(ignore_valid).filter(|(_, v)| *v).map(|(b, _)| b).collect();
    s.image = image;
    s.boxes = kept_boxes;
    s.labels = kept_labels;
    s.masks = kept_masks;
    s.meta.img_size = (h, w);
    s.meta.pad_size = (h, w);
    Some((s, any_valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_size_examples() {
        assert_eq!(rescale_size(640, 480, [1333, 800]), (1067, 800, 800.0 / 480.0));
        assert_eq!(rescale_size(480, 640, [800, 1333]), (800, 1067, 800.0 / 480.0));
        assert_eq!(rescale_size(2000, 100, [1333, 800]).0, 1333);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_raw(5, 3, [7u8, 130, 255].repeat(15)).unwrap();
        for (w, h) in [(11, 7), (2, 1), (5, 9), (13, 3)] {
            assert_eq!(resize_linear(&img, w, h).as_raw(), [7u8, 130, 255].repeat(w * h).as_slice());
        }
    }
}
