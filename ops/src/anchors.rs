//! mmdet's `AnchorGenerator` (`mmdet/core/anchor/anchor_generator.py`): anchors per pyramid level
//! and the flags that say which anchors take part in training.
//!
//! Shapes: `L` levels, `A = ratios * scales` anchors per position, a level's feature map is
//! `H x W`. Conventions: the base size of a level is its stride, the anchor
//! center sits at offset 0 (the top-left corner of a cell), `h_ratio = sqrt(ratio)`,
//! `w_ratio = 1 / h_ratio`, `w = stride * w_ratio * scale`, corners `c -/+ 0.5 * w` **without
//! rounding** (torchvision rounds; mmdet and detectron2 do not). Anchors of one position are
//! ratio-major (`scale_major=True`: all scales of the first ratio, then the next ratio), and
//! positions are row-major, so a level is `[H * W * A, 4]` in mmdet's order and a head's output
//! `[A * 4, H, W]` permuted to `[H, W, A * 4]` lines up with it.

use candle_core::{bail, DType, Device, Result, Tensor};

/// Generates mmdet anchors for a list of pyramid levels (one stride per level).
#[derive(Clone, Debug)]
pub struct AnchorGenerator {
    strides: Vec<usize>,
    /// Per level, the `A` anchors centered on the origin, `[x1, y1, x2, y2]`.
    base_anchors: Vec<Vec<[f32; 4]>>,
}

impl AnchorGenerator {
    /// Anchors with `ratios` (height / width) and `scales` (multiples of the stride) at every
    /// level of `strides`, e.g. `([4, 8, 16, 32, 64], [0.5, 1, 2], [8])` for the RPN of Mask
    /// R-CNN. Empty lists, a zero stride or a non-positive ratio or scale are errors.
    pub fn new(strides: &[usize], ratios: &[f32], scales: &[f32]) -> Result<Self> {
        if strides.is_empty() || ratios.is_empty() || scales.is_empty() {
            bail!("AnchorGenerator: strides {strides:?}, ratios {ratios:?} and scales {scales:?} must be non-empty");
        }
        if strides.contains(&0) {
            bail!("AnchorGenerator: strides must be positive, got {strides:?}");
        }
        if ratios.iter().chain(scales).any(|&v| !(v > 0.0 && v.is_finite())) {
            bail!("AnchorGenerator: ratios {ratios:?} and scales {scales:?} must be positive and finite");
        }
        let base_anchors = strides.iter().map(|&s| base_anchors(s as f32, ratios, scales)).collect();
        Ok(Self { strides: strides.to_vec(), base_anchors })
    }

    /// mmdet's octave form: scales `octave_base_scale * 2^(i / scales_per_octave)` for
    /// `i < scales_per_octave` (RetinaNet-style heads), computed in `f64` as mmdet's numpy does.
    pub fn from_octaves(
        strides: &[usize],
        ratios: &[f32],
        octave_base_scale: f32,
        scales_per_octave: usize,
    ) -> Result<Self> {
        let scales: Vec<f32> = (0..scales_per_octave)
            .map(|i| (2f64.powf(i as f64 / scales_per_octave as f64) * octave_base_scale as f64) as f32)
            .collect();
        Self::new(strides, ratios, &scales)
    }

    /// The same anchors with the base anchors rounded to integers (half to even, as
    /// `torch.round`), which is what torchvision's `AnchorGenerator` does; mmdet and detectron2
    /// do not round. For comparing against torchvision-based detectors.
    pub fn with_rounded_base_anchors(mut self) -> Self {
        for level in &mut self.base_anchors {
            for anchor in level.iter_mut() {
                anchor.iter_mut().for_each(|v| *v = v.round_ties_even());
            }
        }
        self
    }

    /// Number of levels `L`.
    pub fn num_levels(&self) -> usize {
        self.strides.len()
    }

    /// The stride of each level.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Anchors per position `A` (the same at every level).
    pub fn num_base_anchors(&self) -> usize {
        self.base_anchors[0].len()
    }

    /// The `A` anchors of `level` centered on the origin, in mmdet's order.
    pub fn base_anchors(&self, level: usize) -> Result<&[[f32; 4]]> {
        match self.base_anchors.get(level) {
            Some(b) => Ok(b),
            None => bail!("AnchorGenerator: level {level} out of range (have {})", self.num_levels()),
        }
    }

