//! What a run shows and writes (mmcv's `TextLoggerHook`, detectron2's writers): a progress bar
//! with the loss parts, learning rate, speed and ETA (or one text line per log interval when
//! stderr is not a terminal), one JSON line per log interval and per evaluation in
//! `metrics.jsonl`, and `curves.png`. A resumed run first drops the lines past its resume point
//! (it logs them again) and reloads its curves from the rest. Only rank 0 of a data-parallel
//! run shows and writes anything (the values are already averaged over the ranks; the speed is
//! the images per second of all ranks together).

use super::Hook;
use crate::checkpoint;
use crate::plot::{plot_curves, Series};
use crate::trainer::{Metrics, TrainError, TrainState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Loss parts accumulated over one log interval.
#[derive(Default)]
struct LogBuffer {
    sums: BTreeMap<String, f64>,
    order: Vec<String>,
    count: usize,
    samples: usize,
    counted_samples: bool,
    data_secs: f64,
    grad_norm: Option<(f64, usize)>,
    start: Option<Instant>,
}

/// The progress bar, `metrics.jsonl` and `curves.png`.
#[derive(Default)]
pub struct MetricsLogger {
    bar: Option<ProgressBar>,
    log: LogBuffer,
    loss_curves: BTreeMap<String, Vec<(f64, f64)>>,
    metric_curves: BTreeMap<String, Vec<(f64, f64)>>,
}

fn output_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Output { path: path.to_path_buf(), msg: e.to_string() }
}

fn metrics_path(s: &TrainState) -> PathBuf {
    s.work_dir.join("metrics.jsonl")
}

impl MetricsLogger {
    /// Adds one metrics line to the plotted curves.
    fn add_curves(&mut self, v: &serde_json::Value) {
        let Some(obj) = v.as_object() else { return };
        let train = obj.get("mode").and_then(|m| m.as_str()) == Some("train");
        let x = if train { obj.get("global_iter") } else { obj.get("epoch") }.and_then(|x| x.as_f64());
        let Some(x) = x else { return };
        for (k, val) in obj {
            let Some(y) = val.as_f64() else { continue };
            if train && (k == "loss" || k.starts_with("loss_")) {
                self.loss_curves.entry(k.clone()).or_default().push((x, y));
            } else if !train && k != "epoch" {
                self.metric_curves.entry(k.clone()).or_default().push((x, y));
            }
        }
    }

    fn append_line(&mut self, s: &TrainState, line: serde_json::Value) -> Result<(), TrainError> {
        let path = metrics_path(s);
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| output_err(&path, e))?;
        writeln!(f, "{line}").map_err(|e| output_err(&path, e))?;
        self.add_curves(&line);
        Ok(())
    }

    /// Drops log lines past the resume point and reloads the curves from the rest.
    fn trim_metrics(&mut self, s: &TrainState) -> Result<(), TrainError> {
        let path = metrics_path(s);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(output_err(&path, e)),
        };
        let mut kept = String::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let keep = match v.get("mode").and_then(|m| m.as_str()) {
                Some("train") => v.get("global_iter").and_then(|g| g.as_u64()).is_some_and(|g| g <= s.run.global_iter),
                Some("val") => v.get("epoch").and_then(|g| g.as_u64()).is_some_and(|e| e as usize <= s.run.epoch),
                _ => false,
            };
            if keep {
                self.add_curves(&v);
                kept.push_str(line);
                kept.push('\n');
            }
        }
        checkpoint::write_atomic(&path, kept.as_bytes())?;
        Ok(())
    }

    fn log_train(&mut self, s: &TrainState) -> Result<(), TrainError> {
        let log = std::mem::take(&mut self.log);
        let n = log.count.max(1) as f64;
        let secs = log.start.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        let lr = s.step.lr;
        let mut line = serde_json::Map::new();
        line.insert("mode".into(), "train".into());
        line.insert("epoch".into(), (s.run.epoch + 1).into());
        line.insert("iter".into(), s.run.iter.into());
        line.insert("global_iter".into(), s.run.global_iter.into());
        line.insert("lr".into(), lr.into());
        let mut msg = String::new();
        for name in std::iter::once("loss".to_string()).chain(log.order.iter().cloned()) {
            let mean = log.sums.get(&name).copied().unwrap_or(0.0) / n;
            line.insert(name.clone(), mean.into());
            msg.push_str(&format!("{name} {mean:.4} "));
        }
        if let Some((sum, count)) = log.grad_norm {
            line.insert("grad_norm".into(), (sum / count.max(1) as f64).into());
        }
        line.insert("time".into(), (secs / n).into());
        line.insert("data_time".into(), (log.data_secs / n).into());
        // the whole run's images per second: every rank steps through as many as this one
        let speed = if secs > 0.0 { (log.samples * s.group.world_size()) as f64 / secs } else { 0.0 };
        line.insert("speed".into(), speed.into());
        let unit = if log.counted_samples { "img/s" } else { "it/s" };
        msg.push_str(&format!("lr {lr:.3e} {speed:.2} {unit}"));
        if let Some(bar) = &self.bar {
            bar.set_message(msg.clone());
            if bar.is_hidden() {
                // No terminal (a log file, CI): one text line per log interval, as mmdetection prints.
                let eta = bar.eta().as_secs();
                eprintln!(
                    "epoch {} iter {}: {msg} eta {}:{:02}:{:02}",
                    s.run.epoch + 1,
                    s.run.iter,
                    eta / 3600,
                    eta / 60 % 60,
                    eta % 60
                );
            }
        }
        self.append_line(s, serde_json::Value::Object(line))
    }

    /// Redraws `curves.png`; a drawing failure is reported, not fatal.
    fn plot(&self, s: &TrainState) {
        let to_series = |m: &BTreeMap<String, Vec<(f64, f64)>>| -> Vec<Series> {
            m.iter().map(|(k, v)| Series { name: k.clone(), points: v.clone() }).collect()
        };
        let path = s.work_dir.join("curves.png");
        if let Err(e) = plot_curves(&path, &to_series(&self.loss_curves), &to_series(&self.metric_curves)) {
            tracing::warn!("{e}");
        }
    }
}

