//! Non-maximum suppression: plain, batched by class or level id, and the score-threshold and
//! top-k helpers around it.
//!
//! Semantics are torchvision's CPU `nms` (which mmcv's `batched_nms` calls in effect):
//! boxes are visited by descending score, ties in input order (a stable sort, NaN scores first
//! as in torch); a box is kept unless a kept box overlaps it with IoU **strictly greater** than
//! the threshold; IoU is `inter / (area_i + area_j - inter)` in `f32` without `+1`, computed in
//! the same order as torchvision so the kept indices are identical, bit for bit. Boxes with an
//! empty union (zero-size) never suppress or get suppressed.
//!
//! The kernel sorts once (packed `(score key, index)` integers), stores the boxes as coordinate
//! columns in score order and computes areas once. Two exact strategies share the IoU test:
//! - a spatial grid (threshold > 0, 2048 boxes or more): `IoU > t` bounds how far apart two
//!   boxes' corners can be, so each kept box only sweeps the few grid cells near it, from each
//!   cell's first undecided box (see `grid_nms`);
//! - a blocked sweep (everything else): candidates are decided one by one in blocks of `BLOCK`,
//!   then every box kept in the block sweeps the rest of the list at once, in cache-sized chunks
//!   spread over rayon's threads.
//!
//! Both sweeps are branch-free loops over the columns that the compiler vectorizes (AVX2 and
//! AVX-512 builds via `multiversion!`), and suppressed boxes are compacted out when they make up
//! half of what remains, so later sweeps read only live candidates.

use crate::boxes::Boxes;
use crate::cpu::multiversion;
use candle_core::{bail, DType, Device, Result, Tensor};
use rayon::prelude::*;

/// Candidates decided one by one before their kept boxes sweep the rest of the list together.
const BLOCK: usize = 256;
/// Candidates per parallel task of a sweep (5 columns of this many floats stay in L1/L2).
const CHUNK: usize = 2048;
/// From this many boxes on, NMS at a positive threshold uses the spatial grid (below it the
/// plain sweep is as fast).
const GRID_MIN_BOXES: usize = 2048;

/// A `u32` that orders like `s` in torch's descending sort, reversed: smaller key = earlier.
/// All NaNs are largest (so first), and `-0.0` equals `0.0`.
#[inline]
fn descending_key(s: f32) -> u32 {
    let s = if s == 0.0 { 0.0 } else { s };
    let bits = s.to_bits();
    let ascending = if s.is_nan() {
        u32::MAX
    } else if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    !ascending
}

/// Indices of `scores` sorted by descending score, ties by ascending index (torch's stable
/// descending sort). Sorts `(key, index)` pairs packed in a `u64`, which is much faster than a
/// comparison sort through the indices.
pub fn argsort_descending(scores: &[f32]) -> Vec<usize> {
    if scores.len() >= u32::MAX as usize {
        // Too many to pack an index in 32 bits: a stable comparison sort on the keys.
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.par_sort_by_key(|&i| descending_key(scores[i]));
        return order;
    }
    sort_subset(scores, 0..scores.len())
}

/// `(key, index)` packed so that sorting the `u64`s sorts by descending score, then index.
#[inline]
fn pack(scores: &[f32], i: usize) -> u64 {
    ((descending_key(scores[i]) as u64) << 32) | i as u64
}

/// The indices `members` sorted as [`argsort_descending`] sorts all of them.
fn sort_subset(scores: &[f32], members: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut packed: Vec<u64> = members.map(|i| pack(scores, i)).collect();
    if packed.len() > 1 << 15 {
        packed.par_sort_unstable();
    } else {
        packed.sort_unstable();
    }
    packed.into_iter().map(|p| (p & 0xFFFF_FFFF) as usize).collect()
}

