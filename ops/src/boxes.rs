//! Axis-aligned boxes: the [`Boxes`] type, pairwise overlaps and the `DeltaXYWH` box coder.
//!
//! Shapes: `N`, `M` boxes; `K` boxes per row of a class-specific regression (`[N, 4K]`).
//! Boxes are `(x1, y1, x2, y2)` in pixels, `f32`, with **no `+1`** anywhere (mmdet 2.x and
//! torchvision). A box with `x2 <= x1` or `y2 <= y1` is empty or inverted; every function here
//! accepts such boxes and returns finite values for them (an overlap with an empty box is 0,
//! never NaN).
//!
//! Two kinds of functions live here, on purpose:
//! - element-wise box maths ([`Boxes::area`], [`Boxes::clip`], [`aligned_giou`],
//!   [`DeltaXywhCoder`]) is composed of candle ops, so gradients flow through it (the GIoU loss
//!   and the decoded-box regression losses need them);
//! - pairwise overlaps ([`box_iou`], [`box_iof`], [`generalized_box_iou`]) are `[N, M]` matrices
//!   used by assigners and evaluation, never differentiated, and computed by a multi-threaded CPU
//!   loop that reads each box once instead of broadcasting `[N, M, 2]` temporaries.

use crate::cpu::{multiversion, rows_per_task};
use candle_core::{bail, DType, Device, Result, Tensor};
use rayon::prelude::*;

/// `N` boxes as one `[N, 4]` `f32` tensor of `(x1, y1, x2, y2)` corners.
///
/// A newtype rather than bare tensors so that the rank, width and dtype are checked once, at
/// construction, and every method can rely on them. The inner tensor may carry gradients:
/// the element-wise methods are built from candle ops and stay differentiable.
#[derive(Clone, Debug)]
pub struct Boxes(Tensor);

impl Boxes {
    /// Wraps an `[N, 4]` `f32` tensor of xyxy boxes; any other rank, width or dtype is an error.
    pub fn new(t: Tensor) -> Result<Self> {
        match t.dims() {
            [_, 4] if t.dtype() == DType::F32 => Ok(Self(t)),
            dims => bail!("Boxes: expected an [N, 4] f32 tensor of (x1, y1, x2, y2), got {dims:?} {:?}", t.dtype()),
        }
    }

    /// Boxes from a flat slice of `4 * N` xyxy coordinates.
    pub fn from_slice(xyxy: &[f32], device: &Device) -> Result<Self> {
        if !xyxy.len().is_multiple_of(4) {
            bail!("Boxes::from_slice: {} coordinates is not a multiple of 4", xyxy.len());
        }
        Self::new(Tensor::from_slice(xyxy, (xyxy.len() / 4, 4), device)?)
    }

    /// No boxes: a `[0, 4]` tensor.
    pub fn empty(device: &Device) -> Result<Self> {
        Self::new(Tensor::zeros((0, 4), DType::F32, device)?)
    }

