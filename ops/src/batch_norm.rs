//! Training-mode batch normalization (`F.batch_norm(training=True)`) as one op with a
//! hand-written backward.
//!
//! Built from candle's broadcast ops it costs about a dozen full-size passes, and the backward
//! of each broadcast sums over dimensions `N, H, W` with candle's per-element index division on
//! one thread; the Cascade box heads run it twice per stage on every sampled RoI. Here the
//! statistics are one pass per channel (in parallel over channels), the output one pass, and
//! the backward two.

use crate::cpu::as_f32;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use nextdet_dist::{Collective, ReduceOp};
use rayon::prelude::*;
use std::sync::Arc;

/// A batch's per-channel statistics, as PyTorch's training mode uses them.
#[derive(Clone, Debug)]
pub struct BatchStats {
    /// Mean of each channel over `N` and the spatial positions.
    pub mean: Tensor,
    /// Biased variance (divided by the count), which normalizes the batch; PyTorch's running
    /// variance takes the unbiased one (`var * count / (count - 1)`).
    pub var: Tensor,
    /// Values per channel (`N * H * W`).
    pub count: usize,
}

/// `(N, C, H * W)` of a training-mode batch norm's input, after checking that `weight` and
/// `bias` are `[C]`, that the input is `[N, C]` or `[N, C, H, W]` with channels, and that each
/// channel has more than one value. Shared by the CPU kernel and the device-generic path.
pub(crate) fn train_geometry(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<(usize, usize, usize)> {
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    if !(x.rank() == 2 || x.rank() == 4) || weight.dims() != [c] || bias.dims() != [c] {
        bail!("batch_norm_train: input {:?} with weight {:?} and bias {:?}", x.dims(), weight.dims(), bias.dims());
    }
    let spatial: usize = x.dims()[2..].iter().product();
    if n * spatial < 2 {
        bail!("batch norm: training needs more than one value per channel, got input {:?}", x.dims());
    }
    if c == 0 {
        bail!("batch_norm_train: input {:?} has no channels", x.dims());
    }
    Ok((n, c, spatial))
}

/// `(x - mean) / sqrt(var + eps) * weight + bias` with the batch's own statistics, for
/// `x: [N, C]` or `[N, C, H, W]` and `weight, bias: [C]`. Returns the output and the statistics
/// (for the running averages). Differentiable in `x`, `weight` and `bias`, the statistics
/// included, as PyTorch's training mode is. Needs at least two values per channel.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, BatchStats)> {
    if !crate::generic::fast_cpu(x) {
        return crate::generic::batch_norm_train(x, weight, bias, eps);
    }
    let (n, c, spatial) = train_geometry(x, weight, bias)?;
    let count = n * spatial;
    let geom = Geom { n, c, spatial };
    let x = x.contiguous()?;
    let packed = x.apply_op1_no_bwd(&ChannelStats { geom })?.to_vec1::<f32>()?;
    let (mean, var) = (packed[..c].to_vec(), packed[c..].to_vec());
    let inv_std: Vec<f32> = var.iter().map(|&v| 1.0 / (v as f64 + eps).sqrt() as f32).collect();
    let op = BatchNormTrain { geom, mean: Arc::new(mean.clone()), inv_std: Arc::new(inv_std), count, group: None };
    let y = x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    let stats =
        BatchStats { mean: Tensor::from_vec(mean, c, x.device())?, var: Tensor::from_vec(var, c, x.device())?, count };
    Ok((y, stats))
}

/// `[N, C, S]` with `S` the spatial positions (1 for `[N, C]`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) spatial: usize,
}

impl Geom {
    /// The contiguous runs of channel `ch`: one of `spatial` values per sample.
    pub(crate) fn runs<'a>(&self, data: &'a [f32], ch: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (c, s) = (self.c, self.spatial);
        (0..self.n).map(move |i| &data[(i * c + ch) * s..(i * c + ch + 1) * s])
    }
}

/// `x: [N, C, S] -> [mean; C] ++ [biased variance; C]`, two passes per channel (mean, then
/// squared deviations) accumulated in `f64`, channels in parallel.
struct ChannelStats {
    geom: Geom,
}

impl candle_core::CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "batch-norm-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s, l)?;
        let g = self.geom;
        let count = (g.n * g.spatial) as f64;
        let stats: Vec<(f32, f32)> = (0..g.c)
            .into_par_iter()
            .map(|ch| {
                let mean = g.runs(x, ch).map(|r| r.iter().map(|&v| v as f64).sum::<f64>()).sum::<f64>() / count;
                let var = g.runs(x, ch).map(|r| r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>()).sum::<f64>()
                    / count;
                (mean as f32, var as f32)
            })
            .collect();
        let (mean, var): (Vec<f32>, Vec<f32>) = stats.into_iter().unzip();
        Ok((CpuStorage::F32([mean, var].concat()), Shape::from(2 * g.c)))
    }
}

