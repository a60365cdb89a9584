//! The ImageNet training transform of ConvNeXt: timm's `create_transform(is_training=True)` with
//! the settings of ConvNeXt's `datasets.build_transform` (random resized crop, horizontal flip,
//! RandAugment `rand-m9-mstd0.5-inc1`, bicubic, random erasing 0.25 in pixel mode), on 8-bit RGB
//! with Pillow-exact resampling.
//!
//! Steps, in timm's order:
//! 1. `RandomResizedCropAndInterpolation`: up to 10 attempts at an area fraction uniform in
//!    `scale` and a log-uniform aspect ratio in `ratio`, `w = round(sqrt(area * r))`,
//!    `h = round(sqrt(area / r))` (Python's round), kept if it fits, at a uniform position;
//!    otherwise a central crop with the aspect ratio clamped into `ratio`. The crop is resized to
//!    `input_size` with Pillow's resampler ([`resize_rgb8`]).
//! 2. Horizontal flip with probability `hflip`.
//! 3. RandAugment ([`crate::rand_augment`]) if `auto_augment` is set. timm then *disables* colour
//!    jitter (unless the policy names `3a`), so `color_jitter` only acts without `auto_augment`;
//!    it is then torchvision's `ColorJitter(b, b, b)`: brightness, contrast and saturation in a
//!    random order, each with a factor uniform in `[max(0, 1 - b), 1 + b]`.
//! 4. `ToTensor` + `Normalize(mean, std)` into CHW `f32`.
//! 5. timm's `RandomErasing` on the normalized tensor with probability `reprob`: `recount` boxes
//!    (count uniform in `1..=recount`), each with up to 10 attempts at an area fraction uniform in
//!    `[0.02, 1/3] / count` and a log-uniform aspect in `[0.3, 1/0.3]`, kept when strictly smaller
//!    than the image; filled with standard normal noise per pixel (`pixel`), per channel (`rand`)
//!    or zeros (`const`).
//!
//! Random draws use a [`StdRng`], so streams differ from Python's; distributions are the same.

use rand::rngs::StdRng;
use rand::Rng;
use serde::Deserialize;

use crate::classification::{normalize_chw, TransformError, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD};
use crate::image_io::RgbImage;
use crate::rand_augment::{enhance_brightness, enhance_color, enhance_contrast, standard_normal, RandAugment};
use crate::resize::{resize_rgb8, Filter};

/// How [`random_erasing`] fills an erased box (timm's `re_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EraseMode {
    /// Zeros (the normalized mean colour).
    Const,
    /// One standard normal value per channel.
    Rand,
    /// One standard normal value per pixel and channel (ConvNeXt's setting).
    #[default]
    Pixel,
}

fn d_input_size() -> usize {
    224
}
fn d_scale() -> [f64; 2] {
    [0.08, 1.0]
}
fn d_ratio() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}
fn d_hflip() -> f64 {
    0.5
}
fn d_auto_augment() -> Option<String> {
    Some("rand-m9-mstd0.5-inc1".into())
}
fn d_color_jitter() -> Option<f64> {
    Some(0.4)
}
fn d_reprob() -> f64 {
    0.25
}
fn d_recount() -> usize {
    1
}
fn d_mean() -> [f32; 3] {
    IMAGENET_DEFAULT_MEAN
}
fn d_std() -> [f32; 3] {
    IMAGENET_DEFAULT_STD
}

/// Settings of [`ClsTrainTransform`], defaulting to ConvNeXt's ImageNet recipe. Deserializes
/// with unknown keys rejected; every field may be omitted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClsTrainTransformConfig {
    /// Side of the square output (224).
    #[serde(default = "d_input_size")]
    pub input_size: usize,
    /// Range of the crop's area as a fraction of the image's (0.08, 1).
    #[serde(default = "d_scale")]
    pub scale: [f64; 2],
    /// Range of the crop's aspect ratio w/h (3/4, 4/3), sampled log-uniformly.
    #[serde(default = "d_ratio")]
    pub ratio: [f64; 2],
    /// Probability of a horizontal flip (0.5).
    #[serde(default = "d_hflip")]
    pub hflip: f64,
    /// RandAugment policy (`rand-m9-mstd0.5-inc1`); `null` for none.
    #[serde(default = "d_auto_augment")]
    pub auto_augment: Option<String>,
    /// Colour jitter strength (0.4). As in timm it is ignored while `auto_augment` is set.
    #[serde(default = "d_color_jitter")]
    pub color_jitter: Option<f64>,
    /// Resampling filter of the crop resize and of RandAugment's geometric ops (bicubic).
    #[serde(default)]
    pub interpolation: Filter,
    /// Probability of random erasing (0.25).
    #[serde(default = "d_reprob")]
    pub reprob: f64,
    /// Fill of erased boxes (`pixel`).
    #[serde(default)]
    pub remode: EraseMode,
    /// Largest number of erased boxes per image (1).
    #[serde(default = "d_recount")]
    pub recount: usize,
    /// Normalization mean on the 0..1 scale (ImageNet's).
    #[serde(default = "d_mean")]
    pub mean: [f32; 3],
    /// Normalization standard deviation on the 0..1 scale (ImageNet's).
    #[serde(default = "d_std")]
    pub std: [f32; 3],
}