/// The largest `f32` not above `thr`: `ovr > thr` (an `f32` compared as `f64`, as torchvision
/// does) is then the same test as `ovr > f32_floor(thr)` entirely in `f32`.
pub(crate) fn f32_floor(thr: f64) -> f32 {
    let t = thr as f32;
    if (t as f64) > thr {
        f32::from_bits(if t > 0.0 {
            t.to_bits() - 1
        } else if t == 0.0 {
            0x8000_0001
        } else {
            t.to_bits() + 1
        })
    } else {
        t
    }
}

/// Live candidates as coordinate columns in score order, plus each one's input index.
struct Candidates {
    x1: Vec<f32>,
    y1: Vec<f32>,
    x2: Vec<f32>,
    y2: Vec<f32>,
    area: Vec<f32>,
    index: Vec<usize>,
    suppressed: Vec<u8>,
}

impl Candidates {
    fn new(xyxy: &[f32], order: &[usize]) -> Self {
        let n = order.len();
        let mut c = Candidates {
            x1: Vec::with_capacity(n),
            y1: Vec::with_capacity(n),
            x2: Vec::with_capacity(n),
            y2: Vec::with_capacity(n),
            area: Vec::with_capacity(n),
            index: order.to_vec(),
            suppressed: vec![0; n],
        };
        for &i in order {
            let b = &xyxy[4 * i..4 * i + 4];
            c.x1.push(b[0]);
            c.y1.push(b[1]);
            c.x2.push(b[2]);
            c.y2.push(b[3]);
            c.area.push((b[2] - b[0]) * (b[3] - b[1]));
        }
        c
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// The box at `i` as `[x1, y1, x2, y2, area]`.
    fn get(&self, i: usize) -> [f32; 5] {
        [self.x1[i], self.y1[i], self.x2[i], self.y2[i], self.area[i]]
    }

    /// Drops suppressed candidates at positions `from..`, keeping the order.
    fn compact(&mut self, from: usize) {
        let mut w = from;
        for r in from..self.len() {
            if self.suppressed[r] == 0 {
                self.x1[w] = self.x1[r];
                self.y1[w] = self.y1[r];
                self.x2[w] = self.x2[r];
                self.y2[w] = self.y2[r];
                self.area[w] = self.area[r];
                self.index[w] = self.index[r];
                self.suppressed[w] = 0;
                w += 1;
            }
        }
        for v in [&mut self.x1, &mut self.y1, &mut self.x2, &mut self.y2, &mut self.area] {
            v.truncate(w);
        }
        self.index.truncate(w);
        self.suppressed.truncate(w);
    }
}

/// `std::max(0, v)` of the C++ reference: `0 < v ? v : 0`.
#[inline(always)]
fn pos(v: f32) -> f32 {
    if 0.0 < v {
        v
    } else {
        0.0
    }
}

/// Column slices of equal length: corners and areas of a run of candidates.
#[derive(Clone, Copy)]
struct Cols<'a> {
    x1: &'a [f32],
    y1: &'a [f32],
    x2: &'a [f32],
    y2: &'a [f32],
    area: &'a [f32],
}

