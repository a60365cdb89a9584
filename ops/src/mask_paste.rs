//! Instance masks between the mask head's `M x M` grid and the image: pasting predicted masks
//! back into the image ([`paste_masks`]) and cropping ground-truth masks into training targets
//! ([`mask_targets`]).
//!
//! **Paste** follows mmdet 2.11 `_do_paste_mask` on its CPU path (the algorithm detectron2's
//! `paste_masks_in_image` shares). For a box `(x0, y0, x1, y1)` in image
//! coordinates, pixel centres `c = i + 0.5` map to the grid coordinate
//! `g = (c - x0) / (x1 - x0) * 2 - 1` (an infinite `g`, from a zero-width box, becomes 0 as in
//! mmdet; a NaN one, from `0 / 0`, samples 0, where `grid_sample` returns NaN and mmdet's
//! threshold then 0), and the mask is
//! sampled there as `F.grid_sample(mask, grid, mode='bilinear', padding_mode='zeros',
//! align_corners=False)` does: `s = (g + 1) * M / 2 - 0.5`, two taps `floor(s)` and
//! `floor(s) + 1` weighted `1 - frac` and `frac`, taps outside the mask read zero. Only the
//! `skip_empty` window is computed: columns `max(floor(x0) - 1, 0) .. min(ceil(x1) + 1, W)`
//! and the same for rows; every pixel outside it is 0 (as on mmdet's CPU path, which differs
//! from its whole-image GPU path for boxes wider than `2 M` pixels, where bilinear support
//! reaches past the window). The soft value is then thresholded with `>= threshold`
//! (mmdet's `mask_thr_binary`, 0.5).
//!
//! A pasted mask is therefore stored as its window only ([`PastedMask`]): a box of 300 x 200
//! pixels in an 800 x 1216 image costs 60 kB instead of 1 MB, and nothing is spent on zeros.
//! The window is stored **column-major**, the order of COCO's run-length encoding, so
//! [`BinaryMask::to_rle`] walks it once to give the COCO run-length encoding;
//! [`PastedMask::to_dense`] and [`binary_masks_to_tensor`] give full row-major images.
//!
//! **Mask targets** follow mmdet 2.11 `mask_target_single` / `BitmapMasks.crop_and_resize`
//! (`mmdet/core/mask/mask_target.py`): proposals clipped to `[0, W] x [0, H]`, then RoIAlign (`avg`,
//! `aligned=True`, `sampling_ratio=0`, i.e. an adaptive `ceil(roi / M)` grid of samples per bin,
//! `spatial_scale=1`) of the assigned ground-truth bitmap, then `>= 0.5`. The single-channel
//! `u8` RoIAlign is written out here with torchvision's/mmcv's `f32` arithmetic and summation
//! order, so the averages, and hence the binarization at 0.5, match theirs bit for bit.

use crate::cpu::multiversion;
use candle_core::{bail, CpuStorage, DType, Device, Result, Storage, Tensor};
use nextdet_structures::{Rle, RunLengthEncoder};
use rayon::prelude::*;

/// The rectangle `[y0, y1) x [x0, x1)` of image pixels that a pasted mask stores; pixels
/// outside it are 0. Empty (`y0 == y1` or `x0 == x1`) when the box misses the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaskWindow {
    /// First row.
    pub y0: usize,
    /// One past the last row.
    pub y1: usize,
    /// First column.
    pub x0: usize,
    /// One past the last column.
    pub x1: usize,
}

impl MaskWindow {
    /// Number of rows.
    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }

    /// Number of columns.
    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }

    /// Whether the window holds no pixel.
    pub fn is_empty(&self) -> bool {
        self.height() == 0 || self.width() == 0
    }

    /// mmdet's `skip_empty` window for `box = [x0, y0, x1, y1]` in an `height x width` image,
    /// clamped into the image (mmdet does not clamp `x0_int` at `W`; a window starting past
    /// the image is empty here). A box with a non-finite coordinate gets an empty window.
    pub(crate) fn for_box(b: [f32; 4], height: usize, width: usize) -> Self {
        if !b.iter().all(|v| v.is_finite()) {
            return MaskWindow::default();
        }
        // In f64, where the +-1 cannot overflow; `as usize` saturates.
        let lo = |v: f32, size: usize| (v.floor() as f64 - 1.0).clamp(0.0, size as f64) as usize;
        let hi = |v: f32, size: usize| (v.ceil() as f64 + 1.0).clamp(0.0, size as f64) as usize;
        let (x0, y0) = (lo(b[0], width), lo(b[1], height));
        let (x1, y1) = (hi(b[2], width).max(x0), hi(b[3], height).max(y0));
        MaskWindow { y0, y1, x0, x1 }
    }
}

