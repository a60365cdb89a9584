//! Mixed precision for the device-generic paths: the dtype the dense convolutions and the
//! matrix multiplies compute in, as PyTorch's `torch.autocast` does for mmdetection's `fp16`
//! config key.
//!
//! With autocast on, [`crate::generic::conv2d`], [`crate::generic::linear_no_bias`] and
//! [`crate::generic::gelu_linear`] cast their `f32` inputs and weights to the autocast dtype,
//! compute, and cast the result back to `f32`; candle's `to_dtype` backward casts the gradients
//! back, so the parameters (the optimizer's master weights) and their gradients stay `f32`.
//! Normalizations, losses and the box arithmetic stay in `f32`. The fast CPU kernels are `f32`
//! only and ignore the setting; on the CPU it applies where a generic path is called directly.
//!
//! The setting is per thread (a model runs on the thread that calls it, and tests run in
//! parallel threads), set for a scope with [`Autocast::enable`].

use candle_core::{bail, DType, Result, Tensor};
use std::cell::Cell;

thread_local! {
    static AUTOCAST: Cell<Option<DType>> = const { Cell::new(None) };
}

/// The autocast dtype of this thread, `None` when autocast is off.
pub fn autocast_dtype() -> Option<DType> {
    AUTOCAST.with(|a| a.get())
}

/// Autocast for a scope: turned on (or off, with `None`) by [`Autocast::enable`] and restored to
/// what it was when the guard is dropped.
#[must_use = "autocast is only on while the guard lives"]
pub struct Autocast {
    previous: Option<DType>,
}

impl Autocast {
    /// Sets this thread's autocast dtype: `Some(BF16)` or `Some(F16)`, or `None` for full
    /// precision. Any other dtype is an error.
    pub fn enable(dtype: Option<DType>) -> Result<Self> {
        if let Some(d) = dtype {
            if !matches!(d, DType::BF16 | DType::F16) {
                bail!("autocast: {d:?} is not a half-precision float (use bf16 or f16)");
            }
        }
        let previous = AUTOCAST.with(|a| a.replace(dtype));
        Ok(Self { previous })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.previous));
    }
}

/// `t` in the autocast dtype when autocast is on and `t` is `f32`; `t` itself otherwise.
pub(crate) fn cast_in(t: &Tensor) -> Result<Tensor> {
    match autocast_dtype() {
        Some(d) if t.dtype() == DType::F32 => t.to_dtype(d),
        _ => Ok(t.clone()),
    }
}

/// `y` back in `dtype` (the dtype of the op's input) after an autocast computation.
pub(crate) fn cast_out(y: Tensor, dtype: DType) -> Result<Tensor> {
    y.to_dtype(dtype)
}