impl Default for ClsTrainTransformConfig {
    fn default() -> Self {
        Self {
            input_size: d_input_size(),
            scale: d_scale(),
            ratio: d_ratio(),
            hflip: d_hflip(),
            auto_augment: d_auto_augment(),
            color_jitter: d_color_jitter(),
            interpolation: Filter::Bicubic,
            reprob: d_reprob(),
            remode: EraseMode::Pixel,
            recount: d_recount(),
            mean: d_mean(),
            std: d_std(),
        }
    }
}

/// A crop rectangle in pixels: `top`, `left`, `height`, `width` (torchvision's `i, j, h, w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Number of rows.
    pub height: usize,
    /// Number of columns.
    pub width: usize,
}

/// The training transform; build it with [`ClsTrainTransform::new`].
#[derive(Debug, Clone)]
pub struct ClsTrainTransform {
    config: ClsTrainTransformConfig,
    rand_augment: Option<RandAugment>,
    /// Colour jitter strength in effect (none while RandAugment is on, as in timm).
    color_jitter: Option<f64>,
}

fn bad(field: &'static str, reason: String) -> TransformError {
    TransformError::InvalidConfig { field, reason }
}

fn is_prob(p: f64) -> bool {
    (0.0..=1.0).contains(&p)
}

impl ClsTrainTransform {
    /// Validates `config` and parses its RandAugment policy. The RandAugment fill colour is the
    /// mean in 0..255, `min(255, round(255 * mean))`, as timm's `img_mean` hparam.
    pub fn new(config: ClsTrainTransformConfig) -> Result<Self, TransformError> {
        let c = &config;
        if c.input_size == 0 {
            return Err(bad("input_size", "must be positive".into()));
        }
        if !(c.scale[0] > 0.0 && c.scale[0] <= c.scale[1] && c.scale[1].is_finite()) {
            return Err(bad("scale", format!("must be 0 < min <= max, got {:?}", c.scale)));
        }
        if !(c.ratio[0] > 0.0 && c.ratio[0] <= c.ratio[1] && c.ratio[1].is_finite()) {
            return Err(bad("ratio", format!("must be 0 < min <= max, got {:?}", c.ratio)));
        }
        if !is_prob(c.hflip) {
            return Err(bad("hflip", format!("must be a probability, got {}", c.hflip)));
        }
        if !is_prob(c.reprob) {
            return Err(bad("reprob", format!("must be a probability, got {}", c.reprob)));
        }
        if c.recount == 0 {
            return Err(bad("recount", "must be at least 1".into()));
        }
        if let Some(j) = c.color_jitter {
            if !(j >= 0.0 && j.is_finite()) {
                return Err(bad("color_jitter", format!("must be >= 0, got {j}")));
            }
        }
        if c.mean.iter().any(|m| !m.is_finite()) {
            return Err(bad("mean", format!("must be finite, got {:?}", c.mean)));
        }
        if c.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(bad("std", format!("must be finite and non-zero, got {:?}", c.std)));
        }
        if c.interpolation != Filter::Bicubic && c.auto_augment.is_some() {
            return Err(bad("interpolation", "RandAugment's geometric ops are implemented for bicubic only".into()));
        }
        let fill = c.mean.map(|m| (255.0 * f64::from(m)).round_ties_even().min(255.0) as u8);
        let rand_augment = match &c.auto_augment {
            None => None,
            Some(spec) => Some(RandAugment::from_spec(spec, fill).map_err(|e| bad("auto_augment", e.to_string()))?),
        };
        let keeps_jitter = c.auto_augment.as_ref().is_none_or(|s| s.contains("3a"));
        let color_jitter = if keeps_jitter { c.color_jitter.filter(|&j| j > 0.0) } else { None };
        Ok(Self { config, rand_augment, color_jitter })
    }

    /// The settings.
    pub fn config(&self) -> &ClsTrainTransformConfig {
        &self.config
    }

    /// The RandAugment policy in use, if any.
    pub fn rand_augment(&self) -> Option<&RandAugment> {
        self.rand_augment.as_ref()
    }

    /// The colour jitter strength in effect: `None` while RandAugment is on (timm disables it),
    /// else `color_jitter` when positive.
    pub fn color_jitter(&self) -> Option<f64> {
        self.color_jitter
    }

    /// Shape `[3, input_size, input_size]` of the output.
    pub fn output_shape(&self) -> [usize; 3] {
        [3, self.config.input_size, self.config.input_size]
    }

    /// Steps 1 to 3 (crop and resize, flip, RandAugment or colour jitter) on 8-bit RGB.
    pub fn apply_rgb8(&self, img: &RgbImage, rng: &mut StdRng) -> Result<RgbImage, TransformError> {
        if img.is_empty() {
            return Err(TransformError::EmptyImage { width: img.width(), height: img.height() });
        }
        let c = &self.config;
        let crop = random_resized_crop_params(img.width(), img.height(), c.scale, c.ratio, rng);
        let mut out = resized_crop(img, crop, c.input_size, c.input_size, c.interpolation);
        if c.hflip > 0.0 && rng.gen::<f64>() < c.hflip {
            out = hflip(&out);
        }
        if let Some(ra) = &self.rand_augment {
            out = ra.apply(&out, rng);
        }
        if let Some(j) = self.color_jitter {
            out = color_jitter(&out, j, rng);
        }
        Ok(out)
    }

    /// The whole transform: a CHW `f32` buffer of length `3 * input_size * input_size`.
    pub fn apply(&self, img: &RgbImage, rng: &mut StdRng) -> Result<Vec<f32>, TransformError> {
        let out = self.apply_rgb8(img, rng)?;
        let mut chw = normalize_chw(&out, self.config.mean, self.config.std);
        let s = self.config.input_size;
        random_erasing(&mut chw, [3, s, s], self.config.reprob, self.config.remode, self.config.recount, rng);
        Ok(chw)
    }
}