/// One pasted mask: an image of `height x width` pixels that is zero outside `window`.
///
/// `data` holds the window's pixels in **column-major** order (COCO RLE order): the pixel at
/// image row `y` and column `x` inside the window is `data[(x - window.x0) * window.height() +
/// (y - window.y0)]`. The methods assume what [`paste_masks`] guarantees: the window lies inside
/// the image and `data` has exactly `window.height() * window.width()` values;
/// [`binary_masks_to_tensor`] checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct PastedMask<T> {
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// The stored rectangle.
    pub window: MaskWindow,
    /// The window's pixels, column-major.
    pub data: Vec<T>,
}

/// A thresholded mask: window pixels are 0 or 1.
pub type BinaryMask = PastedMask<u8>;

/// A mask before thresholding: window pixels are the bilinearly sampled probabilities.
pub type SoftMask = PastedMask<f32>;

impl<T: Copy + Default> PastedMask<T> {
    /// The value at image row `y`, column `x` (zero outside the window and outside the image).
    pub fn get(&self, y: usize, x: usize) -> T {
        let w = &self.window;
        if y < w.y0 || y >= w.y1 || x < w.x0 || x >= w.x1 {
            return T::default();
        }
        self.data[(x - w.x0) * w.height() + (y - w.y0)]
    }

    /// The whole `height x width` image, row-major.
    pub fn to_dense(&self) -> Vec<T> {
        let mut out = vec![T::default(); self.height * self.width];
        let w = &self.window;
        for (i, col) in self.data.chunks_exact(w.height().max(1)).enumerate().take(w.width()) {
            for (j, &v) in col.iter().enumerate() {
                out[(w.y0 + j) * self.width + w.x0 + i] = v;
            }
        }
        out
    }
}

impl BinaryMask {
    /// Number of foreground pixels.
    pub fn area(&self) -> usize {
        self.data.iter().map(|&v| v as usize).sum()
    }

    /// The COCO run-length encoding of the whole image (pycocotools' `mask.encode`; nonzero
    /// pixels count as 1). Walks the window once; the zeros around it cost one step per column.
    pub fn to_rle(&self) -> Rle {
        let (h, w) = (self.height as u64, &self.window);
        let mut rle = RunLengthEncoder::new();
        rle.push(false, w.x0 as u64 * h);
        if !w.is_empty() {
            for col in self.data.chunks_exact(w.height()) {
                rle.push(false, w.y0 as u64);
                for &v in col {
                    rle.push(v != 0, 1);
                }
                rle.push(false, h - w.y1 as u64);
            }
        }
        rle.push(false, (self.width - w.x0 - w.width()) as u64 * h);
        rle.finish(self.height as u32, self.width as u32).expect("the runs cover the mask's image")
    }
}

/// Stacks binary masks into one `[K, H, W]` `u8` tensor on the CPU (all masks must have the
/// same image size; `K = 0` gives `[0, 0, 0]`).
pub fn binary_masks_to_tensor(masks: &[BinaryMask]) -> Result<Tensor> {
    let Some(first) = masks.first() else {
        return Tensor::zeros((0, 0, 0), DType::U8, &Device::Cpu);
    };
    let (h, w) = (first.height, first.width);
    if let Some(m) = masks.iter().find(|m| (m.height, m.width) != (h, w)) {
        bail!("binary_masks_to_tensor: masks of {h}x{w} and {}x{} cannot be stacked", m.height, m.width);
    }
    for (k, m) in masks.iter().enumerate() {
        let win = &m.window;
        if win.y0 > win.y1 || win.x0 > win.x1 || win.y1 > h || win.x1 > w || m.data.len() != win.height() * win.width()
        {
            bail!("binary_masks_to_tensor: mask {k} has window {win:?} and {} values in a {h}x{w} image", m.data.len());
        }
    }
    let mut out = vec![0u8; masks.len() * h * w];
    out.par_chunks_mut((h * w).max(1)).zip(masks.par_iter()).for_each(|(dst, m)| {
        let win = &m.window;
        for (i, col) in m.data.chunks_exact(win.height().max(1)).enumerate().take(win.width()) {
            for (j, &v) in col.iter().enumerate() {
                dst[(win.y0 + j) * w + win.x0 + i] = v;
            }
        }
    });
    Tensor::from_vec(out, (masks.len(), h, w), &Device::Cpu)
}

