//! Evaluation after an epoch (mmcv's `EvalHook`): every `eval_interval` epochs and at the last,
//! with the EMA weights too when `ema_eval` is set (their metrics prefixed `ema_`); the first
//! metric is tracked as the run's best.
//!
//! With several ranks every rank runs the task's evaluation (the task shares the work and
//! gathers the results on rank 0, as mmdetection's `multi_gpu_test`), and rank 0's metrics are
//! broadcast so that every rank tracks the same best metric.

use super::Hook;
use crate::checkpoint::BestMetric;
use crate::trainer::{Metrics, TrainError, TrainState};
use candle_core::Tensor;
use nextdet_dist::Collective;
use std::collections::HashMap;

/// Runs the task's evaluation and keeps the best metric.
pub struct EvalHook;

impl Hook for EvalHook {
    fn after_epoch(
        &mut self,
        s: &mut TrainState,
        evaluate: &mut dyn FnMut(usize) -> anyhow::Result<Metrics>,
    ) -> Result<(), TrainError> {
        s.eval_metrics.clear();
        let done = s.run.epoch;
        let last = done == s.cfg.max_epochs;
        if s.cfg.eval_interval == 0 || !(done.is_multiple_of(s.cfg.eval_interval) || last) {
            return Ok(());
        }
        let task_err = |source| TrainError::Task { epoch: done, iter: 0, source };
        let mut metrics = evaluate(done).map_err(task_err)?;
        let group = s.group.clone();
        if let (true, Some(ema)) = (s.cfg.ema_eval, &s.ema) {
            let own: HashMap<String, Tensor> =
                s.params.tensors().into_iter().map(|(n, t)| Ok((n, t.copy()?))).collect::<candle_core::Result<_>>()?;
            s.params.load(&ema.state())?;
            let ema_metrics = evaluate(done);
            s.params.load(&own)?;
            metrics.extend(ema_metrics.map_err(task_err)?.into_iter().map(|(k, v)| (format!("ema_{k}"), v)));
        }
        if group.is_distributed() {
            metrics = broadcast_metrics(&*group, &metrics)?;
        }
        if group.is_main() {
            tracing::info!("epoch {done} evaluation: {metrics:?}");
        }
        if let Some((name, value)) = metrics.first() {
            if s.best.as_ref().is_none_or(|b| *value > b.value) {
                s.best = Some(BestMetric { name: name.clone(), value: *value, epoch: done });
            }
        }
        s.eval_metrics = metrics;
        Ok(())
    }
}

/// Rank 0's metrics on every rank (names and `f64` bits, exactly).
fn broadcast_metrics(group: &dyn Collective, metrics: &Metrics) -> Result<Metrics, TrainError> {
    let bad = |msg: &str| TrainError::Config(format!("evaluation metrics from rank 0: {msg}"));
    let mut bytes = Vec::new();
    for (name, value) in metrics {
        bytes.extend((name.len() as u64).to_le_bytes());
        bytes.extend(name.as_bytes());
        bytes.extend(value.to_le_bytes());
    }
    group.broadcast_bytes(&mut bytes, 0)?;
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(|| bad("truncated"))?;
        let len = u64::from_le_bytes(*len) as usize;
        let name = tail.get(..len).ok_or_else(|| bad("truncated"))?;
        let (value, tail) = tail[len..].split_first_chunk::<8>().ok_or_else(|| bad("truncated"))?;
        out.push((String::from_utf8_lossy(name).into_owned(), f64::from_le_bytes(*value)));
        rest = tail;
    }
    Ok(out)
}
