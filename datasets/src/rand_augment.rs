//! RandAugment as timm implements it (`timm.data.auto_augment.rand_augment_transform`), with its
//! image operations re-implemented to give the same bytes as Pillow on 8-bit RGB.
//!
//! A policy string such as `rand-m9-mstd0.5-inc1` (ConvNeXt's default) means: pick `n` (2) ops
//! uniformly *with replacement* from timm's op list (the "increasing" list for `inc1`), and apply
//! each with probability `p` (0.5) at a magnitude drawn from `N(m, mstd)` (9, 0.5) and clamped to
//! `[0, mmax]` (10). The magnitude maps to an op argument as timm's `LEVEL_TO_ARG` does; rotate,
//! shear, translate and the increasing enhance ops flip the sign of their deviation with
//! probability one half.
//!
//! The Pillow equivalents, each checked against Pillow 13 by `datasets/tests/cls_augment.rs`:
//! - lookup-table ops (`ImageOps.autocontrast`, `equalize`, `invert`, `posterize`, `solarize`,
//!   timm's `solarize_add`) on per-channel histograms;
//! - `ImageEnhance` ops as `Image.blend(degenerate, image, factor)` with Pillow's `f32` blend and
//!   truncation: colour blends with the ITU-R 601 grey image, contrast with the grey mean, brightness
//!   with black, sharpness with the 3x3 `SMOOTH` filter (border pixels copied);
//! - geometric ops as `Image.transform(AFFINE, BICUBIC)` (timm passes the training interpolation,
//!   bicubic for ConvNeXt, and `fillcolor` = the ImageNet mean in 0..255, `(124, 116, 104)`):
//!   Pillow's own cubic (`a = -1`) 4x4 sampling of the inverse-mapped pixel centre, edge rows and
//!   columns repeated, truncated to 8 bits; pixels whose centre maps outside the image get the fill.
//!
//! One deliberate difference: `PosterizeIncreasing` at magnitude 10 keeps 0 bits. Pillow before 10
//! (the versions ConvNeXt trained with) turned that into a black image; Pillow 13 raises an error.
//! This module keeps the old behaviour (all channels 0).

use rand::rngs::StdRng;
use rand::Rng;

use crate::image_io::RgbImage;

/// timm's fill colour for the geometric ops with ImageNet's mean: `round(255 * mean)`.
pub const IMAGENET_MEAN_FILL: [u8; 3] = [124, 116, 104];

/// timm's `_LEVEL_DENOM`: magnitudes are on a 0..10 scale.
const LEVEL_DENOM: f64 = 10.0;

/// One RandAugment operation, named as in timm's `NAME_TO_OP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandAugmentOp {
    /// `ImageOps.autocontrast`: stretch each channel's range to 0..255.
    AutoContrast,
    /// `ImageOps.equalize`: per-channel histogram equalization.
    Equalize,
    /// `ImageOps.invert`: `255 - v`.
    Invert,
    /// `Image.rotate` by the argument in degrees (counter-clockwise), bicubic, filled.
    Rotate,
    /// `ImageOps.posterize`, keeping `int(m / 10 * 4)` bits.
    Posterize,
    /// `ImageOps.posterize`, keeping `4 - int(m / 10 * 4)` bits.
    PosterizeIncreasing,
    /// `ImageOps.solarize` at threshold `min(256, int(m / 10 * 256))`.
    Solarize,
    /// `ImageOps.solarize` at threshold `256 - min(256, int(m / 10 * 256))`.
    SolarizeIncreasing,
    /// timm's `solarize_add`: add `min(128, int(m / 10 * 110))` to values below 128.
    SolarizeAdd,
    /// `ImageEnhance.Color` with factor `m / 10 * 1.8 + 0.1`.
    Color,
    /// `ImageEnhance.Color` with factor `max(0.1, 1 +- m / 10 * 0.9)`.
    ColorIncreasing,
    /// `ImageEnhance.Contrast` with factor `m / 10 * 1.8 + 0.1`.
    Contrast,
    /// `ImageEnhance.Contrast` with factor `max(0.1, 1 +- m / 10 * 0.9)`.
    ContrastIncreasing,
    /// `ImageEnhance.Brightness` with factor `m / 10 * 1.8 + 0.1`.
    Brightness,
    /// `ImageEnhance.Brightness` with factor `max(0.1, 1 +- m / 10 * 0.9)`.
    BrightnessIncreasing,
    /// `ImageEnhance.Sharpness` with factor `m / 10 * 1.8 + 0.1`.
    Sharpness,
    /// `ImageEnhance.Sharpness` with factor `max(0.1, 1 +- m / 10 * 0.9)`.
    SharpnessIncreasing,
    /// Affine shear along x by `+-m / 10 * 0.3`.
    ShearX,
    /// Affine shear along y by `+-m / 10 * 0.3`.
    ShearY,
    /// Translation along x by `+-m / 10 * 0.45` of the width.
    TranslateXRel,
    /// Translation along y by `+-m / 10 * 0.45` of the height.
    TranslateYRel,
}