impl<'a> Cols<'a> {
    /// The candidates `r` of columns `x1, y1, x2, y2, area`.
    fn of(c: [&'a [f32]; 5], r: std::ops::Range<usize>) -> Self {
        Cols { x1: &c[0][r.clone()], y1: &c[1][r.clone()], x2: &c[2][r.clone()], y2: &c[3][r.clone()], area: &c[4][r] }
    }
}

multiversion! {
    /// Marks the candidates of `c` whose IoU with box `b` (`[x1, y1, x2, y2, area]`) is above
    /// `thr` in `sup`; returns how many were newly marked.
    fn suppress(sup: &mut [u8], c: Cols<'_>, b: [f32; 5], thr: f32) -> usize {
        let n = sup.len();
        let (x1, y1, x2, y2, area) = (&c.x1[..n], &c.y1[..n], &c.x2[..n], &c.y2[..n], &c.area[..n]);
        let mut newly = 0u32;
        for j in 0..n {
            let xx1 = if b[0] < x1[j] { x1[j] } else { b[0] };
            let yy1 = if b[1] < y1[j] { y1[j] } else { b[1] };
            let xx2 = if x2[j] < b[2] { x2[j] } else { b[2] };
            let yy2 = if y2[j] < b[3] { y2[j] } else { b[3] };
            let inter = pos(xx2 - xx1) * pos(yy2 - yy1);
            let ovr = inter / (b[4] + area[j] - inter);
            let hit = (ovr > thr) as u8;
            newly += (hit & (sup[j] ^ 1)) as u32;
            sup[j] |= hit;
        }
        newly as usize
    }
}

/// Sweeps positions `from..to` with each box of `kept` (positions before `from`); returns how
/// many candidates were newly suppressed.
fn sweep(c: &mut Candidates, kept: &[usize], from: usize, to: usize, thr: f32) -> usize {
    let boxes: Vec<[f32; 5]> = kept.iter().map(|&k| c.get(k)).collect();
    let Candidates { x1, y1, x2, y2, area, suppressed, .. } = c;
    let cols = [&x1[from..to], &y1[from..to], &x2[from..to], &y2[from..to], &area[from..to]];
    let sup = &mut suppressed[from..to];
    let run = |(ci, s): (usize, &mut [u8])| {
        let part = Cols::of(cols, ci * CHUNK..ci * CHUNK + s.len());
        boxes.iter().map(|&b| suppress(s, part, b, thr)).sum::<usize>()
    };
    if boxes.len() * sup.len() < 1 << 17 {
        sup.chunks_mut(CHUNK).enumerate().map(run).sum()
    } else {
        sup.par_chunks_mut(CHUNK).enumerate().map(run).sum()
    }
}

/// Greedy NMS over boxes already in score order; returns kept input indices in that order.
/// Uses the spatial grid when it prunes well, else the blocked sweep over all candidates.
fn nms_ordered(xyxy: &[f32], order: &[usize], iou_thr: f64) -> Vec<usize> {
    match grid_nms(xyxy, order, iou_thr) {
        Some(keep) => keep,
        None => sweep_nms(xyxy, order, iou_thr),
    }
}

/// Blocked greedy NMS that tests every later candidate (any threshold, any coordinates).
fn sweep_nms(xyxy: &[f32], order: &[usize], iou_thr: f64) -> Vec<usize> {
    let thr = f32_floor(iou_thr);
    let mut c = Candidates::new(xyxy, order);
    let mut keep = Vec::new();
    let mut start = 0;
    // Suppressed candidates still stored at positions `start..` (compacted away when many).
    let mut dead = 0usize;
    while start < c.len() {
        let end = (start + BLOCK).min(c.len());
        let mut kept = Vec::new();
        for i in start..end {
            if c.suppressed[i] != 0 {
                dead -= 1;
                continue;
            }
            keep.push(c.index[i]);
            kept.push(i);
            dead += sweep(&mut c, &[i], i + 1, end, thr);
        }
        let len = c.len();
        dead += sweep(&mut c, &kept, end, len, thr);
        start = end;
        if dead > CHUNK && 2 * dead > c.len() - start {
            c.compact(start);
            dead = 0;
        }
    }
    keep
}

/// One cell of the spatial index: the boxes whose top-left corner falls in it, in score order,
/// as columns, with the rank (position in score order) of each.
#[derive(Default)]
struct Cell {
    x1: Vec<f32>,
    y1: Vec<f32>,
    x2: Vec<f32>,
    y2: Vec<f32>,
    area: Vec<f32>,
    rank: Vec<u32>,
    sup: Vec<u8>,
    /// First member not yet decided (all before it have a rank at or below the current box).
    cursor: usize,
    /// Members marked suppressed since the last compaction (a heuristic count).
    dead: usize,
}

/// `loc` value of a box that was suppressed and compacted out of its cell.
const GONE: u32 = u32::MAX;

impl Cell {
    fn push(&mut self, b: &[f32], rank: u32) {
        self.x1.push(b[0]);
        self.y1.push(b[1]);
        self.x2.push(b[2]);
        self.y2.push(b[3]);
        self.area.push((b[2] - b[0]) * (b[3] - b[1]));
        self.rank.push(rank);
        self.sup.push(0);
    }

