//! Mixup / CutMix with label smoothing, as timm's `Mixup` in `mode='batch'` (ConvNeXt: mixup 0.8,
//! cutmix 1.0, prob 1.0, switch prob 0.5, label smoothing 0.1).
//!
//! Per batch: with probability `prob` a lambda is drawn, from `Beta(cutmix_alpha, cutmix_alpha)`
//! with probability `switch_prob` (CutMix) or else from `Beta(mixup_alpha, mixup_alpha)` (Mixup),
//! when both alphas are positive. Every sample is mixed with the batch reversed (`x.flip(0)`):
//! - Mixup: `x = x * lam + x.flip(0) * (1 - lam)` in `f32`.
//! - CutMix: a box of `int(H * sqrt(1 - lam))` x `int(W * sqrt(1 - lam))` centred at a uniform
//!   pixel and clipped to the image is copied from the reversed batch; with `correct_lam`, lambda
//!   becomes `1 - box area / image area`.
//!
//! Targets are smoothed one-hot rows (`off = smoothing / K`, `on = 1 - smoothing + off`) mixed
//! the same way: `y * lam + y.flip(0) * (1 - lam)`. The batch size must be even, as timm asserts.
//! Random draws use a [`StdRng`]; the Beta draws use Marsaglia and Tsang's gamma sampler.

use rand::rngs::StdRng;
use rand::Rng;
use serde::Deserialize;

use crate::rand_augment::standard_normal;

/// Invalid mixup settings or inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MixupError {
    /// A setting is out of range; names the field.
    #[error("invalid mixup setting `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The batch buffer's length does not match its shape, or the labels do not match the batch.
    #[error("mixup batch mismatch: {0}")]
    Shape(String),
    /// Mixing with the reversed batch needs an even batch size (timm asserts this).
    #[error("mixup needs an even batch size, got {0}")]
    OddBatch(usize),
    /// A label is not a valid class index.
    #[error("label {label} of sample {index} is not below the number of classes {num_classes}")]
    LabelOutOfRange {
        /// Position of the sample in the batch.
        index: usize,
        /// The label.
        label: usize,
        /// The number of classes.
        num_classes: usize,
    },
}

fn d_mixup_alpha() -> f64 {
    0.8
}
fn d_cutmix_alpha() -> f64 {
    1.0
}
fn d_prob() -> f64 {
    1.0
}
fn d_switch_prob() -> f64 {
    0.5
}
fn d_smoothing() -> f64 {
    0.1
}
fn d_true() -> bool {
    true
}

/// Settings of [`Mixup`], defaulting to ConvNeXt's; only `num_classes` is required. Unknown keys
/// are rejected.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixupConfig {
    /// Beta parameter of Mixup's lambda (0.8); 0 disables Mixup.
    #[serde(default = "d_mixup_alpha")]
    pub mixup_alpha: f64,
    /// Beta parameter of CutMix's lambda (1.0); 0 disables CutMix.
    #[serde(default = "d_cutmix_alpha")]
    pub cutmix_alpha: f64,
    /// Probability of mixing a batch at all (1.0).
    #[serde(default = "d_prob")]
    pub prob: f64,
    /// Probability of CutMix rather than Mixup when both are enabled (0.5).
    #[serde(default = "d_switch_prob")]
    pub switch_prob: f64,
    /// Label smoothing of the targets (0.1).
    #[serde(default = "d_smoothing")]
    pub label_smoothing: f64,
    /// Recompute lambda from the clipped CutMix box (true).
    #[serde(default = "d_true")]
    pub correct_lam: bool,
    /// Number of classes `K` of the targets.
    pub num_classes: usize,
}

impl MixupConfig {
    /// ConvNeXt's settings for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        Self {
            mixup_alpha: d_mixup_alpha(),
            cutmix_alpha: d_cutmix_alpha(),
            prob: d_prob(),
            switch_prob: d_switch_prob(),
            label_smoothing: d_smoothing(),
            correct_lam: true,
            num_classes,
        }
    }
}

/// A CutMix box: rows `yl..yh`, columns `xl..xh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutBox {
    /// First row.
    pub yl: usize,
    /// One past the last row.
    pub yh: usize,
    /// First column.
    pub xl: usize,
    /// One past the last column.
    pub xh: usize,
}

