//! Detection training / test transforms on [`DetSample`]s, with mmdetection 2.11's semantics.
//!
//! A pipeline is a list of [`DetTransformConfig`] (deserialized from a config's `train_pipeline`
//! or `test_pipeline`, each item tagged by `type` as in mmdet) turned into a [`DetPipeline`]. The
//! paper's training policy is
//!
//! ```yaml
//! - {type: RandomFlip, flip_ratio: 0.5}
//! - type: AutoAugment
//!   policies:
//!     - [{type: Resize, img_scale: [[1333, 480], [1333, 512], ..., [1333, 800]], multiscale_mode: value}]
//!     - - {type: Resize, img_scale: [[1333, 400], [1333, 500], [1333, 600]], multiscale_mode: value}
//!       - {type: RandomCrop, crop_type: absolute_range, crop_size: [384, 600], allow_negative_crop: true}
//!       - {type: Resize, img_scale: [[1333, 480], ..., [1333, 800]], multiscale_mode: value, override: true}
//! - {type: Normalize, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], to_rgb: true}
//! - {type: Pad, size_divisor: 32}
//! ```
//!
//! and the test pipeline, as in mmdet (the loading and formatting steps are accepted so that
//! mmdet configs carry over unchanged; they do nothing here)
//!
//! ```yaml
//! - {type: LoadImageFromFile}
//! - type: MultiScaleFlipAug
//!   img_scale: [1333, 800]
//!   flip: false
//!   transforms:
//!     - {type: Resize, keep_ratio: true}
//!     - {type: RandomFlip}
//!     - {type: Normalize, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], to_rgb: true}
//!     - {type: Pad, size_divisor: 32}
//!     - {type: ImageToTensor, keys: [img]}
//!     - {type: Collect, keys: [img]}
//! ```
//!
//! Two steps are deferred to [`crate::collate`], because mmdet runs them on the float image:
//! `Normalize` only records its settings ([`DetPipeline::normalization`]) and `Pad` only records
//! the padded size in `meta.pad_size` ([`DetPipeline::size_divisor`]); collate converts to `f32`,
//! normalizes, and pads with zeros in normalized space, as mmdet's `Normalize` then `Pad` do.
//!
//! Random choices use the caller's [`StdRng`] (not numpy's generator, so the draws differ from
//! mmdet's while following the same distributions).

pub mod geometry;

pub use geometry::{crop_sample, flip_sample, rescale_size, resize_linear, resize_nearest, resize_sample};

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::sample::DetSample;

/// How `Resize` picks a scale from several `img_scale` entries (mmdet's `multiscale_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MultiscaleMode {
    /// Exactly two scales bound a range: the long and the short edge are drawn uniformly (as
    /// integers) between the two entries' long and short edges. mmdet's default.
    #[default]
    Range,
    /// One of the listed scales is drawn uniformly.
    Value,
}

/// How `RandomCrop` sizes its window (mmdet's `crop_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropType {
    /// `crop_size = [h, w]` pixels, limited to the image.
    Absolute,
    /// `crop_h` uniform in `[min(h, a), min(h, b)]`, `crop_w` uniform in `[min(w, a), min(w, b)]`
    /// for `crop_size = [a, b]`, `a <= b`.
    AbsoluteRange,
    /// `crop_size = [fh, fw]` fractions in `(0, 1]`: `int(h * fh + 0.5)` by `int(w * fw + 0.5)`.
    Relative,
    /// Fractions drawn uniformly in `[fh, 1]` and `[fw, 1]`, then as `Relative`.
    RelativeRange,
}

fn default_true() -> bool {
    true
}

