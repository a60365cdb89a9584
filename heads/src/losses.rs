//! The detection losses of mmdetection 2.11 (`mmdet/models/losses/*.py`) as differentiable candle
//! ops: element-wise losses, then [`reduce`] with mmdet's `weight_reduce_loss` semantics.
//!
//! Every element-wise function returns a loss per element (or per box), so that a head can
//! weight and normalize it the way mmdet does: multiply by the weights, sum, divide by the
//! head's `avg_factor` (e.g. the number of sampled anchors), then scale by `loss_weight`.

use candle_core::{bail, DType, Result, Tensor};
use nextdet_ops::{aligned_giou, Boxes};
use serde::Deserialize;

/// Element-wise binary cross-entropy of `logits` against `targets` in `[0, 1]`, optionally
/// times `weights` (same shape), as `F.binary_cross_entropy_with_logits(reduction='none')`.
///
/// Computed as `max(x, 0) - x * t + ln(1 + exp(-|x|))` with `max(x, 0) = (x + |x|) / 2`, which
/// is finite for any logit (candle's own BCE takes `ln(sigmoid(x))` and overflows) and whose
/// gradient is `sigmoid(x) - t` everywhere, including `x = 0`.
pub fn sigmoid_bce_with_logits(logits: &Tensor, targets: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    let abs = logits.abs()?;
    let pos = ((logits + &abs)? * 0.5)?;
    let log1p = ((abs.neg()?.exp()? + 1.0)?).log()?;
    let loss = ((pos - (logits * targets)?)? + log1p)?;
    match weights {
        Some(w) => loss * w,
        None => Ok(loss),
    }
}

/// `[N]` softmax cross-entropy of `logits: [N, C]` against class indices `labels` (`N` values in
/// `0..C`), `F.cross_entropy(reduction='none')`. A label out of range is an error.
pub fn cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let (n, c) = logits.dims2()?;
    if labels.len() != n {
        bail!("cross_entropy: {} labels for {n} rows of logits", labels.len());
    }
    let idx: Vec<u32> = labels
        .iter()
        .map(|&l| {
            if l < c {
                Ok(l as u32)
            } else {
                Err(candle_core::Error::Msg(format!("cross_entropy: label {l} >= {c} classes")))
            }
        })
        .collect::<Result<_>>()?;
    let idx = Tensor::from_vec(idx, (n, 1), logits.device())?;
    cross_entropy_t(logits, &idx.squeeze(1)?)
}

/// [`cross_entropy`] with the labels as an `[N]` integer tensor.
pub fn cross_entropy_t(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (n, _) = logits.dims2()?;
    if n == 0 {
        return logits.sum_keepdim(1)?.squeeze(1);
    }
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?; // [N, 1]
    let picked = shifted.gather(&labels.to_dtype(DType::U32)?.reshape((n, 1))?, 1)?;
    (lse - picked)?.squeeze(1)
}

/// Element-wise `|pred - target|` (mmdet `l1_loss`).
pub fn l1_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    (pred - target)?.abs()
}

/// Element-wise smooth L1 (mmdet `smooth_l1_loss`): `0.5 d^2 / beta` where `d = |pred -
/// target| < beta`, else `d - 0.5 beta`. `beta <= 0` is the L1 loss.
pub fn smooth_l1_loss(pred: &Tensor, target: &Tensor, beta: f64) -> Result<Tensor> {
    let d = (pred - target)?.abs()?;
    if beta <= 0.0 {
        return Ok(d);
    }
    let quad = (d.sqr()? * (0.5 / beta))?;
    let lin = (&d - 0.5 * beta)?;
    d.lt(beta)?.where_cond(&quad, &lin)
}

/// `[N]` GIoU loss `1 - giou(pred[i], target[i])` of `[N, 4]` xyxy boxes (mmdet `giou_loss`;
/// the `GIoULoss` module uses `eps = 1e-6`).
pub fn giou_loss(pred: &Tensor, target: &Tensor, eps: f64) -> Result<Tensor> {
    let g = aligned_giou(&Boxes::new(pred.clone())?, &Boxes::new(target.clone())?, eps)?;
    1.0 - g
}