    /// `[H * W * A, 4]` anchors of one level with a `(h, w)` feature map: the base anchors
    /// shifted by `(x * stride, y * stride)`, position-major then anchor. An empty map gives
    /// `[0, 4]`.
    pub fn level_anchors(&self, level: usize, (h, w): (usize, usize), device: &Device) -> Result<Tensor> {
        let base = self.base_anchors(level)?;
        let stride = self.strides[level];
        let mut out = Vec::with_capacity(h * w * base.len() * 4);
        for y in 0..h {
            let sy = (y * stride) as f32;
            for x in 0..w {
                let sx = (x * stride) as f32;
                for b in base {
                    out.extend_from_slice(&[b[0] + sx, b[1] + sy, b[2] + sx, b[3] + sy]);
                }
            }
        }
        Tensor::from_vec(out, (h * w * base.len(), 4), device)
    }

    /// Anchors of every level (mmdet `grid_anchors`); `featmap_sizes` holds one `(h, w)` per level.
    pub fn grid_anchors(&self, featmap_sizes: &[(usize, usize)], device: &Device) -> Result<Vec<Tensor>> {
        self.check_levels(featmap_sizes)?;
        featmap_sizes.iter().enumerate().map(|(l, &hw)| self.level_anchors(l, hw, device)).collect()
    }

    /// Per level, a `[H * W * A]` `u8` mask of anchors whose cell lies inside the image's padded
    /// size `pad_shape = (h, w)` (mmdet `valid_flags`): the feature maps of a batch are as big as
    /// its largest image, and cells at or beyond `ceil(pad / stride)` see only batch padding.
    pub fn valid_flags(
        &self,
        featmap_sizes: &[(usize, usize)],
        (pad_h, pad_w): (usize, usize),
        device: &Device,
    ) -> Result<Vec<Tensor>> {
        self.check_levels(featmap_sizes)?;
        let a = self.num_base_anchors();
        featmap_sizes
            .iter()
            .zip(&self.strides)
            .map(|(&(h, w), &s)| {
                let (vh, vw) = (pad_h.div_ceil(s).min(h), pad_w.div_ceil(s).min(w));
                let mut flags = Vec::with_capacity(h * w * a);
                for y in 0..h {
                    for x in 0..w {
                        flags.extend(std::iter::repeat_n((y < vh && x < vw) as u8, a));
                    }
                }
                Tensor::from_vec(flags, h * w * a, device)
            })
            .collect()
    }

    fn check_levels(&self, featmap_sizes: &[(usize, usize)]) -> Result<()> {
        if featmap_sizes.len() != self.num_levels() {
            bail!("AnchorGenerator: {} feature map sizes for {} levels", featmap_sizes.len(), self.num_levels());
        }
        Ok(())
    }
}

/// The `A` base anchors of one level, computed in `f32` in the order mmdet's torch code uses
/// (so they match it bit for bit).
fn base_anchors(base_size: f32, ratios: &[f32], scales: &[f32]) -> Vec<[f32; 4]> {
    let mut out = Vec::with_capacity(ratios.len() * scales.len());
    for &r in ratios {
        let h_ratio = r.sqrt();
        let w_ratio = 1.0 / h_ratio;
        for &s in scales {
            let (w, h) = (base_size * w_ratio * s, base_size * h_ratio * s);
            out.push([-(0.5 * w), -(0.5 * h), 0.5 * w, 0.5 * h]);
        }
    }
    out
}

/// `[N]` `u8` mask of anchors used for training (mmdet `anchor_inside_flags`): with
/// `allowed_border >= 0`, an anchor must be valid and lie inside the image `img_shape = (h, w)`
/// grown by `allowed_border` pixels (`x1 >= -b`, `y1 >= -b`, `x2 < w + b`, `y2 < h + b`); with a
/// negative border (the Mask R-CNN configs use -1) every valid anchor is used.
pub fn anchor_inside_flags(
    anchors: &Tensor,
    valid: &Tensor,
    (img_h, img_w): (usize, usize),
    allowed_border: i64,
) -> Result<Tensor> {
    let n = match anchors.dims() {
        &[n, 4] => n,
        dims => bail!("anchor_inside_flags: anchors must be [N, 4], got {dims:?}"),
    };
    if valid.dims() != [n] {
        bail!("anchor_inside_flags: valid flags must be [{n}], got {:?}", valid.dims());
    }
    let valid = valid.to_dtype(DType::U8)?;
    if allowed_border < 0 {
        return Ok(valid);
    }
    let b = allowed_border as f32;
    let flags: Vec<u8> = anchors
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .chunks_exact(4)
        .zip(valid.to_vec1::<u8>()?)
        .map(|(a, v)| {
            let inside = a[0] >= -b && a[1] >= -b && a[2] < img_w as f32 + b && a[3] < img_h as f32 + b;
            (v != 0 && inside) as u8
        })
        .collect();
    Tensor::from_vec(flags, n, anchors.device())
}