/// Pastes `masks: [K, Mh, Mw]` (probabilities, already passed through the sigmoid, one per
/// detection; any float dtype) into an image of `image_size = (height, width)` at
/// `boxes: [K, 4]` (`x0, y0, x1, y1` in image pixels) and thresholds them with
/// `>= threshold`. Returns one [`BinaryMask`] per detection, in order. See the module docs for
/// the algorithm. Boxes of zero width or height, flipped boxes and boxes outside the image give
/// finite results (possibly empty masks); a box with a NaN or infinite coordinate gives an
/// empty mask. Runs in parallel over detections.
pub fn paste_masks(
    masks: &Tensor,
    boxes: &Tensor,
    image_size: (usize, usize),
    threshold: f32,
) -> Result<Vec<BinaryMask>> {
    #[cfg(feature = "cuda")]
    if masks.device().is_cuda() && masks.dtype().is_float() && boxes.dtype().is_float() {
        return crate::cuda::paste_masks(masks, boxes, image_size, threshold);
    }
    let input = PasteInput::new("paste_masks", masks, boxes)?;
    Ok((0..input.k)
        .into_par_iter()
        .map(|i| {
            input.paste_one(i, image_size, |out: &mut [u8], v0, v1, w0, w1| {
                threshold_column(out, v0, v1, w0, w1, threshold)
            })
        })
        .collect())
}

/// [`paste_masks`] without the threshold: the sampled probabilities in each window (for
/// tests, visualization, or mmdet's `mask_thr_binary < 0` mode).
pub fn paste_masks_soft(masks: &Tensor, boxes: &Tensor, image_size: (usize, usize)) -> Result<Vec<SoftMask>> {
    let input = PasteInput::new("paste_masks_soft", masks, boxes)?;
    Ok((0..input.k)
        .into_par_iter()
        .map(|i| input.paste_one(i, image_size, |out: &mut [f32], v0, v1, w0, w1| blend_column(out, v0, v1, w0, w1)))
        .collect())
}

/// Validated host copies of the paste inputs.
struct PasteInput {
    k: usize,
    mh: usize,
    mw: usize,
    masks: Vec<f32>,
    boxes: Vec<f32>,
}

/// One bilinear tap pair along an axis: `w0 * v[i0] + w1 * v[i1]`, zero weights for taps
/// outside the mask.
#[derive(Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

impl PasteInput {
    fn new(op: &str, masks: &Tensor, boxes: &Tensor) -> Result<Self> {
        let Ok((k, mh, mw)) = masks.dims3() else {
            bail!("{op}: masks must be [K, M, M], got shape {:?}", masks.dims());
        };
        if boxes.dims() != [k, 4] {
            bail!("{op}: boxes must be [K, 4] = [{k}, 4] for {k} masks, got shape {:?}", boxes.dims());
        }
        if k > 0 && (mh == 0 || mw == 0) {
            bail!("{op}: masks have an empty size {mh}x{mw}");
        }
        if !masks.dtype().is_float() || !boxes.dtype().is_float() {
            bail!("{op}: masks ({:?}) and boxes ({:?}) must be float tensors", masks.dtype(), boxes.dtype());
        }
        let masks = masks.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let boxes = boxes.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(PasteInput { k, mh, mw, masks, boxes })
    }