/// A scalar 0 that stays connected to `t`'s graph, mmdet's `pred.sum() * 0` for a loss without
/// positives: backward then yields zero gradients for the parameters behind `t` (which weight
/// decay still sees). Not `t.sum_all() * 0.0`: candle prunes an affine op with factor 0 from
/// backprop, and those parameters would get no gradient at all.
pub fn zero_loss(t: &Tensor) -> Result<Tensor> {
    let s = t.sum_all()?;
    s.mul(&s.zeros_like()?)
}

/// mmdet's `weight_reduce_loss` with `reduction='mean'`: `sum(loss * weights) / avg_factor`
/// when an `avg_factor` is given, else the mean of `loss * weights` (0 for an empty loss). A
/// scalar tensor.
pub fn reduce(loss: &Tensor, weights: Option<&Tensor>, avg_factor: Option<f64>) -> Result<Tensor> {
    let loss = match weights {
        Some(w) => (loss * w)?,
        None => loss.clone(),
    };
    match avg_factor {
        Some(a) => loss.sum_all()? / a,
        None if loss.elem_count() == 0 => loss.sum_all(),
        None => loss.mean_all(),
    }
}

/// A box regression loss as named in an mmdet config (`loss_bbox=dict(type=..., ...)`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum RegLossConfig {
    /// `|pred - target|` on deltas (Mask R-CNN's RPN and box head).
    L1Loss {
        /// Scale of the reduced loss.
        #[serde(default = "one")]
        loss_weight: f64,
    },
    /// Smooth L1 on deltas (Cascade's RPN uses `beta = 1/9`).
    SmoothL1Loss {
        /// Where the quadratic part turns linear.
        #[serde(default = "one")]
        beta: f64,
        /// Scale of the reduced loss.
        #[serde(default = "one")]
        loss_weight: f64,
    },
    /// `1 - GIoU` on decoded boxes (Cascade's box heads, `reg_decoded_bbox=True`).
    GIoULoss {
        /// Scale of the reduced loss.
        #[serde(default = "one")]
        loss_weight: f64,
    },
}

fn one() -> f64 {
    1.0
}

impl RegLossConfig {
    /// Whether the loss compares decoded boxes (GIoU) rather than deltas.
    pub fn on_decoded_boxes(&self) -> bool {
        matches!(self, Self::GIoULoss { .. })
    }

    /// The scale applied after reduction.
    pub fn loss_weight(&self) -> f64 {
        match *self {
            Self::L1Loss { loss_weight } | Self::SmoothL1Loss { loss_weight, .. } | Self::GIoULoss { loss_weight } => {
                loss_weight
            }
        }
    }

    /// The reduced, weighted loss of `pred` against `target` (both `[N, 4]`), as mmdet's loss
    /// module computes it: element-wise loss, times `weights` (`[N, 4]`; for GIoU their mean over
    /// the 4 coordinates weights each box), summed and divided by `avg_factor` (or averaged),
    /// times `loss_weight`. An empty `pred` gives 0 (mmdet's `pred.sum() * 0`), and GIoU with no
    /// positive weight gives `sum(pred * weights)` (0, kept in the graph), as mmdet does.
    pub fn compute(
        &self,
        pred: &Tensor,
        target: &Tensor,
        weights: Option<&Tensor>,
        avg_factor: Option<f64>,
    ) -> Result<Tensor> {
        if pred.elem_count() == 0 {
            return zero_loss(pred);
        }
        let loss = match *self {
            Self::L1Loss { .. } => reduce(&l1_loss(pred, target)?, weights, avg_factor)?,
            Self::SmoothL1Loss { beta, .. } => reduce(&smooth_l1_loss(pred, target, beta)?, weights, avg_factor)?,
            Self::GIoULoss { .. } => {
                if let Some(w) = weights {
                    if w.flatten_all()?.max(0)?.to_scalar::<f32>()? <= 0.0 {
                        return (pred * w)?.sum_all();
                    }
                }
                let w = match weights {
                    Some(w) if w.rank() > 1 => Some(w.mean(w.rank() - 1)?),
                    Some(w) => Some(w.clone()),
                    None => None,
                };
                reduce(&giou_loss(pred, target, 1e-6)?, w.as_ref(), avg_factor)?
            }
        };
        loss * self.loss_weight()
    }
}
