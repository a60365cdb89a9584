//! Reordering rows by a one-to-one map, with padding rows of zeros, forward and backward in one
//! parallel pass each: Swin's window partition (pad, cyclic shift, cut into windows), its
//! reverse (merge, shift back, crop) and patch merging's 2x2 gather are all such maps over the
//! token rows of a channels-last `[N, H, W, C]` tensor.
//!
//! Done with candle ops the same step is a pad (a concatenation), a roll (two narrows and a
//! concatenation), a reshape and a permute made contiguous: several single-threaded copies each
//! way. A [`RowMap`] is built once per feature-map size and shared by every block of a stage.
//! Because the map is one-to-one, the gradient of a gather is the gather by the inverse map, so
//! the backward pass is the same kernel.

use crate::cpu::as_f32;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Marks an output row that is zero padding (no source row).
pub const PAD: u32 = u32::MAX;

/// A one-to-one map from the rows of an input (`rows_in` of them) to the rows of an output:
/// output row `i` is input row `src[i]`, or zeros for [`PAD`]. No input row is used twice;
/// input rows not used by any output row are dropped (their gradient is zero).
#[derive(Debug, Clone)]
pub struct RowMap {
    src: Vec<u32>,
    inverse: Vec<u32>,
}

impl RowMap {
    /// Checks that `src` is one-to-one into `0..rows_in` and builds the inverse map.
    pub fn new(src: Vec<u32>, rows_in: usize) -> Result<Self> {
        if rows_in >= PAD as usize || src.len() >= PAD as usize {
            bail!("RowMap: {rows_in} input / {} output rows do not fit 32-bit indices", src.len());
        }
        let mut inverse = vec![PAD; rows_in];
        for (i, &s) in src.iter().enumerate() {
            if s == PAD {
                continue;
            }
            match inverse.get_mut(s as usize) {
                Some(slot) if *slot == PAD => *slot = i as u32,
                Some(_) => bail!("RowMap: input row {s} is used twice"),
                None => bail!("RowMap: input row {s} is out of range (0..{rows_in})"),
            }
        }
        Ok(Self { src, inverse })
    }

    /// Rows of the input the map reads from.
    pub fn rows_in(&self) -> usize {
        self.inverse.len()
    }

    /// Rows of the output.
    pub fn rows_out(&self) -> usize {
        self.src.len()
    }

    /// `src[i]` for each output row (`PAD` for zeros).
    pub fn sources(&self) -> &[u32] {
        &self.src
    }
}

/// `x: [rows_in, ...]` to `[rows_out, ...]` by `map` (dimension 0 reordered, the rest of each
/// row copied). Differentiable.
pub fn gather_rows(x: &Tensor, map: &Arc<RowMap>) -> Result<Tensor> {
    apply(x, map, false)
}

/// The inverse of [`gather_rows`] on the rows it keeps: `y: [rows_out, ...]` to
/// `[rows_in, ...]`, input row `r` taken from the output row that read it, zeros for input
/// rows the map drops (padding rows of `y` are dropped). Differentiable.
pub fn scatter_rows(y: &Tensor, map: &Arc<RowMap>) -> Result<Tensor> {
    apply(y, map, true)
}

fn apply(x: &Tensor, map: &Arc<RowMap>, inverse: bool) -> Result<Tensor> {
    let rows = x.dim(0)?;
    let (want, name) = if inverse { (map.rows_out(), "scatter_rows") } else { (map.rows_in(), "gather_rows") };
    if rows != want {
        bail!("{name}: input {:?} has {rows} rows, the map expects {want}", x.dims());
    }
    x.contiguous()?.apply_op1(GatherRows { map: map.clone(), inverse })
}

/// The op: gather by `map.src` (or by `map.inverse` when `inverse`).
#[derive(Clone)]
struct GatherRows {
    map: Arc<RowMap>,
    inverse: bool,
}

impl CustomOp1 for GatherRows {
    fn name(&self) -> &'static str {
        "gather-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s, l)?;
        let index = if self.inverse { &self.map.inverse } else { &self.map.src };
        let mut dims = l.dims().to_vec();
        let width: usize = dims[1..].iter().product();
        dims[0] = index.len();
        let total = index.len() * width;
        let mut out = Vec::<f32>::with_capacity(total);
        if width > 0 {
            let rows_per_task = (1usize << 14).div_ceil(width).max(1);
            out.spare_capacity_mut()[..total]
                .par_chunks_mut(width * rows_per_task)
                .zip(index.par_chunks(rows_per_task))
                .for_each(|(o, idx)| {
                    for (row, &s) in o.chunks_exact_mut(width).zip(idx) {
                        if s == PAD {
                            row.iter_mut().for_each(|v| {
                                v.write(0.0);
                            });
                        } else {
                            let s = s as usize;
                            row.iter_mut().zip(&x[s * width..(s + 1) * width]).for_each(|(v, &xv)| {
                                v.write(xv);
                            });
                        }
                    }
                });
        }
        // SAFETY: every row of the output was written above (copied or zeroed).
        unsafe { out.set_len(total) };
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = GatherRows { map: self.map.clone(), inverse: !self.inverse };
        Ok(Some(grad.contiguous()?.apply_op1(op)?))
    }
}