/// Reads `img_scale` as one `[a, b]` pair or a list of pairs.
fn one_or_many_scales<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<[usize; 2]>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One([usize; 2]),
        Many(Vec<[usize; 2]>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// One step of a detection pipeline, as written in a config (`type: Resize`, ...). Unknown keys
/// are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum DetTransformConfig {
    /// mmdet `Resize` (cv2 bilinear image, nearest masks, scaled and clipped boxes).
    Resize {
        /// Candidate scales. With `keep_ratio` each is a `(long, short)` bound whose order does
        /// not matter (mmdet's `(1333, 800)` and the ConvNeXt configs' `(800, 1333)` are the
        /// same); without it each is the exact `(w, h)` output size. A single pair may be written
        /// without the outer list, as mmdet's `img_scale=(1333, 800)`. May be left out inside
        /// `MultiScaleFlipAug`, which supplies the scale.
        #[serde(default, deserialize_with = "one_or_many_scales")]
        img_scale: Vec<[usize; 2]>,
        /// How a scale is drawn when several are given.
        #[serde(default)]
        multiscale_mode: MultiscaleMode,
        /// Keep the aspect ratio (default true).
        #[serde(default = "default_true")]
        keep_ratio: bool,
        /// Allow this resize to follow an earlier one (mmdet's `override`, used by the
        /// resize-crop-resize policy); without it a second resize is an error, as in mmdet.
        #[serde(default)]
        r#override: bool,
    },
    /// mmdet `RandomFlip` (horizontal) with probability `flip_ratio`.
    RandomFlip {
        /// Probability of flipping, in `[0, 1]`; absent means never (mmdet's `None`, used inside
        /// `MultiScaleFlipAug` with `flip: false`).
        #[serde(default)]
        flip_ratio: Option<f64>,
    },
    /// mmdet 2.11 `RandomCrop`.
    RandomCrop {
        /// How `crop_size` is read.
        crop_type: CropType,
        /// `[h, w]`: pixels for the absolute types, fractions for the relative ones; for
        /// `absolute_range` the `[min, max]` side.
        crop_size: [f64; 2],
        /// Keep a crop that contains no ground-truth box (otherwise the sample is rejected with
        /// [`TransformError::Rejected`]; mmdet then draws another image).
        #[serde(default)]
        allow_negative_crop: bool,
    },
    /// mmdet `AutoAugment`: applies one of `policies`, drawn uniformly.
    AutoAugment {
        /// Non-empty list of non-empty transform sequences.
        policies: Vec<Vec<DetTransformConfig>>,
    },
    /// mmdet `Normalize`; applied by collate on the `f32` image.
    Normalize {
        /// Per-channel mean, on the 0..255 scale, in RGB order when `to_rgb`.
        mean: [f32; 3],
        /// Per-channel standard deviation, 0..255 scale.
        std: [f32; 3],
        /// mmdet loads BGR; `to_rgb: true` feeds the network RGB (our images already are).
        /// `false` feeds BGR.
        #[serde(default = "default_true")]
        to_rgb: bool,
    },
    /// mmdet `Pad` to a multiple of `size_divisor`; recorded in `meta.pad_size`, applied by
    /// collate (bottom-right, zeros in normalized space).
    Pad {
        /// The padded height and width are multiples of this.
        size_divisor: usize,
    },
    /// mmdet's test-time wrapper, single scale without flip only (what the paper's test pipeline
    /// uses): runs `transforms` with every `Resize` at `img_scale`.
    MultiScaleFlipAug {
        /// The test scale, e.g. `[1333, 800]` (one pair, or a list holding one pair).
        #[serde(deserialize_with = "one_or_many_scales")]
        img_scale: Vec<[usize; 2]>,
        /// Flip test-time augmentation; only `false` is supported.
        #[serde(default)]
        flip: bool,
        /// The wrapped steps.
        transforms: Vec<DetTransformConfig>,
    },
    /// mmdet's image loading step; the dataset decodes the image, so this is accepted and does
    /// nothing.
    LoadImageFromFile {
        /// Accepted for compatibility; images are always 8-bit here.
        #[serde(default)]
        to_float32: bool,
    },
    /// mmdet's annotation loading step; the dataset loads annotations, and
    /// [`DetPipeline::with_mask`] reports `with_mask` so it can skip masks.
    LoadAnnotations {
        /// Load boxes (default true).
        #[serde(default = "default_true")]
        with_bbox: bool,
        /// Load instance masks (default false).
        #[serde(default)]
        with_mask: bool,
    },
    /// mmdet's tensor formatting; collate does it, so this is accepted and does nothing.
    DefaultFormatBundle {},
    /// mmdet's tensor formatting at test time; accepted and does nothing.
    ImageToTensor {
        /// The keys mmdet converts.
        keys: Vec<String>,
    },
    /// mmdet's key selection; the sample keeps all its fields, so this is accepted and does
    /// nothing.
    Collect {
        /// The keys mmdet keeps.
        keys: Vec<String>,
        /// The meta keys mmdet keeps.
        #[serde(default)]
        meta_keys: Vec<String>,
    },
}