/// What one batch gets: the mixing weight of the original samples and, for CutMix, the box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixParams {
    /// Weight of the original sample (after CutMix's correction); 1 means no mixing.
    pub lam: f64,
    /// The pasted box for CutMix, `None` for Mixup.
    pub cutmix: Option<CutBox>,
}

/// timm's batch-mode `Mixup`; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixup {
    config: MixupConfig,
}

impl Mixup {
    /// Validates the settings: alphas finite and `>= 0` with at least one positive, `prob`,
    /// `switch_prob` and `label_smoothing` in `[0, 1]`, `num_classes > 0`.
    pub fn new(config: MixupConfig) -> Result<Self, MixupError> {
        let bad = |field, reason: String| Err(MixupError::InvalidConfig { field, reason });
        for (field, a) in [("mixup_alpha", config.mixup_alpha), ("cutmix_alpha", config.cutmix_alpha)] {
            if !(a >= 0.0 && a.is_finite()) {
                return bad(field, format!("must be finite and >= 0, got {a}"));
            }
        }
        if config.mixup_alpha == 0.0 && config.cutmix_alpha == 0.0 {
            return bad("mixup_alpha", "one of mixup_alpha and cutmix_alpha must be positive".into());
        }
        for (field, p) in
            [("prob", config.prob), ("switch_prob", config.switch_prob), ("label_smoothing", config.label_smoothing)]
        {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, format!("must be in [0, 1], got {p}"));
            }
        }
        if config.num_classes == 0 {
            return bad("num_classes", "must be positive".into());
        }
        Ok(Self { config })
    }

    /// The settings.
    pub fn config(&self) -> &MixupConfig {
        &self.config
    }

    /// Draws one batch's parameters for images of `height` x `width` (timm's
    /// `_params_per_batch` followed by the CutMix box).
    pub fn sample_params(&self, height: usize, width: usize, rng: &mut StdRng) -> MixParams {
        let c = &self.config;
        let none = MixParams { lam: 1.0, cutmix: None };
        if rng.gen::<f64>() >= c.prob {
            return none;
        }
        let use_cutmix = if c.mixup_alpha > 0.0 && c.cutmix_alpha > 0.0 {
            rng.gen::<f64>() < c.switch_prob
        } else {
            c.cutmix_alpha > 0.0
        };
        let alpha = if use_cutmix { c.cutmix_alpha } else { c.mixup_alpha };
        let lam = sample_beta(rng, alpha, alpha);
        if lam == 1.0 {
            return none;
        }
        if !use_cutmix {
            return MixParams { lam, cutmix: None };
        }
        let cy = rng.gen_range(0..height.max(1));
        let cx = rng.gen_range(0..width.max(1));
        let (b, lam) = cutmix_box(height, width, lam, cy, cx, c.correct_lam);
        MixParams { lam, cutmix: Some(b) }
    }

    /// Mixes `batch` (an `[N, C, H, W]` buffer, N even) in place and returns the soft targets,
    /// an `[N, num_classes]` buffer.
    pub fn apply(
        &self,
        batch: &mut [f32],
        shape: [usize; 4],
        labels: &[usize],
        rng: &mut StdRng,
    ) -> Result<Vec<f32>, MixupError> {
        check_batch(batch, shape, labels)?;
        let params = self.sample_params(shape[2], shape[3], rng);
        mix_batch(batch, shape, &params)?;
        mixup_targets(labels, self.config.num_classes, params.lam, self.config.label_smoothing)
    }
}

fn check_batch(batch: &[f32], shape: [usize; 4], labels: &[usize]) -> Result<(), MixupError> {
    let [n, c, h, w] = shape;
    if batch.len() != n * c * h * w {
        return Err(MixupError::Shape(format!("buffer of {} values for shape {shape:?}", batch.len())));
    }
    if labels.len() != n {
        return Err(MixupError::Shape(format!("{} labels for a batch of {n}", labels.len())));
    }
    if !n.is_multiple_of(2) {
        return Err(MixupError::OddBatch(n));
    }
    Ok(())
}