    /// The `[N, 4]` tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.0
    }

    /// Unwraps the `[N, 4]` tensor.
    pub fn into_tensor(self) -> Tensor {
        self.0
    }

    /// Number of boxes `N`.
    pub fn len(&self) -> usize {
        self.0.dims()[0]
    }

    /// True when there are no boxes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The coordinates as a flat contiguous `Vec` of `4 * N` values (for CPU kernels).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.0.flatten_all()?.to_vec1::<f32>()
    }

    /// Column `i` (0..4) as an `[N]` tensor.
    fn col(&self, i: usize) -> Result<Tensor> {
        self.0.narrow(1, i, 1)?.squeeze(1)
    }

    /// `[N]` areas `(x2 - x1) * (y2 - y1)`, no `+1`; inverted boxes give signed products as in
    /// mmdet and torchvision (use [`Boxes::nonempty`] to filter them). Differentiable.
    pub fn area(&self) -> Result<Tensor> {
        let w = (self.col(2)? - self.col(0)?)?;
        let h = (self.col(3)? - self.col(1)?)?;
        w * h
    }

    /// `[N]` mask (u8) of boxes with width and height both greater than `min_size`.
    pub fn nonempty(&self, min_size: f32) -> Result<Tensor> {
        let w = (self.col(2)? - self.col(0)?)?;
        let h = (self.col(3)? - self.col(1)?)?;
        w.gt(min_size as f64)?.mul(&h.gt(min_size as f64)?)
    }

    /// Clips x to `[0, w]` and y to `[0, h]` (mmdet's `bbox.clamp`, not `w - 1`). Gradients
    /// pass where a coordinate is inside the range.
    pub fn clip(&self, (h, w): (f32, f32)) -> Result<Self> {
        let max = Tensor::new(&[[w, h, w, h]], self.0.device())?;
        let lo = self.0.relu()?;
        let over = lo.broadcast_gt(&max)?;
        Self::new(over.where_cond(&max.broadcast_as(lo.shape())?, &lo)?)
    }

    /// Scales x by `sx` and y by `sy` (mmdet's `Resize` applies `[sx, sy, sx, sy]`; dividing by
    /// the same factors maps detections back to the original image).
    pub fn rescale(&self, sx: f32, sy: f32) -> Result<Self> {
        let s = Tensor::new(&[[sx, sy, sx, sy]], self.0.device())?;
        Self::new(self.0.broadcast_mul(&s)?)
    }

    /// Mirrors the boxes horizontally in an image of the given width: `x1' = w - x2`,
    /// `x2' = w - x1` (mmdet's `RandomFlip`, no `-1`).
    pub fn flip_horizontal(&self, width: f32) -> Result<Self> {
        let x1 = (width as f64 - self.col(2)?)?;
        let x2 = (width as f64 - self.col(0)?)?;
        Self::new(Tensor::stack(&[x1, self.col(1)?, x2, self.col(3)?], 1)?)
    }

    /// `[N, 4]` COCO `(x, y, w, h)`: top-left corner and size.
    pub fn to_xywh(&self) -> Result<Tensor> {
        let (x1, y1) = (self.col(0)?, self.col(1)?);
        let w = (self.col(2)? - &x1)?;
        let h = (self.col(3)? - &y1)?;
        Tensor::stack(&[x1, y1, w, h], 1)
    }

    /// Boxes from an `[N, 4]` COCO `(x, y, w, h)` tensor.
    pub fn from_xywh(xywh: &Tensor) -> Result<Self> {
        let b = Self::new(xywh.clone())?;
        let (x, y) = (b.col(0)?, b.col(1)?);
        let x2 = (&x + b.col(2)?)?;
        let y2 = (&y + b.col(3)?)?;
        Self::new(Tensor::stack(&[x, y, x2, y2], 1)?)
    }

    /// The boxes at `idx` (an integer `[K]` tensor), in that order.
    pub fn select(&self, idx: &Tensor) -> Result<Self> {
        Self::new(self.0.index_select(idx, 0)?)
    }

    /// Concatenates lists of boxes; an empty list is an error (there is no device to use).
    pub fn cat(parts: &[Boxes]) -> Result<Self> {
        if parts.is_empty() {
            bail!("Boxes::cat: no boxes to concatenate");
        }
        let ts: Vec<&Tensor> = parts.iter().map(|b| &b.0).collect();
        Self::new(Tensor::cat(&ts, 0)?)
    }
}

/// The floor of a union (or area) that divides an intersection: mmdetection's
/// `bbox_overlaps(eps=1e-6)`, so an empty union gives 0 and ties fall as mmdetection's do.
const EPS: f32 = 1e-6;

/// Which pairwise overlap a kernel computes.
#[derive(Clone, Copy, PartialEq)]
enum Overlap {
    Iou,
    Iof,
    Giou,
}

/// Boxes as separate coordinate columns plus areas, so the inner loop reads unit-stride arrays.
struct Columns {
    x1: Vec<f32>,
    y1: Vec<f32>,
    x2: Vec<f32>,
    y2: Vec<f32>,
    area: Vec<f32>,
}

impl Columns {
    fn new(xyxy: &[f32]) -> Self {
        let n = xyxy.len() / 4;
        let mut c = Columns {
            x1: Vec::with_capacity(n),
            y1: Vec::with_capacity(n),
            x2: Vec::with_capacity(n),
            y2: Vec::with_capacity(n),
            area: Vec::with_capacity(n),
        };
        for b in xyxy.chunks_exact(4) {
            c.x1.push(b[0]);
            c.y1.push(b[1]);
            c.x2.push(b[2]);
            c.y2.push(b[3]);
            c.area.push((b[2] - b[0]) * (b[3] - b[1]));
        }
        c
    }
}

