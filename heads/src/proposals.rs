//! What the RPN hands to the RoI heads, and what a cascade stage hands to the next.

use candle_core::{bail, Device, Result, Tensor};
use nextdet_ops::Boxes;

/// The candidate boxes of one image (`P` rows), kept as tensors on the model's device from the
/// RPN through every cascade stage: only index lists and the final detections cross to the
/// host.
#[derive(Clone, Debug)]
pub struct Proposals {
    /// `[P, 4]` boxes `x1, y1, x2, y2` in input pixels, detached.
    pub boxes: Boxes,
    /// `[P]` objectness scores by descending score (RPN proposals); `None` for refined boxes.
    pub scores: Option<Tensor>,
}

impl Proposals {
    /// Boxes without scores.
    pub fn new(boxes: Boxes) -> Self {
        Self { boxes, scores: None }
    }

    /// Proposals from a `[P, 4]` box tensor or a `[P, 5]` tensor whose last column holds the
    /// scores (mmdetection's proposal layout).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        match t.dims() {
            [_, 4] => Ok(Self::new(Boxes::new(t.detach())?)),
            [_, 5] => Ok(Self {
                boxes: Boxes::new(t.narrow(1, 0, 4)?.contiguous()?.detach())?,
                scores: Some(t.narrow(1, 4, 1)?.squeeze(1)?.detach()),
            }),
            dims => bail!("proposals must be [P, 4] or [P, 5], got {dims:?}"),
        }
    }

    /// No proposals.
    pub fn empty(device: &Device) -> Result<Self> {
        Ok(Self::new(Boxes::empty(device)?))
    }

    /// mmdetection's layout: `[P, 5]` rows `x1, y1, x2, y2, score` (`[P, 4]` without scores).
    pub fn to_tensor(&self) -> Result<Tensor> {
        match &self.scores {
            Some(s) => Tensor::cat(&[self.boxes.tensor(), &s.unsqueeze(1)?], 1),
            None => Ok(self.boxes.tensor().clone()),
        }
    }

    /// Number of boxes.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
}

/// mmdetection's `bbox2roi`: the boxes of every image as `[R, 5]` rows `(image index, x1, y1,
/// x2, y2)`, the RoI layout of RoIAlign.
pub fn rois(per_image: &[&Boxes], device: &Device) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(per_image.len());
    for (i, b) in per_image.iter().enumerate() {
        let n = b.len();
        if n == 0 {
            continue;
        }
        let index = Tensor::full(i as f32, (n, 1), b.tensor().device())?;
        parts.push(Tensor::cat(&[&index, b.tensor()], 1)?);
    }
    if parts.is_empty() {
        return Tensor::zeros((0, 5), candle_core::DType::F32, device);
    }
    Tensor::cat(&parts, 0)
}