/// timm's `rand_bbox` + `cutmix_bbox_and_lam` for a given centre `(cy, cx)`: the box of
/// `int(H * sqrt(1 - lam))` x `int(W * sqrt(1 - lam))` centred there and clipped to the image,
/// and lambda (corrected to `1 - box area / image area` when `correct_lam`).
pub fn cutmix_box(height: usize, width: usize, lam: f64, cy: usize, cx: usize, correct_lam: bool) -> (CutBox, f64) {
    let ratio = (1.0 - lam).max(0.0).sqrt();
    let cut_h = (height as f64 * ratio) as i64;
    let cut_w = (width as f64 * ratio) as i64;
    let (h, w, cy, cx) = (height as i64, width as i64, cy as i64, cx as i64);
    let yl = (cy - cut_h / 2).clamp(0, h) as usize;
    let yh = (cy + (cut_h + 1) / 2).clamp(0, h) as usize;
    let xl = (cx - cut_w / 2).clamp(0, w) as usize;
    let xh = (cx + (cut_w + 1) / 2).clamp(0, w) as usize;
    let b = CutBox { yl, yh, xl, xh };
    let lam = if correct_lam { 1.0 - ((yh - yl) * (xh - xl)) as f64 / (height * width) as f64 } else { lam };
    (b, lam)
}

/// Applies `params` to an `[N, C, H, W]` batch in place: Mixup with the reversed batch, or the
/// CutMix box copied from it. `lam == 1` without a box leaves the batch unchanged.
pub fn mix_batch(batch: &mut [f32], shape: [usize; 4], params: &MixParams) -> Result<(), MixupError> {
    let [n, c, h, w] = shape;
    if batch.len() != n * c * h * w {
        return Err(MixupError::Shape(format!("buffer of {} values for shape {shape:?}", batch.len())));
    }
    let sample = c * h * w;
    if sample == 0 || (params.lam == 1.0 && params.cutmix.is_none()) {
        return Ok(());
    }
    let flipped: Vec<f32> = batch.chunks_exact(sample).rev().flatten().copied().collect();
    match params.cutmix {
        Some(b) => {
            let (yh, xh) = (b.yh.min(h), b.xh.min(w));
            if b.xl < xh {
                for plane in 0..n * c {
                    for y in b.yl..yh {
                        let row = (plane * h + y) * w;
                        batch[row + b.xl..row + xh].copy_from_slice(&flipped[row + b.xl..row + xh]);
                    }
                }
            }
        }
        None => {
            let (l, m) = (params.lam as f32, (1.0 - params.lam) as f32);
            for (x, f) in batch.iter_mut().zip(&flipped) {
                *x = *x * l + *f * m;
            }
        }
    }
    Ok(())
}

/// Smoothed one-hot targets (`off = smoothing / K`, `on = 1 - smoothing + off`) as an `[N, K]`
/// buffer: label smoothing without mixing.
pub fn smooth_one_hot(labels: &[usize], num_classes: usize, smoothing: f64) -> Result<Vec<f32>, MixupError> {
    let off = smoothing / num_classes as f64;
    let on = 1.0 - smoothing + off;
    let mut out = vec![off as f32; labels.len() * num_classes];
    for (index, (&label, row)) in labels.iter().zip(out.chunks_exact_mut(num_classes.max(1))).enumerate() {
        if label >= num_classes {
            return Err(MixupError::LabelOutOfRange { index, label, num_classes });
        }
        row[label] = on as f32;
    }
    if num_classes == 0 && !labels.is_empty() {
        return Err(MixupError::LabelOutOfRange { index: 0, label: labels[0], num_classes });
    }
    Ok(out)
}

/// timm's `mixup_target`: smoothed one-hot rows `y` mixed as `y * lam + y.flip(0) * (1 - lam)`
/// in `f32`.
pub fn mixup_targets(labels: &[usize], num_classes: usize, lam: f64, smoothing: f64) -> Result<Vec<f32>, MixupError> {
    let y = smooth_one_hot(labels, num_classes, smoothing)?;
    if num_classes == 0 {
        return Ok(y);
    }
    let flipped: Vec<f32> = y.chunks_exact(num_classes).rev().flatten().copied().collect();
    let (l, m) = (lam as f32, (1.0 - lam) as f32);
    Ok(y.iter().zip(&flipped).map(|(a, b)| a * l + b * m).collect())
}

/// A `Gamma(shape, 1)` draw (Marsaglia and Tsang; shapes below 1 boosted by `U^(1/shape)`).
fn sample_gamma(rng: &mut StdRng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.gen();
        return sample_gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u: f64 = rng.gen();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// A `Beta(a, b)` draw as `X / (X + Y)` with `X ~ Gamma(a)`, `Y ~ Gamma(b)`.
pub fn sample_beta(rng: &mut StdRng, a: f64, b: f64) -> f64 {
    let x = sample_gamma(rng, a);
    let y = sample_gamma(rng, b);
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}