use RandAugmentOp as Op;

/// timm's `_RAND_TRANSFORMS` (policy without `inc1`).
pub const RAND_TRANSFORMS: [RandAugmentOp; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::Posterize,
    Op::Solarize,
    Op::SolarizeAdd,
    Op::Color,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateXRel,
    Op::TranslateYRel,
];

/// timm's `_RAND_INCREASING_TRANSFORMS` (policy with `inc1`, ConvNeXt's).
pub const RAND_INCREASING_TRANSFORMS: [RandAugmentOp; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::PosterizeIncreasing,
    Op::SolarizeIncreasing,
    Op::SolarizeAdd,
    Op::ColorIncreasing,
    Op::ContrastIncreasing,
    Op::BrightnessIncreasing,
    Op::SharpnessIncreasing,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateXRel,
    Op::TranslateYRel,
];

impl RandAugmentOp {
    /// The op's timm name, e.g. `"SolarizeIncreasing"`.
    pub fn name(self) -> &'static str {
        match self {
            Op::AutoContrast => "AutoContrast",
            Op::Equalize => "Equalize",
            Op::Invert => "Invert",
            Op::Rotate => "Rotate",
            Op::Posterize => "Posterize",
            Op::PosterizeIncreasing => "PosterizeIncreasing",
            Op::Solarize => "Solarize",
            Op::SolarizeIncreasing => "SolarizeIncreasing",
            Op::SolarizeAdd => "SolarizeAdd",
            Op::Color => "Color",
            Op::ColorIncreasing => "ColorIncreasing",
            Op::Contrast => "Contrast",
            Op::ContrastIncreasing => "ContrastIncreasing",
            Op::Brightness => "Brightness",
            Op::BrightnessIncreasing => "BrightnessIncreasing",
            Op::Sharpness => "Sharpness",
            Op::SharpnessIncreasing => "SharpnessIncreasing",
            Op::ShearX => "ShearX",
            Op::ShearY => "ShearY",
            Op::TranslateXRel => "TranslateXRel",
            Op::TranslateYRel => "TranslateYRel",
        }
    }

    /// The op with timm name `name`, if it is one of these.
    pub fn from_name(name: &str) -> Option<Self> {
        RAND_TRANSFORMS.iter().chain(&RAND_INCREASING_TRANSFORMS).copied().find(|op| op.name() == name)
    }

    /// `true` when timm's level function draws a random sign for this op.
    pub fn has_random_sign(self) -> bool {
        matches!(
            self,
            Op::Rotate
                | Op::ColorIncreasing
                | Op::ContrastIncreasing
                | Op::BrightnessIncreasing
                | Op::SharpnessIncreasing
                | Op::ShearX
                | Op::ShearY
                | Op::TranslateXRel
                | Op::TranslateYRel
        )
    }

    /// timm's `LEVEL_TO_ARG`: the op's argument at `magnitude` (already clamped), with the sign
    /// flipped when `negate` (ignored by ops without a random sign). `translate_pct` is timm's
    /// hparam (0.45 by default). Ops without an argument return 0.
    pub fn level_to_arg(self, magnitude: f64, negate: bool, translate_pct: f64) -> f64 {
        let sign = |v: f64| if negate { -v } else { v };
        let level = magnitude / LEVEL_DENOM;
        let enhance_inc = || (1.0 + sign(level * 0.9)).max(0.1);
        let solarize = || ((level * 256.0) as i64).min(256) as f64;
        match self {
            Op::AutoContrast | Op::Equalize | Op::Invert => 0.0,
            Op::Rotate => sign(level * 30.0),
            Op::Posterize => ((level * 4.0) as i64) as f64,
            Op::PosterizeIncreasing => (4 - (level * 4.0) as i64) as f64,
            Op::Solarize => solarize(),
            Op::SolarizeIncreasing => 256.0 - solarize(),
            Op::SolarizeAdd => ((level * 110.0) as i64).min(128) as f64,
            Op::Color | Op::Contrast | Op::Brightness | Op::Sharpness => level * 1.8 + 0.1,
            Op::ColorIncreasing | Op::ContrastIncreasing | Op::BrightnessIncreasing | Op::SharpnessIncreasing => {
                enhance_inc()
            }
            Op::ShearX | Op::ShearY => sign(level * 0.3),
            Op::TranslateXRel | Op::TranslateYRel => sign(level * translate_pct),
        }
    }

    /// Applies the op with argument `arg` (as returned by [`RandAugmentOp::level_to_arg`]);
    /// `fill` colours the pixels that geometric ops bring in from outside the image.
    pub fn apply(self, img: &RgbImage, arg: f64, fill: [u8; 3]) -> RgbImage {
        match self {
            Op::AutoContrast => autocontrast(img),
            Op::Equalize => equalize(img),
            Op::Invert => invert(img),
            Op::Rotate => rotate(img, arg, fill),
            Op::Posterize | Op::PosterizeIncreasing => posterize(img, arg as u32),
            Op::Solarize | Op::SolarizeIncreasing => solarize(img, arg as u32),
            Op::SolarizeAdd => solarize_add(img, arg as u32, 128),
            Op::Color | Op::ColorIncreasing => enhance_color(img, arg as f32),
            Op::Contrast | Op::ContrastIncreasing => enhance_contrast(img, arg as f32),
            Op::Brightness | Op::BrightnessIncreasing => enhance_brightness(img, arg as f32),
            Op::Sharpness | Op::SharpnessIncreasing => enhance_sharpness(img, arg as f32),
            Op::ShearX => affine_bicubic(img, [1.0, arg, 0.0, 0.0, 1.0, 0.0], fill),
            Op::ShearY => affine_bicubic(img, [1.0, 0.0, 0.0, arg, 1.0, 0.0], fill),
            Op::TranslateXRel => affine_bicubic(img, [1.0, 0.0, arg * img.width() as f64, 0.0, 1.0, 0.0], fill),
            Op::TranslateYRel => affine_bicubic(img, [1.0, 0.0, 0.0, 0.0, 1.0, arg * img.height() as f64], fill),
        }
    }
}

