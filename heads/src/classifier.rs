//! The image-classification loss of the ConvNeXt ImageNet recipe: cross-entropy against soft
//! targets (timm's `SoftTargetCrossEntropy`), which Mixup/CutMix and label smoothing produce.
//!
//! `loss = mean_n sum_k -targets[n, k] * log_softmax(logits[n])[k]`. The log-softmax subtracts
//! each row's maximum before exponentiating, so any finite logits give a finite loss, and the
//! gradient with respect to the logits is `(softmax(logits) - targets) / N` for rows whose
//! targets sum to 1.

use candle_core::{bail, Result, Tensor};

/// Row-wise `log_softmax` of `[N, K]` logits, shifted by each row's (detached) maximum so that
/// the exponentials cannot overflow; differentiable.
pub fn log_softmax_rows(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// timm's `SoftTargetCrossEntropy`: the mean over the batch of `sum_k -targets * log_softmax`,
/// a scalar tensor. `logits` and `targets` are `[N, K]` with `N > 0`; the targets carry no
/// gradient. Errors on mismatched shapes or an empty batch.
pub fn soft_target_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, k) = logits.dims2()?;
    if targets.dims() != [n, k] {
        bail!("soft_target_cross_entropy: targets {:?} do not match logits [{n}, {k}]", targets.dims());
    }
    if n == 0 {
        bail!("soft_target_cross_entropy: empty batch");
    }
    let targets = targets.to_dtype(logits.dtype())?.to_device(logits.device())?.detach();
    let per_row = (log_softmax_rows(logits)? * targets)?.sum(1)?.neg()?;
    per_row.mean_all()
}