/// Forward op: `(x, weight, bias) -> y`, the statistics fixed at construction. With a `group`
/// (`SyncBN`), the statistics are the whole group's, `count` is the group's values per channel,
/// and the backward all-reduces its two per-channel sums (see [`BatchNormTrainGrad`]).
#[derive(Clone)]
pub(crate) struct BatchNormTrain {
    pub(crate) geom: Geom,
    pub(crate) mean: Arc<Vec<f32>>,
    pub(crate) inv_std: Arc<Vec<f32>>,
    pub(crate) count: usize,
    pub(crate) group: Option<Arc<dyn Collective>>,
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s1, l1)?;
        let w = as_f32(self.name(), s2, l2)?;
        let b = as_f32(self.name(), s3, l3)?;
        let (c, s) = (self.geom.c, self.geom.spatial);
        let scale: Vec<f32> = w.iter().zip(self.inv_std.iter()).map(|(w, i)| w * i).collect();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(c * s).zip(x.par_chunks(c * s)).for_each(|(yo, xi)| {
            for ch in 0..c {
                let (m, k, bb) = (self.mean[ch], scale[ch], b[ch]);
                for (y, &v) in yo[ch * s..(ch + 1) * s].iter_mut().zip(&xi[ch * s..(ch + 1) * s]) {
                    *y = (v - m) * k + bb;
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &BatchNormTrainGrad(self.clone()))?;
        let (len, c) = (x.elem_count(), self.geom.c);
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        let dw = packed.narrow(0, len, c)?;
        let db = packed.narrow(0, len + c, c)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Backward op: `(x, weight, dy) -> [dx, dweight, dbias]` packed flat. With `x̂` the
/// normalized input and `M` the count per channel: `dbias = Σ dy`, `dweight = Σ dy x̂`,
/// `dx = weight / σ · (dy - dbias / M - x̂ · dweight / M)`; the forward op's statistics.
///
/// `SyncBN` (torch `nn/modules/_functions.py`, `SyncBatchNorm.backward`): the two sums in `dx`
/// are all-reduced over the group and `M` is the group's count, while `dweight` and `dbias` stay
/// this rank's own sums (the data-parallel gradient average combines them, as for every other
/// parameter).
struct BatchNormTrainGrad(BatchNormTrain);

impl CustomOp3 for BatchNormTrainGrad {
    fn name(&self) -> &'static str {
        "batch-norm-train-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s1, l1)?;
        let w = as_f32(self.name(), s2, l2)?;
        let gy = as_f32(self.name(), s3, l3)?;
        let g = self.0.geom;
        let (c, s) = (g.c, g.spatial);
        let count = self.0.count as f64;
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (m, inv) = (self.0.mean[ch], self.0.inv_std[ch]);
                let (mut sdy, mut sdyx) = (0f64, 0f64);
                for (xr, gr) in g.runs(x, ch).zip(g.runs(gy, ch)) {
                    let (mut a, mut b) = (0f32, 0f32);
                    for (&v, &d) in xr.iter().zip(gr) {
                        a += d;
                        b += d * (v - m);
                    }
                    sdy += a as f64;
                    sdyx += b as f64 * inv as f64;
                }
                (sdy, sdyx)
            })
            .collect();
        let len = x.len();
        let mut packed = vec![0f32; len + 2 * c];
        let (dx, rest) = packed.split_at_mut(len);
        for (ch, &(sdy, sdyx)) in sums.iter().enumerate() {
            rest[ch] = sdyx as f32;
            rest[c + ch] = sdy as f32;
        }
        let sums: Vec<(f32, f32)> = match &self.0.group {
            None => sums.iter().map(|&(a, b)| (a as f32, b as f32)).collect(),
            Some(group) => {
                let mut flat: Vec<f64> = sums.iter().flat_map(|&(a, b)| [a, b]).collect();
                group
                    .all_reduce_f64(&mut flat, ReduceOp::Sum)
                    .map_err(|e| candle_core::Error::Msg(format!("SyncBN backward: {e}")))?;
                flat.chunks(2).map(|p| (p[0] as f32, p[1] as f32)).collect()
            }
        };
        let coef: Vec<(f32, f32, f32)> = (0..c)
            .map(|ch| {
                let inv = self.0.inv_std[ch];
                ((w[ch] * inv), (sums[ch].0 as f64 / count) as f32, (sums[ch].1 as f64 / count) as f32)
            })
            .collect();
        dx.par_chunks_mut(c * s).zip(x.par_chunks(c * s).zip(gy.par_chunks(c * s))).for_each(|(dxo, (xi, gi))| {
            for (ch, &(k, mdy, mdyx)) in coef.iter().enumerate() {
                let (m, inv) = (self.0.mean[ch], self.0.inv_std[ch]);
                let range = ch * s..(ch + 1) * s;
                for ((o, &v), &d) in dxo[range.clone()].iter_mut().zip(&xi[range.clone()]).zip(&gi[range]) {
                    *o = k * (d - mdy - (v - m) * inv * mdyx);
                }
            }
        });
        Ok((CpuStorage::F32(packed), Shape::from(len + 2 * c)))
    }
}