/// A policy string that [`RandAugmentConfig::parse`] rejects.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid RandAugment policy `{spec}`: {reason}")]
pub struct RandAugmentError {
    /// The policy string.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The settings of a `rand-...` policy string (timm's `rand_augment_transform`).
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugmentConfig {
    /// `m`: mean magnitude on the 0..10 scale (timm default 10).
    pub magnitude: f64,
    /// `n`: ops applied per image (default 2).
    pub num_layers: usize,
    /// `p`: probability of applying each chosen op (default 0.5).
    pub prob: f64,
    /// `mstd`: standard deviation of the magnitude noise; infinite means uniform in `[0, m]`
    /// (timm turns values above 100 into that). 0 disables the noise.
    pub magnitude_std: f64,
    /// `mmax`: upper clamp of the sampled magnitude (default 10).
    pub magnitude_max: f64,
    /// `inc`: use the "increasing" op list.
    pub increasing: bool,
}

impl RandAugmentConfig {
    /// Parses a policy such as `rand-m9-mstd0.5-inc1`. Sections are separated by `-`; the first
    /// must be `rand`; the others are a key followed by a number (`m`, `n`, `p`, `mstd`, `mmax`,
    /// `inc`), as timm reads them. Sections without a number are ignored as timm ignores them;
    /// weighted op lists (`t...`) are not supported.
    pub fn parse(spec: &str) -> Result<Self, RandAugmentError> {
        let err = |reason: String| RandAugmentError { spec: spec.to_string(), reason };
        let mut parts = spec.split('-');
        if parts.next() != Some("rand") {
            return Err(err("must start with `rand`".into()));
        }
        let mut cfg = Self {
            magnitude: LEVEL_DENOM,
            num_layers: 2,
            prob: 0.5,
            magnitude_std: 0.0,
            magnitude_max: LEVEL_DENOM,
            increasing: false,
        };
        for part in parts {
            if part.starts_with('t') {
                return Err(err(format!("op list `{part}` is not supported (only timm's default lists)")));
            }
            let Some(split) = part.find(|c: char| c.is_ascii_digit()) else {
                continue;
            };
            let (key, val) = part.split_at(split);
            let int = || val.parse::<u64>().map_err(|_| err(format!("`{part}`: `{val}` is not an integer")));
            let float = || val.parse::<f64>().map_err(|_| err(format!("`{part}`: `{val}` is not a number")));
            match key {
                "m" => cfg.magnitude = int()? as f64,
                "n" => cfg.num_layers = int()? as usize,
                "p" => cfg.prob = float()?,
                "mstd" => {
                    let v = float()?;
                    cfg.magnitude_std = if v > 100.0 { f64::INFINITY } else { v };
                }
                "mmax" => cfg.magnitude_max = int()? as f64,
                "inc" => cfg.increasing = int()? != 0,
                other => return Err(err(format!("unknown section key `{other}`"))),
            }
        }
        if !(0.0..=1.0).contains(&cfg.prob) {
            return Err(err(format!("probability {} is outside [0, 1]", cfg.prob)));
        }
        Ok(cfg)
    }