/// timm's `RandomResizedCropAndInterpolation.get_params` for an image of `width` x `height`.
///
/// One guard beyond timm: a sampled crop must be at least one pixel wide and high (timm would
/// hand Pillow an empty crop on images of a few pixels); torchvision's own version has the same
/// guard.
pub fn random_resized_crop_params(
    width: usize,
    height: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut StdRng,
) -> CropBox {
    let area = (width * height) as f64;
    let log_ratio = [ratio[0].ln(), ratio[1].ln()];
    for _ in 0..10 {
        let target_area = uniform(rng, scale[0], scale[1]) * area;
        let aspect = uniform(rng, log_ratio[0], log_ratio[1]).exp();
        let w = (target_area * aspect).sqrt().round_ties_even() as usize;
        let h = (target_area / aspect).sqrt().round_ties_even() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return CropBox { top, left, height: h, width: w };
        }
    }
    center_fallback(width, height, ratio)
}

/// The central crop timm falls back to after 10 failed attempts: the whole image, narrowed or
/// shortened to bring its aspect ratio into `ratio`.
pub fn center_fallback(width: usize, height: usize, ratio: [f64; 2]) -> CropBox {
    let in_ratio = width as f64 / height as f64;
    let (lo, hi) = (ratio[0].min(ratio[1]), ratio[0].max(ratio[1]));
    let (w, h) = if in_ratio < lo {
        (width, ((width as f64 / lo).round_ties_even() as usize).min(height))
    } else if in_ratio > hi {
        (((height as f64 * hi).round_ties_even() as usize).min(width), height)
    } else {
        (width, height)
    };
    CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

/// Python's `random.uniform(a, b)`: `a + (b - a) * random()`.
fn uniform(rng: &mut StdRng, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.gen::<f64>()
}

/// torchvision's `F.resized_crop` on a PIL image: crop `crop` and resize it to `out_w` x `out_h`
/// with Pillow's resampler. A box that does not lie inside the image resizes the whole image.
pub fn resized_crop(img: &RgbImage, crop: CropBox, out_w: usize, out_h: usize, filter: Filter) -> RgbImage {
    let cropped = img.crop(crop.left, crop.top, crop.width, crop.height).unwrap_or_else(|| img.clone());
    resize_rgb8(&cropped, out_w, out_h, filter)
}

/// Mirrors the image left to right.
pub fn hflip(img: &RgbImage) -> RgbImage {
    let w = img.width();
    let mut out = img.clone();
    for (dst, src) in out.as_raw_mut().chunks_exact_mut(w * 3).zip(img.as_raw().chunks_exact(w * 3)) {
        for x in 0..w {
            dst[x * 3..x * 3 + 3].copy_from_slice(&src[(w - 1 - x) * 3..(w - 1 - x) * 3 + 3]);
        }
    }
    out
}

/// torchvision's `ColorJitter(b, b, b)` on a PIL image: brightness, contrast and saturation (the
/// Pillow `ImageEnhance` ops) in a random order, each with a factor uniform in
/// `[max(0, 1 - b), 1 + b]`.
pub fn color_jitter(img: &RgbImage, strength: f64, rng: &mut StdRng) -> RgbImage {
    // torch.randperm(4) over brightness, contrast, saturation, hue; hue is off.
    let mut order = [0usize, 1, 2, 3];
    for i in (1..4).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    let lo = (1.0 - strength).max(0.0);
    let factors: [f64; 3] = std::array::from_fn(|_| uniform(rng, lo, 1.0 + strength));
    let order: Vec<usize> = order.into_iter().filter(|&k| k < 3).collect();
    color_jitter_fixed(img, &order, factors)
}

/// The deterministic part of [`color_jitter`]: for each index `k` in `order`, brightness (0),
/// contrast (1) or saturation (2) with factor `factors[k]`, as torchvision's
/// `F.adjust_brightness` / `adjust_contrast` / `adjust_saturation` on PIL images. Other indices
/// are skipped.
pub fn color_jitter_fixed(img: &RgbImage, order: &[usize], factors: [f64; 3]) -> RgbImage {
    let mut out = img.clone();
    for &k in order {
        out = match k {
            0 => enhance_brightness(&out, factors[0] as f32),
            1 => enhance_contrast(&out, factors[1] as f32),
            2 => enhance_color(&out, factors[2] as f32),
            _ => out,
        };
    }
    out
}

/// timm's `RandomErasing` on one normalized CHW image `chw` of shape `[c, h, w]`; see the module
/// documentation. Returns the erased boxes (empty when the probability draw skipped it). A buffer
/// whose length is not `c * h * w` is left alone and nothing is drawn.
pub fn random_erasing(
    chw: &mut [f32],
    shape: [usize; 3],
    probability: f64,
    mode: EraseMode,
    max_count: usize,
    rng: &mut StdRng,
) -> Vec<CropBox> {
    let [c, h, w] = shape;
    let mut boxes = Vec::new();
    if chw.len() != c * h * w || rng.gen::<f64>() > probability {
        return boxes;
    }
    let area = (h * w) as f64;
    let count = if max_count <= 1 { 1 } else { rng.gen_range(1..=max_count) };
    let log_aspect = [0.3f64.ln(), (1.0f64 / 0.3).ln()];
    for _ in 0..count {
        for _ in 0..10 {
            let target_area = uniform(rng, 0.02, 1.0 / 3.0) * area / count as f64;
            let aspect = uniform(rng, log_aspect[0], log_aspect[1]).exp();
            let eh = (target_area * aspect).sqrt().round_ties_even() as usize;
            let ew = (target_area / aspect).sqrt().round_ties_even() as usize;
            if ew < w && eh < h {
                let top = rng.gen_range(0..=h - eh);
                let left = rng.gen_range(0..=w - ew);
                let channel_values: Vec<f32> = (0..c).map(|_| standard_normal(rng) as f32).collect();
                for (ch, plane) in chw.chunks_exact_mut(h * w).enumerate() {
                    for y in top..top + eh {
                        for v in &mut plane[y * w + left..y * w + left + ew] {
                            *v = match mode {
                                EraseMode::Const => 0.0,
                                EraseMode::Rand => channel_values[ch],
                                EraseMode::Pixel => standard_normal(rng) as f32,
                            };
                        }
                    }
                }
                boxes.push(CropBox { top, left, height: eh, width: ew });
                break;
            }
        }
    }
    boxes
}