    /// Pastes detection `i`: vertical interpolation of every mask column over the window's
    /// rows first, then `column` writes each window column from two of those and their weights.
    fn paste_one<T: Copy + Default>(
        &self,
        i: usize,
        (height, width): (usize, usize),
        column: impl Fn(&mut [T], &[f32], &[f32], f32, f32),
    ) -> PastedMask<T> {
        let b: [f32; 4] = self.boxes[4 * i..4 * i + 4].try_into().expect("4 coordinates");
        let window = MaskWindow::for_box(b, height, width);
        if window.is_empty() {
            return PastedMask { height, width, window: MaskWindow::default(), data: Vec::new() };
        }
        let (wh, ww) = (window.height(), window.width());
        let rows = grid_taps(window.y0, wh, b[1], b[3], self.mh);
        let cols = grid_taps(window.x0, ww, b[0], b[2], self.mw);
        let mask = &self.masks[i * self.mh * self.mw..(i + 1) * self.mh * self.mw];
        // Separable blend: rows first, then columns. `grid_sample` sums the four weighted
        // corners instead, so a value can differ in the last bit and a pixel within ~1 ulp of
        // the threshold can flip; the AP effect is nil, and the soft values match to 1e-6.
        // vcols[c * wh + y]: mask column c interpolated at window row y.
        let mut vcols = vec![0f32; self.mw * wh];
        for (c, vc) in vcols.chunks_exact_mut(wh).enumerate() {
            for (v, t) in vc.iter_mut().zip(&rows) {
                *v = t.w0 * mask[t.i0 * self.mw + c] + t.w1 * mask[t.i1 * self.mw + c];
            }
        }
        let mut data = vec![T::default(); wh * ww];
        for (out, t) in data.chunks_exact_mut(wh).zip(&cols) {
            let v0 = &vcols[t.i0 * wh..(t.i0 + 1) * wh];
            let v1 = &vcols[t.i1 * wh..(t.i1 + 1) * wh];
            column(out, v0, v1, t.w0, t.w1);
        }
        PastedMask { height, width, window, data }
    }
}

/// Bilinear taps into a mask axis of length `m` for the pixels `start .. start + len` of a box
/// spanning `lo .. hi` along that axis, with `_do_paste_mask`'s and `grid_sample`'s `f32`
/// arithmetic (align_corners=False, zero padding).
fn grid_taps(start: usize, len: usize, lo: f32, hi: f32, m: usize) -> Vec<Tap> {
    let half = m as f32 / 2.0;
    (start..start + len)
        .map(|p| {
            let g = (p as f32 + 0.5 - lo) / (hi - lo) * 2.0 - 1.0;
            let g = if g.is_infinite() { 0.0 } else { g };
            let s = (g + 1.0) * half - 0.5; // NaN stays NaN and fails the range check below
            let f = s.floor();
            if !(f >= -1.0 && f <= (m - 1) as f32) {
                return Tap { i0: 0, i1: 0, w0: 0.0, w1: 0.0 };
            }
            let frac = s - f;
            let fi = f as i64; // in -1 ..= m - 1
            let i0 = fi.max(0) as usize;
            let i1 = ((fi + 1) as usize).min(m - 1);
            let w0 = if fi >= 0 { 1.0 - frac } else { 0.0 };
            let w1 = if fi + 1 < m as i64 { frac } else { 0.0 };
            Tap { i0, i1, w0, w1 }
        })
        .collect()
}

multiversion! {
    /// `out[y] = w0 * v0[y] + w1 * v1[y]`.
    fn blend_column(out: &mut [f32], v0: &[f32], v1: &[f32], w0: f32, w1: f32) {
        for ((o, &a), &b) in out.iter_mut().zip(v0).zip(v1) {
            *o = w0 * a + w1 * b;
        }
    }
}

multiversion! {
    /// `out[y] = (w0 * v0[y] + w1 * v1[y] >= thr) as u8`.
    fn threshold_column(out: &mut [u8], v0: &[f32], v1: &[f32], w0: f32, w1: f32, thr: f32) {
        for ((o, &a), &b) in out.iter_mut().zip(v0).zip(v1) {
            *o = (w0 * a + w1 * b >= thr) as u8;
        }
    }
}