    /// The op list the policy draws from.
    pub fn ops(&self) -> &'static [RandAugmentOp; 15] {
        if self.increasing {
            &RAND_INCREASING_TRANSFORMS
        } else {
            &RAND_TRANSFORMS
        }
    }
}

/// A RandAugment policy ready to apply; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugment {
    /// The parsed policy.
    pub config: RandAugmentConfig,
    /// Fill colour of geometric ops (timm's `img_mean` hparam).
    pub fill: [u8; 3],
    /// Largest relative translation (timm's `translate_pct` hparam, 0.45).
    pub translate_pct: f64,
}

impl RandAugment {
    /// The policy `spec` with fill colour `fill` and timm's default `translate_pct` of 0.45.
    pub fn from_spec(spec: &str, fill: [u8; 3]) -> Result<Self, RandAugmentError> {
        Ok(Self { config: RandAugmentConfig::parse(spec)?, fill, translate_pct: 0.45 })
    }

    /// Draws a magnitude as timm's `AugmentOp` does: `N(m, mstd)` (or uniform in `[0, m]` for an
    /// infinite `mstd`), clamped to `[0, mmax]`.
    pub fn sample_magnitude(&self, rng: &mut StdRng) -> f64 {
        let c = &self.config;
        let m = if c.magnitude_std == f64::INFINITY {
            rng.gen::<f64>() * c.magnitude
        } else if c.magnitude_std > 0.0 {
            c.magnitude + c.magnitude_std * standard_normal(rng)
        } else {
            c.magnitude
        };
        m.min(c.magnitude_max).max(0.0)
    }