impl DetTransformConfig {
    /// The `type` name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Resize { .. } => "Resize",
            Self::RandomFlip { .. } => "RandomFlip",
            Self::RandomCrop { .. } => "RandomCrop",
            Self::AutoAugment { .. } => "AutoAugment",
            Self::Normalize { .. } => "Normalize",
            Self::Pad { .. } => "Pad",
            Self::MultiScaleFlipAug { .. } => "MultiScaleFlipAug",
            Self::LoadImageFromFile { .. } => "LoadImageFromFile",
            Self::LoadAnnotations { .. } => "LoadAnnotations",
            Self::DefaultFormatBundle {} => "DefaultFormatBundle",
            Self::ImageToTensor { .. } => "ImageToTensor",
            Self::Collect { .. } => "Collect",
        }
    }
}

/// The normalization collate applies: `(x - mean) / std` per channel on the 0..255 scale, with
/// channels in RGB order (`to_rgb`) or BGR order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
    /// Output channel order RGB (true) or BGR (false).
    pub to_rgb: bool,
}

impl Normalization {
    /// The paper's (and mmdet's ImageNet) setting: RGB, mean `[123.675, 116.28, 103.53]`,
    /// std `[58.395, 57.12, 57.375]`.
    pub const IMAGENET: Self = Self { mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], to_rgb: true };
}