    /// Drops suppressed members after the cursor, updating `loc` (rank -> index in the cell).
    fn compact(&mut self, loc: &mut [u32]) {
        let mut w = self.cursor;
        for r in self.cursor..self.rank.len() {
            let rank = self.rank[r] as usize;
            if self.sup[r] == 0 {
                self.x1[w] = self.x1[r];
                self.y1[w] = self.y1[r];
                self.x2[w] = self.x2[r];
                self.y2[w] = self.y2[r];
                self.area[w] = self.area[r];
                self.rank[w] = self.rank[r];
                self.sup[w] = 0;
                loc[rank] = w as u32;
                w += 1;
            } else {
                loc[rank] = GONE;
            }
        }
        for v in [&mut self.x1, &mut self.y1, &mut self.x2, &mut self.y2, &mut self.area] {
            v.truncate(w);
        }
        self.rank.truncate(w);
        self.sup.truncate(w);
        self.dead = 0;
    }
}

/// Greedy NMS that only tests candidates near each kept box, or `None` when that would not
/// prune enough to pay (or cannot be used: threshold `<= 0`, non-finite coordinates).
///
/// For a threshold `t > 0`, `IoU(a, b) > t` needs the x-overlap `ow` to exceed
/// `t * max(wa, wb)` (the intersection is at most `ow` times the smaller height, the union at
/// least the larger area); as `ow <= min(wa, wb)`, also `wb < wa / t`, and so
/// `|x1a - x1b| < (1 - t) * min(wa / t, max width)`; the same holds in y. Boxes are binned by
/// their top-left corner into cells of half the widest such window, and a kept box sweeps only
/// the cells within its own window (slightly widened for rounding), from each cell's first
/// undecided member.
/// The IoU test itself is the exact one, so the result equals the full sweep's. Empty and
/// inverted boxes (zero intersection with everything) can neither suppress nor be suppressed
/// at `t > 0`, so they are kept without entering the grid.
fn grid_nms(xyxy: &[f32], order: &[usize], iou_thr: f64) -> Option<Vec<usize>> {
    if iou_thr.is_nan() || iou_thr <= 0.0 || order.len() < GRID_MIN_BOXES || order.len() >= u32::MAX as usize {
        return None;
    }
    let (mut wmax, mut hmax, mut amax) = (0f32, 0f32, 0f32);
    let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
    for &i in order {
        let b = &xyxy[4 * i..4 * i + 4];
        if !b.iter().all(|v| v.is_finite()) {
            return None;
        }
        amax = amax.max(b.iter().fold(0f32, |m, v| m.max(v.abs())));
        let (w, h) = (b[2] - b[0], b[3] - b[1]);
        if w > 0.0 && h > 0.0 {
            (wmax, hmax) = (wmax.max(w), hmax.max(h));
            (lo[0], lo[1], hi[0], hi[1]) = (lo[0].min(b[0]), lo[1].min(b[1]), hi[0].max(b[0]), hi[1].max(b[1]));
        }
    }
    if wmax == 0.0 {
        return Some(order.to_vec()); // no box with an area: nothing overlaps
    }
    // A threshold a little below `t` and a little extra width cover rounding in the f32 IoU.
    let t = (iou_thr.min(1.0) * (1.0 - 1e-4) - 1e-6) as f32;
    if t <= 0.0 {
        return None;
    }
    let pad = 1e-5 * amax + 1e-3;
    // The window of a box of width `w`: `(1 - t) * min(w / t, wmax)`; the widest window is for
    // the widest box.
    let window = move |w: f32, max: f32| (1.0 - t) * (w / t).min(max) * (1.0 + 1e-4) + pad;
    let win = [window(wmax, wmax), window(hmax, hmax)];
    let extent = [hi[0] - lo[0], hi[1] - lo[1]];
    // Cells half the widest window, holding 8 boxes on average or more.
    let mut cell = [win[0] / 2.0, win[1] / 2.0];
    let count = |c: [f32; 2]| [(extent[0] / c[0]) as usize + 1, (extent[1] / c[1]) as usize + 1];
    let mut dims = count(cell);
    let limit = (order.len() / 8).max(1);
    if dims[0] * dims[1] > limit {
        let f = ((dims[0] * dims[1]) as f32 / limit as f32).sqrt();
        cell = [cell[0] * f, cell[1] * f];
        dims = count(cell);
    }
    // The share of boxes a kept box sweeps, for uniformly spread corners.
    let share = |a: usize| ((2.0 * win[a] + cell[a]) / (extent[a] + cell[a])).min(1.0);
    if share(0) * share(1) > 0.5 {
        return None;
    }
    let bin = |v: f32, a: usize| (((v - lo[a]) / cell[a]).floor().max(0.0) as usize).min(dims[a] - 1);
    let mut cells: Vec<Cell> = (0..dims[0] * dims[1]).map(|_| Cell::default()).collect();
    const NONE: u32 = u32::MAX;
    let mut cell_of = vec![NONE; order.len()];
    let mut loc = vec![0u32; order.len()];
    for (r, &i) in order.iter().enumerate() {
        let b = &xyxy[4 * i..4 * i + 4];
        if b[2] - b[0] > 0.0 && b[3] - b[1] > 0.0 {
            let c = bin(b[1], 1) * dims[0] + bin(b[0], 0);
            cell_of[r] = c as u32;
            loc[r] = cells[c].rank.len() as u32;
            cells[c].push(b, r as u32);
        }
    }
    let thr = f32_floor(iou_thr);
    let mut keep = Vec::new();
    for (r, &i) in order.iter().enumerate() {
        if cell_of[r] == NONE {
            keep.push(i);
            continue;
        }
        let (c, l) = (cell_of[r] as usize, loc[r]);
        if l == GONE || cells[c].sup[l as usize] != 0 {
            continue;
        }
        keep.push(i);
        let own = &cells[c];
        let l = l as usize;
        let b = [own.x1[l], own.y1[l], own.x2[l], own.y2[l], own.area[l]];
        let (wx, wy) = (window(b[2] - b[0], wmax), window(b[3] - b[1], hmax));
        for cy in bin(b[1] - wy, 1)..=bin(b[1] + wy, 1) {
            for cx in bin(b[0] - wx, 0)..=bin(b[0] + wx, 0) {
                let cell = &mut cells[cy * dims[0] + cx];
                while cell.cursor < cell.rank.len() && cell.rank[cell.cursor] as usize <= r {
                    cell.cursor += 1;
                }
                let s = cell.cursor;
                if s == cell.rank.len() {
                    continue;
                }
                let Cell { x1, y1, x2, y2, area, sup, .. } = cell;
                let part = Cols::of([x1, y1, x2, y2, area], s..sup.len());
                cell.dead += suppress(&mut sup[s..], part, b, thr);
                if cell.dead > 32 && 2 * cell.dead > cell.rank.len() - s {
                    cell.compact(&mut loc);
                }
            }
        }
    }
    Some(keep)
}

/// [`nms_slices`] through the spatial grid only; `None` where the grid declines (tests).
#[doc(hidden)]
pub fn nms_slices_grid(xyxy: &[f32], scores: &[f32], iou_thr: f64) -> Result<Option<Vec<usize>>> {
    check_slices("nms", xyxy, scores.len())?;
    Ok(grid_nms(xyxy, &argsort_descending(scores), iou_thr))
}

/// [`nms_slices`] forced onto the full sweep (no spatial grid), for tests and benchmarks.
#[doc(hidden)]
pub fn nms_slices_sweep(xyxy: &[f32], scores: &[f32], iou_thr: f64) -> Result<Vec<usize>> {
    check_slices("nms", xyxy, scores.len())?;
    Ok(sweep_nms(xyxy, &argsort_descending(scores), iou_thr))
}

/// Kept indices of `boxes: [N, 4]` (xyxy, `f32`) after NMS at `iou_thr`, by descending score.
///
/// `scores` is `[N]` `f32`. Empty input gives an empty list. See the module doc for the exact
/// semantics (torchvision's CPU `nms`).
pub fn nms(boxes: &Boxes, scores: &Tensor, iou_thr: f64) -> Result<Vec<usize>> {
    let s = scores_vec("nms", scores, boxes.len())?;
    #[cfg(feature = "cuda")]
    if boxes.tensor().device().is_cuda() {
        return crate::cuda::nms_sorted(boxes.tensor(), &argsort_descending(&s), f32_floor(iou_thr));
    }
    nms_slices(&boxes.to_vec()?, &s, iou_thr)
}

/// [`nms`] on plain slices: `xyxy` holds `4 * N` coordinates, `scores` N values.
pub fn nms_slices(xyxy: &[f32], scores: &[f32], iou_thr: f64) -> Result<Vec<usize>> {
    check_slices("nms", xyxy, scores.len())?;
    Ok(nms_ordered(xyxy, &argsort_descending(scores), iou_thr))
}

/// Checks that `xyxy` holds `4 * n` coordinates and that `n` indices fit the packed sort keys.
fn check_slices(op: &str, xyxy: &[f32], n: usize) -> Result<()> {
    if xyxy.len() != 4 * n {
        bail!("{op}: {} coordinates for {n} scores (need 4 per box)", xyxy.len());
    }
    if n >= u32::MAX as usize {
        bail!("{op}: {n} boxes is more than this implementation supports (2^32 - 1)");
    }
    Ok(())
}

/// The `[n]` scores as `f32` values, or an error naming `op` when the shape does not fit.
fn scores_vec(op: &str, scores: &Tensor, n: usize) -> Result<Vec<f32>> {
    match scores.dims() {
        &[m] if m == n => scores.to_dtype(DType::F32)?.to_vec1::<f32>(),
        dims => bail!("{op}: scores must be [{n}] to match the boxes, got {dims:?}"),
    }
}

/// Options of [`batched_nms`], mmcv's `nms_cfg` for `batched_nms`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchedNmsOpts {
    /// IoU above which a lower-scored box of the same id is suppressed.
    pub iou_thr: f64,
    /// Ignore the ids: one NMS over all boxes.
    pub class_agnostic: bool,
    /// From this many boxes on, run one NMS per id instead of one over offset boxes
    /// (mmcv's `split_thr`, default 10000).
    pub split_thr: usize,
}

