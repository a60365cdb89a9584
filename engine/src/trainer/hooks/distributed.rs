//! Data-parallel training over the ranks of a process group, as PyTorch's
//! `DistributedDataParallel` under mmcv's `MMDistributedDataParallel`
//! (`torch/nn/parallel/distributed.py`, `mmcv/parallel/distributed.py`):
//!
//! - before training, rank 0's parameters and buffers (batch-norm statistics included) and its
//!   EMA are broadcast, after a resume has restored them, so every rank starts from the same
//!   weights;
//! - after every forward pass, the step's logged values and total loss are averaged over the
//!   ranks (mmcv's `reduce_mean` of the log vars), so every rank logs, checks for non-finite
//!   values and stops on the same numbers;
//! - before every optimizer step, the gradients are averaged over the ranks in flat buckets of
//!   [`BUCKET_BYTES`] (DDP's `bucket_cap_mb = 25`), in the parameters' creation order.

use super::Hook;
use crate::trainer::{TrainError, TrainState};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Storage, Tensor};
use nextdet_dist::{Collective, ReduceOp};
use nextdet_ops::params::ParamStore;
use std::collections::HashMap;

/// The size of one all-reduce bucket (PyTorch DDP's default `bucket_cap_mb`).
pub const BUCKET_BYTES: usize = 25 << 20;

/// Synchronizes weights, logged values and gradients over the state's group (see the module
/// docs). The trainer adds it first when its group has more than one rank.
pub struct DistributedHook {
    bucket_bytes: usize,
}

impl Default for DistributedHook {
    fn default() -> Self {
        Self { bucket_bytes: BUCKET_BYTES }
    }
}

impl DistributedHook {
    /// A hook that all-reduces gradients in buckets of `bucket_bytes`.
    pub fn with_bucket_bytes(bucket_bytes: usize) -> Self {
        Self { bucket_bytes }
    }
}

impl Hook for DistributedHook {
    fn before_train(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        broadcast_params(&*s.group, &s.params, self.bucket_bytes)?;
        if let Some(ema) = &mut s.ema {
            let mut named: Vec<(String, Tensor)> = ema.state().into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            let values = broadcast_tensors(&*s.group, &named, self.bucket_bytes)?;
            if !s.group.is_main() {
                ema.load(&named.into_iter().map(|(n, _)| n).zip(values).collect())?;
            }
        }
        Ok(())
    }

    fn after_forward(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        let mut values: Vec<f64> = s.step.values.iter().map(|(_, v)| *v).chain([s.step.total]).collect();
        s.group.all_reduce_f64(&mut values, ReduceOp::Mean)?;
        for ((_, v), mean) in s.step.values.iter_mut().zip(&values) {
            *v = *mean;
        }
        s.step.total = values[values.len() - 1];
        Ok(())
    }

    fn after_backward(&mut self, s: &mut TrainState, grads: &mut GradStore) -> Result<(), TrainError> {
        all_reduce_grads(&*s.group, grads, &s.params, self.bucket_bytes)
    }
}

/// Replaces every trainable parameter's gradient by its mean over the ranks of `group`, in
/// flat `f32` buckets of about `bucket_bytes` (a parameter larger than that is a bucket of its
/// own). A parameter without a gradient on some rank (unused in its forward pass) counts as
/// zero there; one without a gradient on every rank keeps none, as in one process.
pub fn all_reduce_grads(
    group: &dyn Collective,
    grads: &mut GradStore,
    params: &ParamStore,
    bucket_bytes: usize,
) -> Result<(), TrainError> {
    let vars = params.trainable();
    let mut present: Vec<f32> = vars.iter().map(|(_, v)| grads.get(v.as_tensor()).is_some() as u8 as f32).collect();
    group.all_reduce_f32(&mut present, ReduceOp::Max)?;
    let synced: Vec<(usize, Tensor)> = vars
        .iter()
        .enumerate()
        .filter(|(i, _)| present[*i] > 0.0)
        .map(|(i, (_, v))| (i, v.as_tensor().clone()))
        .collect();
    let lens: Vec<usize> = synced.iter().map(|(_, t)| t.elem_count()).collect();
    let scale = 1.0 / group.world_size() as f32;
    for range in buckets(&lens, bucket_bytes / 4) {
        let mut flat = Vec::with_capacity(lens[range.clone()].iter().sum());
        for (_, var) in &synced[range.clone()] {
            match grads.get(var) {
                Some(g) => extend_f32(&mut flat, g)?,
                None => flat.resize(flat.len() + var.elem_count(), 0.0),
            }
        }
        group.all_reduce_f32(&mut flat, ReduceOp::Sum)?;
        let mut at = 0;
        for (_, var) in &synced[range] {
            let n = var.elem_count();
            let mean: Vec<f32> = flat[at..at + n].iter().map(|v| v * scale).collect();
            grads.insert(var, Tensor::from_vec(mean, var.shape(), var.device())?);
            at += n;
        }
    }
    Ok(())
}

/// Copies rank 0's parameters and buffers into every other rank's `params`.
pub fn broadcast_params(group: &dyn Collective, params: &ParamStore, bucket_bytes: usize) -> Result<(), TrainError> {
    let named = params.tensors();
    let values = broadcast_tensors(group, &named, bucket_bytes)?;
    if !group.is_main() {
        let map: HashMap<String, Tensor> = named.into_iter().map(|(n, _)| n).zip(values).collect();
        params.load(&map)?;
    }
    Ok(())
}

/// Rank 0's values of `named` (the same names and shapes on every rank), in order.
fn broadcast_tensors(
    group: &dyn Collective,
    named: &[(String, Tensor)],
    bucket_bytes: usize,
) -> Result<Vec<Tensor>, TrainError> {
    let lens: Vec<usize> = named.iter().map(|(_, t)| t.elem_count()).collect();
    let mut out = Vec::with_capacity(named.len());
    for range in buckets(&lens, bucket_bytes / 4) {
        let mut flat = Vec::with_capacity(lens[range.clone()].iter().sum());
        for (_, t) in &named[range.clone()] {
            extend_f32(&mut flat, t)?;
        }
        group.broadcast_f32(&mut flat, 0)?;
        let mut at = 0;
        for (_, t) in &named[range] {
            let n = t.elem_count();
            out.push(Tensor::from_slice(&flat[at..at + n], t.shape(), t.device())?);
            at += n;
        }
    }
    Ok(out)
}

/// Consecutive runs of `lens` whose sum stays within `cap` elements (a longer item alone).
fn buckets(lens: &[usize], cap: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, &n) in lens.iter().enumerate() {
        if size > 0 && size + n > cap {
            out.push(start..i);
            (start, size) = (i, 0);
        }
        size += n;
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

/// Appends a tensor's values (as `f32`) to `flat`, straight from CPU storage when it can.
fn extend_f32(flat: &mut Vec<f32>, t: &Tensor) -> candle_core::Result<()> {
    if t.device().is_cpu() && t.dtype() == DType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            flat.extend_from_slice(&v[a..b]);
            return Ok(());
        }
    }
    flat.extend(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::buckets;

    #[test]
    fn buckets_fill_up_to_the_cap_and_keep_large_items_alone() {
        assert_eq!(buckets(&[3, 3, 3, 10, 1], 6), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(buckets(&[], 6), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(buckets(&[1, 1, 1], 100), vec![0..3]);
    }
}