/// Mask-head training targets, as mmdet 2.11 computes them: for each proposal `p`, the
/// ground-truth bitmap `gt_masks[assigned[p]]` (`[G, H, W]`, any dtype, nonzero = foreground)
/// cropped to `proposals[p]` (`[P, 4]`, `x0, y0, x1, y1`, clipped to `[0, W] x [0, H]`) and
/// resampled to `mask_size x mask_size` with RoIAlign (avg, aligned=True, adaptive sampling,
/// scale 1), then binarized with `>= 0.5`. `assigned: [P]` is an integer tensor of indices into
/// `gt_masks`. Returns `[P, mask_size, mask_size]` `f32` of 0s and 1s on `proposals`' device.
pub fn mask_targets(gt_masks: &Tensor, assigned: &Tensor, proposals: &Tensor, mask_size: usize) -> Result<Tensor> {
    let soft = mask_targets_soft(gt_masks, assigned, proposals, mask_size)?;
    soft.ge(0.5f32)?.to_dtype(DType::F32)
}

/// [`mask_targets`] before the `>= 0.5` binarization: the RoIAlign averages in `[0, 1]`.
pub fn mask_targets_soft(gt_masks: &Tensor, assigned: &Tensor, proposals: &Tensor, mask_size: usize) -> Result<Tensor> {
    const OP: &str = "mask_targets";
    let Ok((g, h, w)) = gt_masks.dims3() else {
        bail!("{OP}: gt_masks must be [G, H, W], got shape {:?}", gt_masks.dims());
    };
    let Ok(p) = assigned.dims1() else {
        bail!("{OP}: assigned gt indices must be [P], got shape {:?}", assigned.dims());
    };
    if proposals.dims() != [p, 4] {
        bail!("{OP}: proposals must be [P, 4] = [{p}, 4], got shape {:?}", proposals.dims());
    }
    if mask_size == 0 {
        bail!("{OP}: mask_size must be positive");
    }
    if assigned.dtype().is_float() {
        bail!("{OP}: assigned gt indices must be an integer tensor, got {:?}", assigned.dtype());
    }
    if !proposals.dtype().is_float() {
        bail!("{OP}: proposals must be a float tensor, got {:?}", proposals.dtype());
    }
    let device = proposals.device().clone();
    if p == 0 {
        return Tensor::zeros((0, mask_size, mask_size), DType::F32, &device);
    }
    let inds = assigned.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    if let Some(bad) = inds.iter().find(|&&i| i < 0 || i as usize >= g) {
        bail!("{OP}: assigned gt index {bad} is out of range for {g} ground-truth masks");
    }
    let boxes = proposals.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let masks = if gt_masks.dtype() == DType::U8 { gt_masks.clone() } else { gt_masks.ne(0f64)? };
    let masks = masks.to_device(&Device::Cpu)?.contiguous()?;
    let (storage, layout) = masks.storage_and_layout();
    let bits: &[u8] = match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::U8(v)), Some((a, b))) => &v[a..b],
        _ => bail!("{OP}: could not read the ground-truth masks as contiguous u8"),
    };
    let m = mask_size;
    let mut out = vec![0f32; p * m * m];
    out.par_chunks_mut(m * m).enumerate().for_each(|(i, dst)| {
        let gi = inds[i] as usize;
        let b = &boxes[4 * i..4 * i + 4];
        let clip = |v: f32, hi: usize| if v.is_nan() { 0.0 } else { v.clamp(0.0, hi as f32) };
        let rb = [clip(b[0], w), clip(b[1], h), clip(b[2], w), clip(b[3], h)];
        roi_align_bitmap(dst, &bits[gi * h * w..(gi + 1) * h * w], h, w, rb, m);
    });
    drop(storage);
    Tensor::from_vec(out, (p, m, m), &device)
}

/// One RoIAlign sample position along an axis (torchvision/mmcv `bilinear_interpolate`): rows
/// or columns `lo`, `hi` with weights `1 - l` and `l`; `valid == false` for a sample outside
/// `[-1, size]`, which contributes zero.
#[derive(Clone, Copy)]
struct Sample {
    lo: usize,
    hi: usize,
    l: f32,
    h: f32,
    valid: bool,
}