/// A bad pipeline config or a sample the pipeline cannot or will not transform.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    /// A config value is invalid; `path` names the step, e.g. `pipeline[1].policies[0][2] (Resize)`.
    #[error("invalid transform config at {path}: {reason}")]
    InvalidConfig {
        /// Where in the pipeline.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The sample is inconsistent (counts or sizes disagree); names the image.
    #[error("bad sample {file} (image_id {image_id}): {reason}")]
    BadSample {
        /// The image file.
        file: String,
        /// The image id.
        image_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// A transform rejected the sample, as mmdet's `RandomCrop` does when no ground-truth box is
    /// left and `allow_negative_crop` is false (mmdet returns `None` and the dataset draws
    /// another image from the same aspect-ratio group).
    #[error("sample {file} (image_id {image_id}) rejected: {reason}")]
    Rejected {
        /// The image file.
        file: String,
        /// The image id.
        image_id: u64,
        /// Why.
        reason: String,
    },
}

/// A validated transform step.
#[derive(Debug, Clone)]
enum Step {
    Resize { scales: Vec<[usize; 2]>, mode: MultiscaleMode, keep_ratio: bool, allow_override: bool },
    Flip { ratio: f64 },
    Sequence(Vec<Step>),
    Crop { kind: CropType, size: [f64; 2], allow_negative: bool },
    AutoAugment { policies: Vec<Vec<Step>> },
    NoOp,
    Pad { divisor: usize },
}

/// A validated detection pipeline; [`DetPipeline::apply`] runs it on one sample.
#[derive(Debug, Clone)]
pub struct DetPipeline {
    steps: Vec<Step>,
    found: Found,
}

/// What building the steps collected for the pipeline's users, and the `MultiScaleFlipAug` scale
/// in force.
#[derive(Debug, Clone, Default)]
struct Found {
    normalization: Option<Normalization>,
    size_divisor: Option<usize>,
    with_mask: Option<bool>,
    test_scale: Option<[usize; 2]>,
}

/// Per-sample state threaded through the steps (mmdet's `results['scale']` marker).
struct State {
    resized: bool,
}

impl DetPipeline {
    /// Checks and builds a pipeline. Errors name the offending step by its position.
    pub fn new(configs: &[DetTransformConfig]) -> Result<Self, TransformError> {
        let mut found = Found::default();
        let steps = build_steps(configs, "pipeline", &mut found)?;
        found.test_scale = None;
        Ok(Self { steps, found })
    }

    /// The `Normalize` settings, for collate; `None` if the pipeline has no `Normalize` step.
    pub fn normalization(&self) -> Option<Normalization> {
        self.found.normalization
    }

    /// The `Pad` divisor, for collate; `None` if the pipeline has no `Pad` step.
    pub fn size_divisor(&self) -> Option<usize> {
        self.found.size_divisor
    }

    /// `LoadAnnotations`' `with_mask`: whether the dataset should load masks; `None` if the
    /// pipeline has no `LoadAnnotations` step.
    pub fn with_mask(&self) -> Option<bool> {
        self.found.with_mask
    }

    /// Runs the steps on `sample`, drawing random choices from `rng`.
    ///
    /// Errors: [`TransformError::BadSample`] when the sample's boxes, labels and masks disagree
    /// in count or the masks' size differs from the image's; [`TransformError::Rejected`] when a
    /// crop without `allow_negative_crop` leaves no box; [`TransformError::InvalidConfig`] for a
    /// second `Resize` without `override`.
    pub fn apply(&self, sample: DetSample, rng: &mut StdRng) -> Result<DetSample, TransformError> {
        check_sample(&sample)?;
        let mut state = State { resized: false };
        run_steps(&self.steps, sample, rng, &mut state)
    }
}

fn build_steps(configs: &[DetTransformConfig], path: &str, found: &mut Found) -> Result<Vec<Step>, TransformError> {
    let mut steps = Vec::with_capacity(configs.len());
    for (i, cfg) in configs.iter().enumerate() {
        let here = format!("{path}[{i}] ({})", cfg.type_name());
        let bad = |reason: String| TransformError::InvalidConfig { path: here.clone(), reason };
        let step = match cfg {
            DetTransformConfig::Resize { img_scale, multiscale_mode, keep_ratio, r#override } => {
                let img_scale = match found.test_scale {
                    Some(scale) => vec![scale],
                    None => img_scale.clone(),
                };
                if img_scale.is_empty() {
                    return Err(bad("img_scale must list at least one scale (outside MultiScaleFlipAug)".into()));
                }
                if img_scale.iter().any(|s| s[0] == 0 || s[1] == 0) {
                    return Err(bad(format!("scales must be positive, got {img_scale:?}")));
                }
                if img_scale.len() > 1 && *multiscale_mode == MultiscaleMode::Range && img_scale.len() != 2 {
                    return Err(bad(format!(
                        "multiscale_mode range needs exactly 2 scales, got {}; use multiscale_mode: value",
                        img_scale.len()
                    )));
                }
                Step::Resize {
                    scales: img_scale,
                    mode: *multiscale_mode,
                    keep_ratio: *keep_ratio,
                    allow_override: *r#override,
                }
            }
            DetTransformConfig::RandomFlip { flip_ratio } => {
                // Inside MultiScaleFlipAug (flip: false) mmdet has already decided not to flip.
                let ratio = if found.test_scale.is_some() { 0.0 } else { flip_ratio.unwrap_or(0.0) };
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(bad(format!("flip_ratio must be in [0, 1], got {ratio}")));
                }
                Step::Flip { ratio }
            }
            DetTransformConfig::RandomCrop { crop_type, crop_size, allow_negative_crop } => {
                let [a, b] = *crop_size;
                match crop_type {
                    CropType::Absolute | CropType::AbsoluteRange => {
                        if !(a >= 1.0 && b >= 1.0 && a.fract() == 0.0 && b.fract() == 0.0) {
                            return Err(bad(format!("crop_size must be positive integers, got {crop_size:?}")));
                        }
                        if *crop_type == CropType::AbsoluteRange && a > b {
                            return Err(bad(format!(
                                "absolute_range needs crop_size[0] <= crop_size[1], got {crop_size:?}"
                            )));
                        }
                    }
                    CropType::Relative | CropType::RelativeRange => {
                        if !(a > 0.0 && a <= 1.0 && b > 0.0 && b <= 1.0) {
                            return Err(bad(format!("relative crop_size must be in (0, 1], got {crop_size:?}")));
                        }
                    }
                }
                Step::Crop { kind: *crop_type, size: *crop_size, allow_negative: *allow_negative_crop }
            }
            DetTransformConfig::AutoAugment { policies } => {
                if policies.is_empty() || policies.iter().any(|p| p.is_empty()) {
                    return Err(bad("policies must be a non-empty list of non-empty lists".into()));
                }
                let mut built = Vec::with_capacity(policies.len());
                for (j, p) in policies.iter().enumerate() {
                    built.push(build_steps(p, &format!("{here}.policies[{j}]"), found)?);
                }
                Step::AutoAugment { policies: built }
            }
            DetTransformConfig::Normalize { mean, std, to_rgb } => {
                if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !s.is_finite() || *s == 0.0) {
                    return Err(bad(format!(
                        "mean must be finite and std finite and non-zero, got {mean:?} / {std:?}"
                    )));
                }
                found.normalization = Some(Normalization { mean: *mean, std: *std, to_rgb: *to_rgb });
                Step::NoOp
            }
            DetTransformConfig::Pad { size_divisor } => {
                if *size_divisor == 0 {
                    return Err(bad("size_divisor must be positive".into()));
                }
                found.size_divisor = Some(*size_divisor);
                Step::Pad { divisor: *size_divisor }
            }
            DetTransformConfig::MultiScaleFlipAug { img_scale, flip, transforms } => {
                if img_scale.len() != 1 || *flip {
                    return Err(bad(format!(
                        "only one scale without flip is supported (no test-time augmentation), got \
                         img_scale {img_scale:?}, flip {flip}"
                    )));
                }
                if found.test_scale.is_some() {
                    return Err(bad("MultiScaleFlipAug cannot be nested".into()));
                }
                found.test_scale = Some(img_scale[0]);
                let inner = build_steps(transforms, &format!("{here}.transforms"), found);
                found.test_scale = None;
                Step::Sequence(inner?)
            }
            DetTransformConfig::LoadAnnotations { with_mask, .. } => {
                found.with_mask = Some(*with_mask);
                Step::NoOp
            }
            DetTransformConfig::LoadImageFromFile { .. }
            | DetTransformConfig::DefaultFormatBundle {}
            | DetTransformConfig::ImageToTensor { .. }
            | DetTransformConfig::Collect { .. } => Step::NoOp,
        };
        steps.push(step);
    }
    Ok(steps)
}

