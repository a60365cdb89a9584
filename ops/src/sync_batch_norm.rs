//! `SyncBatchNorm` in training mode (torch `nn/modules/batchnorm.py` `SyncBatchNorm` and
//! `nn/modules/_functions.py`): batch normalization whose statistics are those of every rank's
//! batch together, so that N ranks of `n` images normalize as one process with `N * n` images.
//!
//! Forward: each rank sums its values per channel; one all-reduce gives the group's count and
//! mean; a second gives the squared deviations from that mean, hence the group's biased
//! variance (two passes, as the single-process statistics are computed, so no cancellation).
//! Backward: see [`crate::batch_norm`]. Every rank must run the same layers in the same order,
//! as with torch's `SyncBatchNorm`.

use crate::batch_norm::{batch_norm_train, BatchNormTrain, BatchStats, Geom};
use crate::cpu::as_f32;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Tensor};
use nextdet_dist::{Collective, DistError, ReduceOp};
use rayon::prelude::*;
use std::sync::Arc;

/// [`batch_norm_train`] over the batches of every rank of `group` (the group's statistics,
/// count and gradients); with a group of one it is [`batch_norm_train`].
pub fn sync_batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    group: &Arc<dyn Collective>,
) -> Result<(Tensor, BatchStats)> {
    if !group.is_distributed() {
        return batch_norm_train(x, weight, bias, eps);
    }
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    if !(x.rank() == 2 || x.rank() == 4) || weight.dims() != [c] || bias.dims() != [c] || c == 0 {
        bail!("sync_batch_norm_train: input {:?} with weight {:?} and bias {:?}", x.dims(), weight.dims(), bias.dims());
    }
    let spatial: usize = x.dims()[2..].iter().product();
    let geom = Geom { n, c, spatial };
    let x = x.contiguous()?;
    let dist_err = |e: DistError| candle_core::Error::Msg(format!("SyncBN forward: {e}"));
    // [Σx per channel..., local count]
    let mut sums = x.apply_op1_no_bwd(&ChannelMoments { geom, center: None })?.to_vec1::<f64>()?;
    sums.push((n * spatial) as f64);
    group.all_reduce_f64(&mut sums, ReduceOp::Sum).map_err(dist_err)?;
    let count = sums[c] as usize;
    if count < 2 {
        bail!("SyncBN: training needs more than one value per channel over all ranks, got {count}");
    }
    let mean: Vec<f64> = sums[..c].iter().map(|s| s / count as f64).collect();
    let center = Some(Arc::new(mean.clone()));
    let mut sq = x.apply_op1_no_bwd(&ChannelMoments { geom, center })?.to_vec1::<f64>()?;
    group.all_reduce_f64(&mut sq, ReduceOp::Sum).map_err(dist_err)?;
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let var: Vec<f32> = sq.iter().map(|&s| (s / count as f64) as f32).collect();
    let inv_std: Vec<f32> = var.iter().map(|&v| 1.0 / (v as f64 + eps).sqrt() as f32).collect();
    let op = BatchNormTrain {
        geom,
        mean: Arc::new(mean.clone()),
        inv_std: Arc::new(inv_std),
        count,
        group: Some(group.clone()),
    };
    let y = x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    let stats =
        BatchStats { mean: Tensor::from_vec(mean, c, x.device())?, var: Tensor::from_vec(var, c, x.device())?, count };
    Ok((y, stats))
}

/// `x: [N, C, S] -> [C]` in `f64`: `Σ x` per channel, or `Σ (x - center)²` with a center.
struct ChannelMoments {
    geom: Geom,
    center: Option<Arc<Vec<f64>>>,
}

impl candle_core::CustomOp1 for ChannelMoments {
    fn name(&self) -> &'static str {
        "channel-moments"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s, l)?;
        let g = self.geom;
        let out: Vec<f64> = (0..g.c)
            .into_par_iter()
            .map(|ch| match &self.center {
                None => g.runs(x, ch).map(|r| r.iter().map(|&v| v as f64).sum::<f64>()).sum(),
                Some(m) => g.runs(x, ch).map(|r| r.iter().map(|&v| (v as f64 - m[ch]).powi(2)).sum::<f64>()).sum(),
            })
            .collect();
        Ok((CpuStorage::F64(out), Shape::from(g.c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn in_a_world_of_one_it_is_batch_norm_bit_for_bit() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0.5f32, 2.0, (3, 4, 5, 5), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, 4, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, 4, &dev).unwrap()).unwrap();
        let dy = Tensor::randn(0f32, 1.0, (3, 4, 5, 5), &dev).unwrap();
        let group: Arc<dyn Collective> = Arc::new(nextdet_dist::Local);
        let run = |sync: bool| {
            let (y, stats) = if sync {
                sync_batch_norm_train(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5, &group).unwrap()
            } else {
                batch_norm_train(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap()
            };
            let g = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let grads = [&x, &w, &b].map(|v| flat(g.get(v.as_tensor()).unwrap()));
            (flat(&y), flat(&stats.mean), flat(&stats.var), stats.count, grads)
        };
        assert_eq!(run(true), run(false));
    }
}