/// The sample positions of bins `0..m` along one axis, `grid` per bin, bin after bin.
fn roi_samples(start: f32, bin: f32, grid: usize, m: usize, size: usize) -> Vec<Sample> {
    let mut out = Vec::with_capacity(m * grid);
    for pb in 0..m {
        for i in 0..grid {
            let mut v = start + pb as f32 * bin + (i as f32 + 0.5) * bin / grid as f32;
            if v < -1.0 || v > size as f32 {
                out.push(Sample { lo: 0, hi: 0, l: 0.0, h: 0.0, valid: false });
                continue;
            }
            if v <= 0.0 {
                v = 0.0;
            }
            let mut lo = v as usize;
            let hi;
            if lo >= size - 1 {
                lo = size - 1;
                hi = size - 1;
                v = lo as f32;
            } else {
                hi = lo + 1;
            }
            let l = v - lo as f32;
            out.push(Sample { lo, hi, l, h: 1.0 - l, valid: true });
        }
    }
    out
}

/// RoIAlign (avg, aligned=True, adaptive sampling, scale 1) of one `h x w` 0/1 bitmap over
/// `roi = [x0, y0, x1, y1]` into `dst: [m, m]`, in torchvision's order of `f32` operations.
fn roi_align_bitmap(dst: &mut [f32], bits: &[u8], h: usize, w: usize, roi: [f32; 4], m: usize) {
    let (start_w, start_h) = (roi[0] - 0.5, roi[1] - 0.5);
    let (roi_w, roi_h) = ((roi[2] - 0.5) - start_w, (roi[3] - 0.5) - start_h);
    let (bin_w, bin_h) = (roi_w / m as f32, roi_h / m as f32);
    let grid = |roi: f32| {
        let g = (roi / m as f32).ceil();
        if g > 0.0 {
            g as usize
        } else {
            0
        }
    };
    let (grid_h, grid_w) = (grid(roi_h), grid(roi_w));
    let count = (grid_h * grid_w).max(1) as f32;
    let ys = roi_samples(start_h, bin_h, grid_h, m, h);
    let xs = roi_samples(start_w, bin_w, grid_w, m, w);
    let px = |y: usize, x: usize| if bits[y * w + x] != 0 { 1f32 } else { 0f32 };
    for ph in 0..m {
        for pw in 0..m {
            let mut acc = 0f32;
            for sy in &ys[ph * grid_h..(ph + 1) * grid_h] {
                for sx in &xs[pw * grid_w..(pw + 1) * grid_w] {
                    if !(sy.valid && sx.valid) {
                        continue;
                    }
                    let (w1, w2, w3, w4) = (sy.h * sx.h, sy.h * sx.l, sy.l * sx.h, sy.l * sx.l);
                    acc +=
                        w1 * px(sy.lo, sx.lo) + w2 * px(sy.lo, sx.hi) + w3 * px(sy.hi, sx.lo) + w4 * px(sy.hi, sx.hi);
                }
            }
            dst[ph * m + pw] = acc / count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_follows_skip_empty() {
        let w = MaskWindow::for_box([10.3, 5.0, 20.7, 9.5], 30, 40);
        assert_eq!(w, MaskWindow { y0: 4, y1: 11, x0: 9, x1: 22 });
        assert!(MaskWindow::for_box([50.0, 5.0, 60.0, 9.0], 30, 40).is_empty());
        assert!(MaskWindow::for_box([-9.0, -9.0, -5.0, -5.0], 30, 40).is_empty());
        assert!(MaskWindow::for_box([f32::NAN, 0.0, 5.0, 5.0], 30, 40).is_empty());
    }

    #[test]
    fn rle_of_dense_matches_window_walk() {
        let m = BinaryMask {
            height: 4,
            width: 3,
            window: MaskWindow { y0: 1, y1: 3, x0: 1, x1: 3 },
            data: vec![1, 0, 1, 1],
        };
        // column-major image: col0 0000, col1 0100, col2 0110
        assert_eq!(m.to_rle().counts, vec![5, 1, 3, 2, 1]);
        assert_eq!(m.to_dense(), vec![0, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(m.area(), 3);
        let empty = BinaryMask { height: 2, width: 2, window: MaskWindow::default(), data: vec![] };
        assert_eq!(empty.to_rle().counts, vec![4]);
    }
}