fn check_sample(s: &DetSample) -> Result<(), TransformError> {
    let bad = |reason: String| TransformError::BadSample {
        file: s.meta.file.display().to_string(),
        image_id: s.meta.image_id,
        reason,
    };
    if s.image.is_empty() {
        return Err(bad(format!("empty image {}x{}", s.image.width(), s.image.height())));
    }
    if s.labels.len() != s.boxes.len() {
        return Err(bad(format!("{} labels for {} boxes", s.labels.len(), s.boxes.len())));
    }
    if !s.masks.is_empty() && s.masks.len() != s.boxes.len() {
        return Err(bad(format!("{} masks for {} boxes", s.masks.len(), s.boxes.len())));
    }
    for (i, m) in s.masks.iter().enumerate() {
        if (m.width, m.height) != (s.image.width(), s.image.height()) || m.data.len() != m.width * m.height {
            return Err(bad(format!(
                "mask {i} is {}x{} ({} bytes) but the image is {}x{}",
                m.width,
                m.height,
                m.data.len(),
                s.image.width(),
                s.image.height()
            )));
        }
    }
    Ok(())
}

fn run_steps(
    steps: &[Step],
    mut s: DetSample,
    rng: &mut StdRng,
    state: &mut State,
) -> Result<DetSample, TransformError> {
    for step in steps {
        s = run_step(step, s, rng, state)?;
    }
    Ok(s)
}

