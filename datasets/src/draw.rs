//! Drawing detection results onto images, for `nextdet infer` and `nextdet test --show-dir`.
//!
//! This follows what mmdetection's `show_result` produces: every instance mask is blended at
//! alpha 0.5 in its class color, then every box gets a 2-pixel outline and a caption
//! `"name|0.87"` on a filled background above it (inside the box when the box touches the top
//! edge). Items scoring below a threshold are left out. Colors come from a fixed per-label rule, so
//! a class has the same color in every image. Text uses a small built-in 5x7 bitmap font, so no
//! font file is needed.
//!
//! The inputs are plain values ([`DrawItem`]), so this module depends on neither candle nor the
//! evaluation crate; callers convert their detections (and decode RLE masks to row-major 0/1
//! buffers) first.

use std::path::{Path, PathBuf};

use crate::image_io::RgbImage;

/// One detection to draw: a box, its class and score, and optionally its instance mask.
#[derive(Clone, Copy, Debug)]
pub struct DrawItem<'a> {
    /// Box `[x1, y1, x2, y2]` in image pixels (continuous coordinates: `[0, 0, 2, 2]` covers the
    /// 2x2 pixels at the top-left corner). May lie partly or fully outside the image; a box with a
    /// NaN coordinate is not drawn.
    pub bbox: [f32; 4],
    /// Contiguous class index; picks the color and, through `class_names`, the caption.
    pub label: usize,
    /// Confidence, shown in the caption with two decimals.
    pub score: f32,
    /// Row-major mask of the image's size, nonzero where the instance is. A mask whose length is
    /// not `width * height` is ignored (the box is still drawn).
    pub mask: Option<&'a [u8]>,
}

/// Why an image could not be written. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum DrawError {
    /// The PNG encoder or the file system failed.
    #[error("cannot write PNG {}: {source}", path.display())]
    Write {
        /// The file that was being written.
        path: PathBuf,
        /// The encoder's or operating system's error.
        #[source]
        source: image::ImageError,
    },
    /// The image is too large for the PNG format (a side over `u32::MAX`).
    #[error("cannot write PNG {}: image of {width}x{height} pixels is too large", path.display())]
    TooLarge {
        /// The file that was being written.
        path: PathBuf,
        /// Image width.
        width: usize,
        /// Image height.
        height: usize,
    },
}

/// Outline thickness of boxes, in pixels.
pub const BOX_THICKNESS: usize = 2;

/// Width of a glyph of the built-in font at scale 1, in pixels.
pub const GLYPH_WIDTH: usize = 5;

/// Height of a glyph of the built-in font at scale 1, in pixels.
pub const GLYPH_HEIGHT: usize = 7;

/// Horizontal distance between the left edges of consecutive glyphs at scale 1 (one blank
/// column between glyphs).
pub const GLYPH_ADVANCE: usize = GLYPH_WIDTH + 1;

/// Blank margin around caption text, inside its background, at scale 1.
const CAPTION_PAD: usize = 2;

/// Images whose shorter side is at least this many pixels get captions at scale 2.
const LARGE_SHORT_SIDE: usize = 600;

/// Draws `items` onto a copy of `image`, mmdetection `show_result`-style.
///
/// Items with `score < score_thr` (or a NaN score) are skipped. All masks are blended first, then
/// boxes and captions are drawn in item order, so a caption is never covered by a later mask. The
/// caption is `"{name}|{score:.2}"`, with `name` taken from `class_names[label]`, or the label
/// number when `label` is out of range. Captions are drawn at scale 2 when the image's shorter side
/// is at least 600 pixels.
pub fn draw_detections(image: &RgbImage, items: &[DrawItem], class_names: &[String], score_thr: f32) -> RgbImage {
    let mut out = image.clone();
    let shown: Vec<&DrawItem> = items.iter().filter(|it| it.score >= score_thr).collect();
    for item in &shown {
        if let Some(mask) = item.mask {
            blend_mask(&mut out, mask, class_color(item.label), 0.5);
        }
    }
    let scale = if out.width().min(out.height()) >= LARGE_SHORT_SIDE { 2 } else { 1 };
    for item in &shown {
        if item.bbox.iter().any(|v| v.is_nan()) {
            continue;
        }
        let color = class_color(item.label);
        draw_rect(&mut out, item.bbox, color, BOX_THICKNESS);
        let name = class_names.get(item.label).cloned().unwrap_or_else(|| item.label.to_string());
        let caption = format!("{name}|{:.2}", item.score);
        draw_caption(&mut out, item.bbox, &caption, color, scale);
    }
    out
}