impl BatchedNmsOpts {
    /// Per-id NMS at `iou_thr` with mmcv's defaults (`split_thr` 10000, not class-agnostic).
    pub fn new(iou_thr: f64) -> Self {
        Self { iou_thr, class_agnostic: false, split_thr: 10_000 }
    }
}

/// NMS applied independently to the boxes of each id (a class label in the R-CNN
/// post-processing, a pyramid level in the RPN), mmcv's `batched_nms`.
///
/// `idxs` is an `[N]` integer tensor. Below `split_thr` boxes this is one NMS over boxes moved
/// apart by `id * (max_coordinate + 1)`, in `f32` exactly as mmcv and torchvision compute it
/// (so IoUs, and the kept set, match theirs bit for bit); from `split_thr` boxes on it runs one
/// NMS per id, in parallel, and merges by descending score (ties by input index; torchvision's
/// and mmcv's unstable merge sort leaves that order unspecified). Returns the kept input
/// indices sorted by descending score. Like mmcv's, the offset only separates the ids when no
/// coordinate is below `-1` (boxes in image coordinates); a `class_agnostic` run ignores the ids.
pub fn batched_nms(boxes: &Boxes, scores: &Tensor, idxs: &Tensor, opts: &BatchedNmsOpts) -> Result<Vec<usize>> {
    let n = boxes.len();
    let s = scores_vec("batched_nms", scores, n)?;
    let ids = match idxs.dims() {
        &[m] if m == n => idxs.to_dtype(DType::I64)?.to_vec1::<i64>()?,
        dims => bail!("batched_nms: idxs must be [{n}] to match the boxes, got {dims:?}"),
    };
    #[cfg(feature = "cuda")]
    if boxes.tensor().device().is_cuda() && n > 0 && n < opts.split_thr {
        // The one-pass path with the offsets added on the device, as the host path adds them.
        let xyxy = boxes.tensor().to_dtype(DType::F32)?;
        let shifted = if opts.class_agnostic {
            xyxy
        } else {
            let step = (xyxy.flatten_all()?.max(0)? + 1.0)?;
            let ids = Tensor::from_iter(ids.iter().map(|&id| id as f32), xyxy.device())?;
            xyxy.broadcast_add(&ids.broadcast_mul(&step)?.unsqueeze(1)?)?
        };
        return crate::cuda::nms_sorted(&shifted, &argsort_descending(&s), f32_floor(opts.iou_thr));
    }
    batched_nms_slices(&boxes.to_vec()?, &s, &ids, opts)
}