    /// Applies the policy to `img`: `num_layers` ops drawn with replacement, each applied with
    /// probability `prob` at a freshly sampled magnitude and sign.
    pub fn apply(&self, img: &RgbImage, rng: &mut StdRng) -> RgbImage {
        let ops = self.config.ops();
        let mut out = img.clone();
        let chosen: Vec<RandAugmentOp> =
            (0..self.config.num_layers).map(|_| ops[rng.gen_range(0..ops.len())]).collect();
        for op in chosen {
            // timm: `if prob < 1 and random() > prob: skip`.
            if self.config.prob < 1.0 && rng.gen::<f64>() > self.config.prob {
                continue;
            }
            let magnitude = self.sample_magnitude(rng);
            // timm's `_randomly_negate` negates when `random() > 0.5`.
            let negate = op.has_random_sign() && rng.gen::<f64>() > 0.5;
            let arg = op.level_to_arg(magnitude, negate, self.translate_pct);
            out = op.apply(&out, arg, self.fill);
        }
        out
    }
}

/// A standard normal draw (Box-Muller on two uniforms).
pub(crate) fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // in (0, 1]
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

// ---------------------------------------------------------------------------------------------
// Lookup-table ops.

/// Applies a per-channel lookup table (`Image.point` with a 768-entry table).
fn apply_lut(img: &RgbImage, lut: &[[u8; 256]; 3]) -> RgbImage {
    let mut out = img.clone();
    for px in out.as_raw_mut().chunks_exact_mut(3) {
        for c in 0..3 {
            px[c] = lut[c][px[c] as usize];
        }
    }
    out
}

/// Applies the same table to all channels.
fn apply_lut1(img: &RgbImage, f: impl Fn(u32) -> u32) -> RgbImage {
    let mut t = [0u8; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = f(i as u32).min(255) as u8;
    }
    apply_lut(img, &[t, t, t])
}

/// Per-channel 256-bin histograms.
fn histograms(img: &RgbImage) -> [[u64; 256]; 3] {
    let mut h = [[0u64; 256]; 3];
    for px in img.as_raw().chunks_exact(3) {
        for c in 0..3 {
            h[c][px[c] as usize] += 1;
        }
    }
    h
}

/// `ImageOps.autocontrast(img)` (no cutoff): maps each channel's `[lo, hi]` to `[0, 255]` with
/// `int(v * scale + offset)`; channels with a single value are left alone.
pub fn autocontrast(img: &RgbImage) -> RgbImage {
    let hist = histograms(img);
    let mut lut = [[0u8; 256]; 3];
    for (t, h) in lut.iter_mut().zip(&hist) {
        let lo = h.iter().position(|&n| n > 0);
        let hi = h.iter().rposition(|&n| n > 0);
        match (lo, hi) {
            (Some(lo), Some(hi)) if hi > lo => {
                let scale = 255.0 / (hi - lo) as f64;
                let offset = -(lo as f64) * scale;
                for (ix, v) in t.iter_mut().enumerate() {
                    *v = ((ix as f64 * scale + offset) as i64).clamp(0, 255) as u8;
                }
            }
            _ => {
                for (ix, v) in t.iter_mut().enumerate() {
                    *v = ix as u8;
                }
            }
        }
    }
    apply_lut(img, &lut)
}