/// `max` and `min` as `a < b ? b : a`: the `std::max` of the C++ references, which compiles
/// to one vector instruction (Rust's `f32::max` adds NaN handling the references do not have).
#[inline(always)]
fn fmax(a: f32, b: f32) -> f32 {
    if a < b {
        b
    } else {
        a
    }
}

#[inline(always)]
fn fmin(a: f32, b: f32) -> f32 {
    if b < a {
        b
    } else {
        a
    }
}

/// Intersection area of two boxes (0 when they do not overlap or one is empty or inverted).
#[inline(always)]
fn intersection(a: [f32; 4], bx1: f32, by1: f32, bx2: f32, by2: f32) -> f32 {
    let w = fmax(fmin(a[2], bx2) - fmax(a[0], bx1), 0.0);
    let h = fmax(fmin(a[3], by2) - fmax(a[1], by1), 0.0);
    w * h
}

multiversion! {
    /// One output row per box of `a` (xyxy rows), against all boxes of `b`; one loop per mode
    /// so that each is a straight vectorizable loop.
    fn overlap_rows(out: &mut [f32], a: &[f32], b: &Columns, mode: u8) {
        let m = b.x1.len();
        let (bx1, by1, bx2, by2, barea) = (&b.x1[..m], &b.y1[..m], &b.x2[..m], &b.y2[..m], &b.area[..m]);
        for (row, ab) in out.chunks_exact_mut(m).zip(a.chunks_exact(4)) {
            let a = [ab[0], ab[1], ab[2], ab[3]];
            let aarea = (a[2] - a[0]) * (a[3] - a[1]);
            let row = &mut row[..m];
            match mode {
                0 => {
                    for j in 0..m {
                        let inter = intersection(a, bx1[j], by1[j], bx2[j], by2[j]);
                        let union = aarea + barea[j] - inter;
                        row[j] = inter / fmax(union, EPS);
                    }
                }
                1 => {
                    for j in 0..m {
                        let inter = intersection(a, bx1[j], by1[j], bx2[j], by2[j]);
                        row[j] = inter / fmax(aarea, EPS);
                    }
                }
                _ => {
                    for j in 0..m {
                        let inter = intersection(a, bx1[j], by1[j], bx2[j], by2[j]);
                        let union = aarea + barea[j] - inter;
                        let iou = inter / fmax(union, EPS);
                        let ew = fmax(fmax(a[2], bx2[j]) - fmin(a[0], bx1[j]), 0.0);
                        let eh = fmax(fmax(a[3], by2[j]) - fmin(a[1], by1[j]), 0.0);
                        let enclose = ew * eh;
                        row[j] = if enclose > 0.0 { iou - (enclose - union) / enclose } else { iou };
                    }
                }
            }
        }
    }
}

fn pairwise(op: &str, a: &Boxes, b: &Boxes, mode: Overlap) -> Result<Tensor> {
    let (n, m) = (a.len(), b.len());
    let device = a.0.device();
    if n == 0 || m == 0 {
        return Tensor::zeros((n, m), DType::F32, device);
    }
    if !b.0.device().same_device(device) {
        bail!("{op}: boxes are on different devices");
    }
    let (av, bc) = (a.to_vec()?, Columns::new(&b.to_vec()?));
    let mut out = vec![0f32; n * m];
    let rows = rows_per_task(m, 1 << 14);
    let code = mode as u8;
    out.par_chunks_mut(m * rows).zip(av.par_chunks(4 * rows)).for_each(|(o, ar)| overlap_rows(o, ar, &bc, code));
    Tensor::from_vec(out, (n, m), device)
}

/// `[N, M]` intersection over union `inter / max(area_a + area_b - inter, 1e-6)` of every pair:
/// mmdetection's `bbox_overlaps` (the one IoU of the project: the assigners, the evaluation of
/// proposals and the tests use it), torchvision's `box_iou` for any pair with a union above
/// `1e-6` (an empty union gives 0 instead of NaN). Not differentiable (see [`aligned_giou`]).
pub fn box_iou(a: &Boxes, b: &Boxes) -> Result<Tensor> {
    pairwise("box_iou", a, b, Overlap::Iou)
}