/// [`batched_nms`] on plain slices: `xyxy` holds `4 * N` coordinates, `scores` and `ids` N.
pub fn batched_nms_slices(xyxy: &[f32], scores: &[f32], ids: &[i64], opts: &BatchedNmsOpts) -> Result<Vec<usize>> {
    let n = scores.len();
    check_slices("batched_nms", xyxy, n)?;
    if ids.len() != n {
        bail!("batched_nms: {} ids for {n} boxes", ids.len());
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    if opts.class_agnostic {
        return nms_slices(xyxy, scores, opts.iou_thr);
    }
    let max = xyxy.iter().fold(f32::NEG_INFINITY, |m, &v| if m < v { v } else { m });
    let step = max + 1.0;
    let shifted: Vec<f32> =
        xyxy.chunks_exact(4).zip(ids).flat_map(|(b, &id)| b.iter().map(move |&v| v + id as f32 * step)).collect();
    if n < opts.split_thr {
        return nms_slices(&shifted, scores, opts.iou_thr);
    }
    let mut groups: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for (i, &id) in ids.iter().enumerate() {
        groups.entry(id).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = groups.into_values().collect();
    let keep: Vec<usize> = groups
        .par_iter()
        // mmcv runs each id's NMS on the offset boxes too, so the split path keeps the same
        // set as the one-pass path (the offsets change IoUs in the last bits).
        .flat_map_iter(|members| nms_ordered(&shifted, &sort_subset(scores, members.iter().copied()), opts.iou_thr))
        .collect();
    Ok(sort_subset(scores, keep.into_iter()))
}

/// Indices with `score > thr` (strictly, mmdet's `score_thr`), in input order.
pub fn score_filter(scores: &[f32], thr: f32) -> Vec<usize> {
    scores.iter().enumerate().filter(|(_, &s)| s > thr).map(|(i, _)| i).collect()
}

/// Indices of the `k` highest scores, by descending score, ties by input index (mmdet's
/// `topk(nms_pre)`); all of them, sorted, when `k >= N`. Linear selection then a sort of `k`.
pub fn top_k(scores: &[f32], k: usize) -> Result<Vec<usize>> {
    if scores.len() >= u32::MAX as usize {
        bail!("top_k: {} scores is more than this implementation supports (2^32 - 1)", scores.len());
    }
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut packed: Vec<u64> = (0..scores.len()).map(|i| pack(scores, i)).collect();
    if k < packed.len() {
        packed.select_nth_unstable(k - 1);
        packed.truncate(k);
    }
    packed.sort_unstable();
    Ok(packed.into_iter().map(|p| (p & 0xFFFF_FFFF) as usize).collect())
}

/// Indices as a `[K]` `u32` tensor, for `index_select` (fails if an index exceeds `u32`).
pub fn indices_tensor(idx: &[usize], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = idx
        .iter()
        .map(|&i| u32::try_from(i).map_err(|_| candle_core::Error::Msg(format!("index {i} does not fit u32"))))
        .collect::<Result<_>>()?;
    Tensor::from_vec(v, idx.len(), device)
}