/// `ImageOps.equalize(img)`: per channel, `step = (total - count of the top used value) // 255`
/// and value `i` maps to `(step // 2 + count below i) // step`.
pub fn equalize(img: &RgbImage) -> RgbImage {
    let hist = histograms(img);
    let mut lut = [[0u8; 256]; 3];
    for (t, h) in lut.iter_mut().zip(&hist) {
        let used: Vec<u64> = h.iter().copied().filter(|&n| n > 0).collect();
        let step = if used.len() <= 1 { 0 } else { (used.iter().sum::<u64>() - used[used.len() - 1]) / 255 };
        if step == 0 {
            for (ix, v) in t.iter_mut().enumerate() {
                *v = ix as u8;
            }
            continue;
        }
        let mut n = step / 2;
        for (v, &count) in t.iter_mut().zip(h) {
            *v = (n / step).min(255) as u8;
            n += count;
        }
    }
    apply_lut(img, &lut)
}

/// `ImageOps.invert(img)`: `255 - v`.
pub fn invert(img: &RgbImage) -> RgbImage {
    apply_lut1(img, |i| 255 - i)
}

/// `ImageOps.posterize(img, bits)`: keep the `bits` high bits. `bits >= 8` returns a copy (timm
/// skips the call); `bits == 0` gives black, as Pillow before 10 did.
pub fn posterize(img: &RgbImage, bits: u32) -> RgbImage {
    if bits >= 8 {
        return img.clone();
    }
    let mask = !((1u32 << (8 - bits)) - 1);
    apply_lut1(img, |i| i & mask)
}

/// `ImageOps.solarize(img, threshold)`: values `>= threshold` become `255 - v`.
pub fn solarize(img: &RgbImage, threshold: u32) -> RgbImage {
    apply_lut1(img, |i| if i < threshold { i } else { 255 - i })
}

/// timm's `solarize_add(img, add, thresh)`: values below `threshold` get `add`, capped at 255.
pub fn solarize_add(img: &RgbImage, add: u32, threshold: u32) -> RgbImage {
    apply_lut1(img, |i| if i < threshold { (i + add).min(255) } else { i })
}

// ---------------------------------------------------------------------------------------------
// ImageEnhance.

/// `Image.blend(a, b, alpha)`: `a + alpha * (b - a)` in `f32`, truncated; clamped to 0..255 when
/// extrapolating (`alpha` outside `[0, 1]`).
///
/// Panics if the images differ in size (the enhance ops always pass equal sizes).
pub fn blend(a: &RgbImage, b: &RgbImage, alpha: f32) -> RgbImage {
    assert_eq!((a.width(), a.height()), (b.width(), b.height()), "blend of images of different sizes");
    if alpha == 0.0 {
        return a.clone();
    }
    if alpha == 1.0 {
        return b.clone();
    }
    let inside = (0.0..=1.0).contains(&alpha);
    let data = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| {
            let v = f32::from(x) + alpha * (i32::from(y) - i32::from(x)) as f32;
            if inside {
                v as u8
            } else if v <= 0.0 {
                0
            } else if v >= 255.0 {
                255
            } else {
                v as u8
            }
        })
        .collect();
    RgbImage::from_raw(a.width(), a.height(), data).expect("same size as the inputs")
}

/// Pillow's RGB to `L` conversion: `(19595 r + 38470 g + 7471 b + 0x8000) >> 16`.
fn luma(px: &[u8]) -> u8 {
    ((u32::from(px[0]) * 19595 + u32::from(px[1]) * 38470 + u32::from(px[2]) * 7471 + 0x8000) >> 16) as u8
}

/// `ImageEnhance.Color(img).enhance(factor)`: blend with the grey version of the image.
pub fn enhance_color(img: &RgbImage, factor: f32) -> RgbImage {
    let mut grey = img.clone();
    for px in grey.as_raw_mut().chunks_exact_mut(3) {
        let l = luma(px);
        px.fill(l);
    }
    blend(&grey, img, factor)
}