fn run_step(step: &Step, s: DetSample, rng: &mut StdRng, state: &mut State) -> Result<DetSample, TransformError> {
    Ok(match step {
        Step::Resize { scales, mode, keep_ratio, allow_override } => {
            if state.resized && !allow_override {
                return Err(TransformError::InvalidConfig {
                    path: "Resize".into(),
                    reason: "a second Resize needs `override: true` (mmdet asserts the same)".into(),
                });
            }
            state.resized = true;
            let scale = pick_scale(scales, *mode, rng);
            resize_sample(s, scale, *keep_ratio)
        }
        Step::Flip { ratio } => {
            if *ratio > 0.0 && rng.gen::<f64>() < *ratio {
                flip_sample(s)
            } else {
                s
            }
        }
        Step::Crop { kind, size, allow_negative } => {
            let (h, w) = (s.image.height(), s.image.width());
            let (ch, cw) = crop_size(*kind, *size, h, w, rng);
            let (ch, cw) = (ch.clamp(1, h), cw.clamp(1, w));
            let y = rng.gen_range(0..=h - ch);
            let x = rng.gen_range(0..=w - cw);
            let (file, image_id) = (s.meta.file.display().to_string(), s.meta.image_id);
            let (out, any) = crop_sample(s, x, y, cw, ch).expect("crop window lies inside the image");
            if !any && !allow_negative {
                return Err(TransformError::Rejected {
                    file,
                    image_id,
                    reason: "RandomCrop left no ground-truth box and allow_negative_crop is false".into(),
                });
            }
            out
        }
        Step::AutoAugment { policies } => {
            let p = rng.gen_range(0..policies.len());
            run_steps(&policies[p], s, rng, state)?
        }
        Step::Sequence(steps) => run_steps(steps, s, rng, state)?,
        Step::NoOp => s,
        Step::Pad { divisor } => {
            let mut s = s;
            let (h, w) = s.meta.img_size;
            s.meta.pad_size = (h.div_ceil(*divisor) * divisor, w.div_ceil(*divisor) * divisor);
            s
        }
    })
}

/// mmdet's `Resize._random_scale` without `ratio_range`.
fn pick_scale(scales: &[[usize; 2]], mode: MultiscaleMode, rng: &mut StdRng) -> [usize; 2] {
    if scales.len() == 1 {
        return scales[0];
    }
    match mode {
        MultiscaleMode::Value => scales[rng.gen_range(0..scales.len())],
        MultiscaleMode::Range => {
            let longs = scales.iter().map(|s| s[0].max(s[1]));
            let shorts = scales.iter().map(|s| s[0].min(s[1]));
            let (lmin, lmax) = (longs.clone().min().unwrap_or(1), longs.max().unwrap_or(1));
            let (smin, smax) = (shorts.clone().min().unwrap_or(1), shorts.max().unwrap_or(1));
            [rng.gen_range(lmin..=lmax), rng.gen_range(smin..=smax)]
        }
    }
}

/// mmdet 2.11's `RandomCrop._get_crop_size`: `(crop_h, crop_w)` for an `h` x `w` image.
fn crop_size(kind: CropType, size: [f64; 2], h: usize, w: usize, rng: &mut StdRng) -> (usize, usize) {
    let rel = |fh: f64, fw: f64| ((h as f64 * fh + 0.5) as usize, (w as f64 * fw + 0.5) as usize);
    match kind {
        CropType::Absolute => ((size[0] as usize).min(h), (size[1] as usize).min(w)),
        CropType::AbsoluteRange => {
            let (a, b) = (size[0] as usize, size[1] as usize);
            (rng.gen_range(a.min(h)..=b.min(h)), rng.gen_range(a.min(w)..=b.min(w)))
        }
        CropType::Relative => rel(size[0], size[1]),
        CropType::RelativeRange => {
            // mmdet adds float64 draws to the float32 sizes.
            let (a, b) = (size[0] as f32 as f64, size[1] as f32 as f64);
            rel(a + rng.gen::<f64>() * (1.0 - a), b + rng.gen::<f64>() * (1.0 - b))
        }
    }
}