/// `[N, M]` intersection over the area of the first box, `inter / max(area_a, 1e-6)` (mmdet's
/// `iof`, used to test candidates against ignore regions).
pub fn box_iof(a: &Boxes, b: &Boxes) -> Result<Tensor> {
    pairwise("box_iof", a, b, Overlap::Iof)
}

/// `[N, M]` generalized IoU `iou - (enclose - union) / enclose` of every pair, as torchvision's
/// `generalized_box_iou`, with 0 for the IoU of an empty union (as mmdet's `eps` gives) and no
/// enclosing term, so `giou = iou`, where the enclosing box is empty (torchvision: NaN or inf).
pub fn generalized_box_iou(a: &Boxes, b: &Boxes) -> Result<Tensor> {
    pairwise("generalized_box_iou", a, b, Overlap::Giou)
}

/// `[N]` generalized IoU of `pred[i]` with `target[i]`, differentiable in both (the GIoU loss is
/// `1 - aligned_giou`). mmdet's `bbox_overlaps(mode='giou', is_aligned=True, eps)`: the union and
/// the enclosing area are clamped below at `eps` (mmdet's `GIoULoss` module uses `1e-6`, its bare
/// `giou_loss` function defaults to `1e-7`), so empty
/// and inverted boxes give finite values and finite gradients.
pub fn aligned_giou(pred: &Boxes, target: &Boxes, eps: f64) -> Result<Tensor> {
    if pred.len() != target.len() {
        bail!("aligned_giou: {} predicted boxes but {} targets", pred.len(), target.len());
    }
    let (p, t) = (pred.tensor(), target.tensor());
    let (p_lo, p_hi) = (p.narrow(1, 0, 2)?, p.narrow(1, 2, 2)?);
    let (t_lo, t_hi) = (t.narrow(1, 0, 2)?, t.narrow(1, 2, 2)?);
    let wh = (p_hi.minimum(&t_hi)? - p_lo.maximum(&t_lo)?)?.relu()?; // [N, 2]
    let overlap = (wh.narrow(1, 0, 1)? * wh.narrow(1, 1, 1)?)?.squeeze(1)?;
    let union = ((pred.area()? + target.area()?)? - &overlap)?.maximum(eps)?;
    let iou = (overlap / &union)?;
    let ewh = (p_hi.maximum(&t_hi)? - p_lo.minimum(&t_lo)?)?.relu()?;
    let enclose = (ewh.narrow(1, 0, 1)? * ewh.narrow(1, 1, 1)?)?.squeeze(1)?.maximum(eps)?;
    iou - ((&enclose - union)? / enclose)?
}

/// mmdet's `DeltaXYWHBBoxCoder`: regression targets `(dx, dy, dw, dh)` of boxes relative to
/// base boxes (anchors or proposals), normalized by `means` and `stds`.
///
/// `dx = (gx - px) / pw`, `dw = log(gw / pw)` with centers and sizes without `+1`; decoding
/// clamps `|dw|, |dh|` to `|log(wh_ratio_clip)|` and, with `clip_border` and a `max_shape`,
/// clips x to `[0, W]` and y to `[0, H]` (`mmdet/core/bbox/coder/delta_xywh_bbox_coder.py`). Both directions are composed of candle
/// ops, so decoded boxes carry gradients back to the deltas (`reg_decoded_bbox`).
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaXywhCoder {
    /// Subtracted from the raw deltas when encoding (mmdet `target_means`).
    pub means: [f32; 4],
    /// Divides the raw deltas when encoding (mmdet `target_stds`, e.g. `[0.1, 0.1, 0.2, 0.2]`).
    pub stds: [f32; 4],
    /// Largest allowed size ratio when decoding; mmdet's default is `16 / 1000`.
    pub wh_ratio_clip: f64,
    /// Whether `decode` clips to `max_shape` when one is given (mmdet's default: true).
    pub clip_border: bool,
}

impl Default for DeltaXywhCoder {
    /// Means 0, stds 1, ratio clip `16 / 1000`, clipping on: mmdet's defaults.
    fn default() -> Self {
        Self { means: [0.0; 4], stds: [1.0; 4], wh_ratio_clip: 16.0 / 1000.0, clip_border: true }
    }
}