/// `ImageEnhance.Contrast(img).enhance(factor)`: blend with a flat image at the mean grey level,
/// `int(mean(L) + 0.5)`.
pub fn enhance_contrast(img: &RgbImage, factor: f32) -> RgbImage {
    let n = img.width() * img.height();
    let sum: u64 = img.as_raw().chunks_exact(3).map(|px| u64::from(luma(px))).sum();
    let mean = if n == 0 { 0 } else { (sum as f64 / n as f64 + 0.5) as u8 };
    let flat = RgbImage::from_raw(img.width(), img.height(), vec![mean; n * 3]).expect("size matches");
    blend(&flat, img, factor)
}

/// `ImageEnhance.Brightness(img).enhance(factor)`: blend with black.
pub fn enhance_brightness(img: &RgbImage, factor: f32) -> RgbImage {
    blend(&RgbImage::zeros(img.width(), img.height()), img, factor)
}

/// `ImageEnhance.Sharpness(img).enhance(factor)`: blend with `img.filter(ImageFilter.SMOOTH)`.
pub fn enhance_sharpness(img: &RgbImage, factor: f32) -> RgbImage {
    blend(&smooth(img), img, factor)
}

/// `ImageFilter.SMOOTH`: the 3x3 kernel `[1 1 1; 1 5 1; 1 1 1] / 13`, accumulated in `f32` row by
/// row (bottom row first) with a `+0.5` offset and truncated, as Pillow's `ImagingFilter3x3`; the
/// one-pixel border is copied unchanged.
pub fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let mut out = img.clone();
    if w < 3 || h < 3 {
        return out;
    }
    let k1 = (1.0f64 / 13.0) as f32;
    let k5 = (5.0f64 / 13.0) as f32;
    let kernel = [k1, k1, k1, k1, k5, k1, k1, k1, k1];
    let src = img.as_raw();
    let at = |x: usize, y: usize, c: usize| f32::from(src[(y * w + x) * 3 + c]);
    let dst = out.as_raw_mut();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for c in 0..3 {
                let row =
                    |yy: usize, k: &[f32]| at(x - 1, yy, c) * k[0] + at(x, yy, c) * k[1] + at(x + 1, yy, c) * k[2];
                let mut ss = 0.5f32;
                ss += row(y + 1, &kernel[0..3]);
                ss += row(y, &kernel[3..6]);
                ss += row(y - 1, &kernel[6..9]);
                dst[(y * w + x) * 3 + c] = ss.clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Geometric ops.

/// Pillow's cubic interpolation step (`a = -1`) between four samples at offset `d`.
#[inline]
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}

/// `img.transform(img.size, Image.AFFINE, matrix, resample=BICUBIC, fillcolor=fill)`: output pixel
/// `(x, y)` samples the input at `(a x' + b y' + c, d x' + e y' + f)` with `x' = x + 0.5`,
/// `y' = y + 0.5`, for `matrix = [a, b, c, d, e, f]`.
pub fn affine_bicubic(img: &RgbImage, matrix: [f64; 6], fill: [u8; 3]) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let [a0, a1, a2, a3, a4, a5] = matrix;
    let src = img.as_raw();
    let mut data = Vec::with_capacity(w * h * 3);
    let clip = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    for y in 0..h {
        for x in 0..w {
            let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
            let xin = a0 * xo + a1 * yo + a2;
            let yin = a3 * xo + a4 * yo + a5;
            if !(xin >= 0.0 && xin < w as f64 && yin >= 0.0 && yin < h as f64) {
                data.extend_from_slice(&fill);
                continue;
            }
            let (xs, ys) = (xin - 0.5, yin - 0.5);
            let (xf, yf) = (xs.floor(), ys.floor());
            let (dx, dy) = (xs - xf, ys - yf);
            let (x0, y0) = (xf as i64 - 1, yf as i64 - 1);
            let cols = [clip(x0, w), clip(x0 + 1, w), clip(x0 + 2, w), clip(x0 + 3, w)];
            for c in 0..3 {
                let mut rows = [0f64; 4];
                for (j, r) in rows.iter_mut().enumerate() {
                    // Pillow clamps the first row and repeats the previous row past the edges,
                    // which is the same as clamping every row index.
                    let base = clip(y0 + j as i64, h) * w;
                    let s = |i: usize| f64::from(src[(base + cols[i]) * 3 + c]);
                    *r = cubic(s(0), s(1), s(2), s(3), dx);
                }
                let v = cubic(rows[0], rows[1], rows[2], rows[3], dy);
                data.push(if v <= 0.0 {
                    0
                } else if v >= 255.0 {
                    255
                } else {
                    v as u8
                });
            }
        }
    }
    RgbImage::from_raw(w, h, data).expect("size matches")
}