/// The color of class `label`: stable across images and runs, and distinct between nearby labels.
///
/// Hues step by the golden ratio around the color wheel, so consecutive labels land far apart;
/// saturation and value alternate between two levels so labels whose hues come close still
/// differ. Colors are mid-dark so that white caption text stays readable on them.
pub fn class_color(label: usize) -> [u8; 3] {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    let hue = (0.1 + label as f64 * GOLDEN).fract();
    let saturation = if label.is_multiple_of(2) { 0.85 } else { 0.65 };
    let value = if (label / 2).is_multiple_of(2) { 0.85 } else { 0.7 };
    hsv_to_rgb(hue, saturation, value)
}

/// Converts hue (turns, `0..1`), saturation and value (`0..1`) to 8-bit RGB.
fn hsv_to_rgb(h: f64, s: f64, v: f64) -> [u8; 3] {
    let h6 = h * 6.0;
    let sector = h6.floor() as i64 % 6;
    let f = h6 - h6.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match sector {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [r, g, b].map(|c| (c * 255.0).round().clamp(0.0, 255.0) as u8)
}

/// Blends `color` into the pixels where `mask` (row-major, the image's size) is nonzero:
/// `new = floor(old * (1 - alpha) + color * alpha)`, as mmdetection's uint8 cast does. A mask of
/// the wrong length is ignored.
pub fn blend_mask(image: &mut RgbImage, mask: &[u8], color: [u8; 3], alpha: f32) {
    if mask.len() != image.width() * image.height() {
        return;
    }
    let alpha = alpha.clamp(0.0, 1.0);
    for (px, &m) in image.as_raw_mut().chunks_exact_mut(3).zip(mask) {
        if m != 0 {
            for (c, &k) in px.iter_mut().zip(&color) {
                *c = (*c as f32 * (1.0 - alpha) + k as f32 * alpha).floor().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// The pixel rectangle a continuous box `[x1, y1, x2, y2]` covers, as inclusive integer corners
/// `(left, top, right, bottom)`: from `floor(x1)` to `ceil(x2) - 1`, at least one pixel wide and
/// tall. `None` for a NaN coordinate. Infinite coordinates saturate.
fn pixel_rect(bbox: [f32; 4]) -> Option<(i64, i64, i64, i64)> {
    if bbox.iter().any(|v| v.is_nan()) {
        return None;
    }
    let (x1, x2) = (bbox[0].min(bbox[2]), bbox[0].max(bbox[2]));
    let (y1, y2) = (bbox[1].min(bbox[3]), bbox[1].max(bbox[3]));
    let (l, t) = (x1.floor() as i64, y1.floor() as i64);
    let r = (x2.ceil() as i64).saturating_sub(1).max(l);
    let b = (y2.ceil() as i64).saturating_sub(1).max(t);
    Some((l, t, r, b))
}

/// Sets every pixel of the inclusive integer rectangle `(l, t, r, b)` that lies in the image.
fn fill_pixels(image: &mut RgbImage, (l, t, r, b): (i64, i64, i64, i64), color: [u8; 3]) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (l, t, r, b) = (l.max(0), t.max(0), r.min(w - 1), b.min(h - 1));
    if l > r || t > b {
        return;
    }
    let width = image.width();
    let data = image.as_raw_mut();
    for y in t as usize..=b as usize {
        let row = &mut data[(y * width + l as usize) * 3..(y * width + r as usize + 1) * 3];
        for px in row.chunks_exact_mut(3) {
            px.copy_from_slice(&color);
        }
    }
}

/// Draws the outline of box `[x1, y1, x2, y2]` (continuous pixel coordinates) in `color`, as a
/// band `thickness` pixels wide along the inside of the box's edges. The part outside the image
/// is clipped; a box with a NaN coordinate draws nothing. Pixels more than `thickness` pixels in
/// from every edge are left unchanged.
pub fn draw_rect(image: &mut RgbImage, bbox: [f32; 4], color: [u8; 3], thickness: usize) {
    let Some((l, t, r, b)) = pixel_rect(bbox) else { return };
    let k = (thickness.max(1) as i64).saturating_sub(1);
    fill_pixels(image, (l, t, r, t.saturating_add(k).min(b)), color);
    fill_pixels(image, (l, b.saturating_sub(k).max(t), r, b), color);
    fill_pixels(image, (l, t, l.saturating_add(k).min(r), b), color);
    fill_pixels(image, (r.saturating_sub(k).max(l), t, r, b), color);
}

/// Fills box `[x1, y1, x2, y2]` (continuous pixel coordinates) with `color`, clipped to the
/// image; a box with a NaN coordinate draws nothing.
pub fn fill_rect(image: &mut RgbImage, bbox: [f32; 4], color: [u8; 3]) {
    if let Some(rect) = pixel_rect(bbox) {
        fill_pixels(image, rect, color);
    }
}

/// Size `(width, height)` in pixels of `text` drawn by [`draw_text`] at `scale` (one line; the
/// last glyph's trailing blank column is not counted).
pub fn text_size(text: &str, scale: usize) -> (usize, usize) {
    let n = text.chars().count();
    let width = if n == 0 { 0 } else { (n * GLYPH_ADVANCE - 1) * scale };
    (width, GLYPH_HEIGHT * scale)
}

/// Draws `text` on one line with its top-left corner at `(x, y)` (may be negative; clipped to the
/// image), each font pixel as a `scale` x `scale` square in `color`. Only the glyphs' set pixels
/// are painted; the background is left as it is. Characters the font lacks are drawn as a box.
pub fn draw_text(image: &mut RgbImage, x: i64, y: i64, text: &str, color: [u8; 3], scale: usize) {
    let s = scale.max(1) as i64;
    for (i, ch) in text.chars().enumerate() {
        let gx = x.saturating_add((i * GLYPH_ADVANCE) as i64 * s);
        for (row, bits) in glyph(ch).iter().enumerate() {
            for col in 0..GLYPH_WIDTH {
                if (bits >> (GLYPH_WIDTH - 1 - col)) & 1 == 1 {
                    let px = gx.saturating_add(col as i64 * s);
                    let py = y.saturating_add(row as i64 * s);
                    fill_pixels(image, (px, py, px.saturating_add(s - 1), py.saturating_add(s - 1)), color);
                }
            }
        }
    }
}

/// Draws `caption` in white on a filled `color` background, placed on top of the box's top-left
/// corner; inside the box when there is no room above it. Horizontally the background is kept
/// inside the image where it fits. Nothing is drawn for a box that lies wholly outside the image.
fn draw_caption(image: &mut RgbImage, bbox: [f32; 4], caption: &str, color: [u8; 3], scale: usize) {
    let Some((l, t, r, b)) = pixel_rect(bbox) else { return };
    let (w, h) = (image.width() as i64, image.height() as i64);
    if r < 0 || b < 0 || l >= w || t >= h {
        return;
    }
    let (tw, th) = text_size(caption, scale);
    let pad = CAPTION_PAD * scale;
    let (bw, bh) = ((tw + 2 * pad) as i64, (th + 2 * pad) as i64);
    let left = l.min(w - bw).max(0);
    let top = if t.saturating_sub(bh) >= 0 { t - bh } else { t.clamp(0, (h - bh).max(0)) };
    fill_pixels(image, (left, top, left + bw - 1, top + bh - 1), color);
    draw_text(image, left + pad as i64, top + pad as i64, caption, [255, 255, 255], scale);
}

/// Writes `image` as an 8-bit RGB PNG file at `path`.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<(), DrawError> {
    let too_large = || DrawError::TooLarge { path: path.to_path_buf(), width: image.width(), height: image.height() };
    let w = u32::try_from(image.width()).map_err(|_| too_large())?;
    let h = u32::try_from(image.height()).map_err(|_| too_large())?;
    image::save_buffer_with_format(path, image.as_raw(), w, h, image::ExtendedColorType::Rgb8, image::ImageFormat::Png)
        .map_err(|source| DrawError::Write { path: path.to_path_buf(), source })
}

/// The 5x7 bitmap of `ch`: seven rows, top first; in each row bit 4 is the leftmost column.
/// Printable ASCII (space to `~`) has glyphs; anything else gets [`UNKNOWN_GLYPH`], a hollow box.
pub fn glyph(ch: char) -> [u8; 7] {
    let code = ch as u32;
    if (0x20..=0x7e).contains(&code) {
        FONT[(code - 0x20) as usize]
    } else {
        UNKNOWN_GLYPH
    }
}

/// The glyph drawn for characters outside printable ASCII: a hollow box.
pub const UNKNOWN_GLYPH: [u8; 7] = [0b11111, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11111];

/// Glyphs for ASCII 0x20 (space) to 0x7e (`~`), in code order.
#[rustfmt::skip]
const FONT: [[u8; 7]; 95] = [
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000], // ' '
    [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00100], // !
    [0b01010, 0b01010, 0b01010, 0b00000, 0b00000, 0b00000, 0b00000], // "
    [0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010], // #
    [0b00100, 0b01111, 0b10100, 0b01110, 0b00101, 0b11110, 0b00100], // $
    [0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011], // %
    [0b01100, 0b10010, 0b10100, 0b01000, 0b10101, 0b10010, 0b01101], // &
    [0b00100, 0b00100, 0b01000, 0b00000, 0b00000, 0b00000, 0b00000], // '
    [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010], // (
    [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000], // )
    [0b00000, 0b00100, 0b10101, 0b01110, 0b10101, 0b00100, 0b00000], // *
    [0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000], // +
    [0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b00100, 0b01000], // ,
    [0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000], // -
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100], // .
    [0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000], // /
    [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110], // 0
    [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110], // 1
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111], // 2
    [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110], // 3
    [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010], // 4
    [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110], // 5
    [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110], // 6
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000], // 7
    [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110], // 8
    [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100], // 9
    [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000], // :
    [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b00100, 0b01000], // ;
    [0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010], // <
    [0b00000, 0b00000, 0b11111, 0b00000, 0b11111, 0b00000, 0b00000], // =
    [0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000], // >
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100], // ?
    [0b01110, 0b10001, 0b00001, 0b01101, 0b10101, 0b10101, 0b01110], // @
    [0b01110, 0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001], // A
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110], // B
    [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110], // C
    [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100], // D
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111], // E
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000], // F
    [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111], // G
    [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001], // H
    [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110], // I
    [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100], // J
    [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001], // K
    [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111], // L
    [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001], // M
    [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001], // N
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110], // O
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000], // P
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101], // Q
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001], // R
    [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110], // S
    [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100], // T
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110], // U
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100], // V
    [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010], // W
    [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001], // X
    [0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100], // Y
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111], // Z
    [0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110], // [
    [0b00000, 0b10000, 0b01000, 0b00100, 0b00010, 0b00001, 0b00000], // backslash
    [0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110], // ]
    [0b00100, 0b01010, 0b10001, 0b00000, 0b00000, 0b00000, 0b00000], // ^
    [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111], // _
    [0b01000, 0b00100, 0b00010, 0b00000, 0b00000, 0b00000, 0b00000], // `
    [0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111], // a
    [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110], // b
    [0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110], // c
    [0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111], // d
    [0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110], // e
    [0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000], // f
    [0b00000, 0b01111, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110], // g
    [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001], // h
    [0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110], // i
    [0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b10010, 0b01100], // j
    [0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010], // k
    [0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110], // l
    [0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001], // m
    [0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001], // n
    [0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110], // o
    [0b00000, 0b00000, 0b11110, 0b10001, 0b11110, 0b10000, 0b10000], // p
    [0b00000, 0b00000, 0b01101, 0b10011, 0b01111, 0b00001, 0b00001], // q
    [0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000], // r
    [0b00000, 0b00000, 0b01110, 0b10000, 0b01110, 0b00001, 0b11110], // s
    [0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110], // t
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101], // u
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100], // v
    [0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010], // w
    [0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001], // x
    [0b00000, 0b00000, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110], // y
    [0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111], // z
    [0b00010, 0b00100, 0b00100, 0b01000, 0b00100, 0b00100, 0b00010], // {
    [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100], // |
    [0b01000, 0b00100, 0b00100, 0b00010, 0b00100, 0b00100, 0b01000], // }
    [0b00000, 0b00000, 0b01000, 0b10101, 0b00010, 0b00000, 0b00000], // ~
];
