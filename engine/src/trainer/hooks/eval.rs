//! Evaluation after an epoch (mmcv's `EvalHook`): every `eval_interval` epochs and at the last,
//! with the EMA weights too when `ema_eval` is set (their metrics prefixed `ema_`); the first
//! metric is tracked as the run's best.

use super::Hook;
use crate::checkpoint::BestMetric;
use crate::trainer::{Metrics, TrainError, TrainState};
use candle_core::Tensor;
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
        if let (true, Some(ema)) = (s.cfg.ema_eval, &s.ema) {
            let own: HashMap<String, Tensor> =
                s.params.tensors().into_iter().map(|(n, t)| Ok((n, t.copy()?))).collect::<candle_core::Result<_>>()?;
            s.params.load(&ema.state())?;
            let ema_metrics = evaluate(done);
            s.params.load(&own)?;
            metrics.extend(ema_metrics.map_err(task_err)?.into_iter().map(|(k, v)| (format!("ema_{k}"), v)));
        }
        tracing::info!("epoch {done} evaluation: {metrics:?}");
        if let Some((name, value)) = metrics.first() {
            if s.best.as_ref().is_none_or(|b| *value > b.value) {
                s.best = Some(BestMetric { name: name.clone(), value: *value, epoch: done });
            }
        }
        s.eval_metrics = metrics;
        Ok(())
    }
}