/// Centers and sizes `(cx, cy, w, h)` of `[N, 4]` boxes, each `[N, 1]`.
fn centers_sizes(b: &Tensor) -> Result<[Tensor; 4]> {
    let c = |i| b.narrow(1, i, 1);
    let (x1, y1, x2, y2) = (c(0)?, c(1)?, c(2)?, c(3)?);
    Ok([((&x1 + &x2)? * 0.5)?, ((&y1 + &y2)? * 0.5)?, (x2 - x1)?, (y2 - y1)?])
}

impl DeltaXywhCoder {
    /// A coder with the given normalization and mmdet's other defaults.
    pub fn new(means: [f32; 4], stds: [f32; 4]) -> Self {
        Self { means, stds, ..Self::default() }
    }

    /// `[N, 4]` normalized deltas that map `proposals[i]` onto `gt[i]` (mmdet `bbox2delta`).
    /// Zero-size proposals or targets give infinite or NaN deltas, as in mmdet; callers pass
    /// matched, non-empty boxes.
    pub fn encode(&self, proposals: &Boxes, gt: &Boxes) -> Result<Tensor> {
        if proposals.len() != gt.len() {
            bail!("DeltaXywhCoder::encode: {} proposals but {} gt boxes", proposals.len(), gt.len());
        }
        let dev = proposals.tensor().device();
        let [px, py, pw, ph] = centers_sizes(proposals.tensor())?;
        let [gx, gy, gw, gh] = centers_sizes(gt.tensor())?;
        let dx = ((gx - px)? / &pw)?;
        let dy = ((gy - py)? / &ph)?;
        let dw = (gw / pw)?.log()?;
        let dh = (gh / ph)?.log()?;
        let d = Tensor::cat(&[dx, dy, dw, dh], 1)?;
        let means = Tensor::new(&[self.means], dev)?;
        let stds = Tensor::new(&[self.stds], dev)?;
        d.broadcast_sub(&means)?.broadcast_div(&stds)
    }

    /// Boxes `[N, 4K]` from base boxes `rois: [N, 4]` and deltas `[N, 4K]` (K = 1, or one box
    /// per class), mmdet `delta2bbox`. `max_shape = Some((h, w))` clips the result to the image
    /// when `clip_border` is set.
    pub fn decode(&self, rois: &Boxes, deltas: &Tensor, max_shape: Option<(f32, f32)>) -> Result<Tensor> {
        let (n, c) = match deltas.dims() {
            &[n, c] if c % 4 == 0 && c > 0 && n == rois.len() => (n, c),
            dims => bail!("DeltaXywhCoder::decode: deltas must be [{}, 4K], got {dims:?}", rois.len()),
        };
        let dev = deltas.device();
        let k = c / 4;
        let d = deltas.reshape((n, k, 4))?;
        let means = Tensor::new(&[[self.means]], dev)?;
        let stds = Tensor::new(&[[self.stds]], dev)?;
        let d = d.broadcast_mul(&stds)?.broadcast_add(&means)?;
        let max_ratio = self.wh_ratio_clip.ln().abs();
        let part = |i| d.narrow(2, i, 1);
        let (dx, dy) = (part(0)?, part(1)?);
        let dw = part(2)?.clamp(-max_ratio, max_ratio)?;
        let dh = part(3)?.clamp(-max_ratio, max_ratio)?;
        let [px, py, pw, ph] = centers_sizes(rois.tensor())?.map(|t| t.unsqueeze(1));
        let (px, py, pw, ph) = (px?, py?, pw?, ph?); // [N, 1, 1]
        let gw = pw.broadcast_mul(&dw.exp()?)?;
        let gh = ph.broadcast_mul(&dh.exp()?)?;
        let gx = px.broadcast_add(&pw.broadcast_mul(&dx)?)?;
        let gy = py.broadcast_add(&ph.broadcast_mul(&dy)?)?;
        let (hw, hh) = ((&gw * 0.5)?, (&gh * 0.5)?);
        let out = Tensor::cat(&[(&gx - &hw)?, (&gy - &hh)?, (gx + hw)?, (gy + hh)?], 2)?; // [N, K, 4]
        let out = match max_shape {
            Some((h, w)) if self.clip_border => {
                let zero = out.zeros_like()?;
                let max = Tensor::new(&[[[w, h, w, h]]], dev)?.broadcast_as(out.shape())?;
                let out = out.lt(0.0)?.where_cond(&zero, &out)?;
                out.gt(&max)?.where_cond(&max, &out)?
            }
            _ => out,
        };
        out.reshape((n, c))
    }
}