/// Python's `round(v, 15)`: the nearest double to `v` rounded to 15 decimals.
fn round15(v: f64) -> f64 {
    format!("{v:.15}").parse().unwrap_or(v)
}

/// `img.rotate(degrees, resample=BICUBIC, fillcolor=fill)`: counter-clockwise about the centre,
/// same size. Multiples of 180 degrees (and 90 on square images) are exact transposes.
pub fn rotate(img: &RgbImage, degrees: f64, fill: [u8; 3]) -> RgbImage {
    let angle = degrees.rem_euclid(360.0);
    let (w, h) = (img.width(), img.height());
    if angle == 0.0 {
        return img.clone();
    }
    if angle == 180.0 || ((angle == 90.0 || angle == 270.0) && w == h) {
        let src = img.as_raw();
        let mut out = img.clone();
        let dst = out.as_raw_mut();
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = match angle as u32 {
                    180 => (w - 1 - x, h - 1 - y),
                    90 => (w - 1 - y, x),
                    _ => (y, h - 1 - x),
                };
                dst[(y * w + x) * 3..][..3].copy_from_slice(&src[(sy * w + sx) * 3..][..3]);
            }
        }
        return out;
    }
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let rad = -angle.to_radians();
    let (a, b, d, e) = (round15(rad.cos()), round15(rad.sin()), round15(-rad.sin()), round15(rad.cos()));
    let c = a * -cx + b * -cy + 0.0 + cx;
    let f = d * -cx + e * -cy + 0.0 + cy;
    affine_bicubic(img, [a, b, c, d, e, f], fill)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_policies() {
        let c = RandAugmentConfig::parse("rand-m9-mstd0.5-inc1").unwrap();
        assert_eq!((c.magnitude, c.num_layers, c.prob, c.magnitude_std, c.increasing), (9.0, 2, 0.5, 0.5, true));
        let c = RandAugmentConfig::parse("rand-n3-m7-mstd101-p0.3-mmax12").unwrap();
        assert_eq!((c.magnitude, c.num_layers, c.prob, c.magnitude_max), (7.0, 3, 0.3, 12.0));
        assert!(c.magnitude_std.is_infinite());
        assert!(!c.increasing);
        assert!(RandAugmentConfig::parse("augmix-m5").is_err());
        assert!(RandAugmentConfig::parse("rand-q3").is_err());
        assert!(RandAugmentConfig::parse("rand-m9.5").is_err());
        assert!(RandAugmentConfig::parse("rand-tweights").is_err());
    }

    #[test]
    fn rotate_quarter_turns_are_transposes() {
        let img = RgbImage::from_raw(2, 2, (0..12).collect()).unwrap();
        let r = rotate(&img, 90.0, [0; 3]);
        // Counter-clockwise: the top-right pixel moves to the top-left.
        assert_eq!(r.pixel(0, 0), img.pixel(1, 0));
        assert_eq!(rotate(&img, -180.0, [0; 3]).pixel(0, 0), img.pixel(1, 1));
        assert_eq!(rotate(&img, 360.0, [0; 3]), img);
    }
}