impl Hook for MetricsLogger {
    fn before_train(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        if !s.group.is_main() {
            return Ok(());
        }
        self.trim_metrics(s)?;
        let total = (s.cfg.max_epochs * s.iters_per_epoch) as u64;
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_position(s.run.global_iter.min(total));
        bar.reset_eta();
        self.bar = Some(bar);
        Ok(())
    }

    fn before_step(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        if !s.group.is_main() {
            return Ok(());
        }
        if let Some(bar) = &self.bar {
            if s.step.iter == 0 || self.log.start.is_none() {
                bar.set_prefix(format!("epoch {}/{}", s.step.epoch + 1, s.cfg.max_epochs));
            }
        }
        if self.log.start.is_none() {
            self.log.start = Some(Instant::now());
        }
        Ok(())
    }

    fn after_forward(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        if !s.group.is_main() {
            return Ok(());
        }
        let log = &mut self.log;
        log.data_secs += s.step.data_secs;
        log.counted_samples |= s.step.samples.is_some();
        log.samples += s.step.samples.unwrap_or(1);
        for (name, value) in &s.step.values {
            if !log.sums.contains_key(name) {
                log.order.push(name.clone());
            }
            *log.sums.entry(name.clone()).or_default() += value;
        }
        Ok(())
    }

    fn after_step(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        if !s.group.is_main() {
            return Ok(());
        }
        *self.log.sums.entry("loss".into()).or_default() += s.step.total;
        self.log.count += 1;
        if let Some(norm) = s.step.grad_norm {
            let (sum, n) = self.log.grad_norm.unwrap_or((0.0, 0));
            self.log.grad_norm = Some((sum + norm, n + 1));
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        if s.run.iter.is_multiple_of(s.cfg.log_interval) || s.run.iter == s.iters_per_epoch {
            self.log_train(s)?;
        }
        Ok(())
    }

    fn after_epoch(
        &mut self,
        s: &mut TrainState,
        _evaluate: &mut dyn FnMut(usize) -> anyhow::Result<Metrics>,
    ) -> Result<(), TrainError> {
        if !s.group.is_main() {
            return Ok(());
        }
        if !s.eval_metrics.is_empty() {
            let mut line = serde_json::Map::new();
            line.insert("mode".into(), "val".into());
            line.insert("epoch".into(), s.run.epoch.into());
            for (k, v) in &s.eval_metrics {
                line.insert(k.clone(), (*v).into());
            }
            self.append_line(s, serde_json::Value::Object(line))?;
        }
        self.plot(s);
        Ok(())
    }

    fn after_train(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        if !s.group.is_main() {
            return Ok(());
        }
        let Some(bar) = self.bar.take() else { return Ok(()) };
        if let Some(path) = &s.interrupted {
            bar.abandon_with_message(format!("interrupted; saved {}", path.display()));
            self.plot(s);
        } else if s.run.epoch >= s.cfg.max_epochs {
            bar.finish();
        } else {
            bar.abandon();
        }
        Ok(())
    }
}
