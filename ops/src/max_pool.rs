//! ResNet's stem pooling, `F.max_pool2d(x, 3, stride=2, padding=1)`, in a form candle can
//! differentiate: candle's `max_pool2d` has no backward when the kernel differs from the stride
//! (a known gap of candle 0.11), which stopped any ResNet whose stem trains.

use candle_core::{bail, Result, Tensor};

/// `F.max_pool2d(x, 3, stride=2, padding=1)` of a non-negative `[N, C, H, W]` input (ResNet
/// applies it after a ReLU). The nine window taps are strided views of the zero-padded input,
/// combined with elementwise maxima, so the backward is candle's. Zero padding equals PyTorch's
/// `-inf` padding here because every window holds at least one input value and none is
/// negative. Where several taps of a window tie for the maximum, the gradient is split among
/// them (PyTorch routes it to the first); after a ReLU that happens in practice only between
/// zeros, whose ReLU gradient is zero anyway.
pub fn max_pool_3x3_stride2_nonnegative(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h == 0 || w == 0 {
        bail!("max_pool_3x3_stride2_nonnegative: empty spatial size {h}x{w}");
    }
    let (ho, wo) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    // One zero row/column before; after, enough that tap 2's view of 2*ho rows fits.
    let xp = x.pad_with_zeros(2, 1, 2 * ho + 1 - h)?.pad_with_zeros(3, 1, 2 * wo + 1 - w)?;
    let wp = xp.dim(3)?;
    let mut out: Option<Tensor> = None;
    for di in 0..3 {
        let rows = xp.narrow(2, di, 2 * ho)?.reshape((n, c, ho, 2, wp))?.narrow(3, 0, 1)?.squeeze(3)?;
        for dj in 0..3 {
            let tap = rows.narrow(3, dj, 2 * wo)?.reshape((n, c, ho, wo, 2))?.narrow(4, 0, 1)?.squeeze(4)?;
            out = Some(match out {
                None => tap,
                Some(o) => o.maximum(&tap)?,
            });
        }
    }
    out.expect("nine taps").contiguous()
}
