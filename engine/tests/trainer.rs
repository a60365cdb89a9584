//! The training loop on a tiny linear-regression task: a run interrupted mid-epoch and resumed
//! (and one resumed from an epoch checkpoint) ends with the same weights, EMA and logged losses
//! as an uninterrupted run; a NaN loss stops the run with an error naming the iteration and the
//! loss part while the last checkpoint still loads; the log, plot and checkpoint files exist.
//! Data-parallel bookkeeping without MPI: ranks that hold the same data (a mirrored group)
//! train as one process, only rank 0 writes, and a mid-epoch checkpoint of another world size
//! restarts its epoch.

use candle_core::{DType, Device, Tensor};
use nextdet_engine::checkpoint::{self, CheckpointDir};
use nextdet_engine::dist::{Collective, DistError, ReduceOp};
use nextdet_engine::layer_decay::ParamwiseConfig;
use nextdet_engine::optim::{Optimizer, OptimizerConfig, OptimizerType};
use nextdet_engine::schedule::{LrSchedule, LrScheduleConfig, WarmupKind};
use nextdet_engine::trainer::{iteration_seed, FitOutcome, TrainError, TrainTask, Trainer, TrainerConfig};
use nextdet_ops::params::{Init, ParamStore};
use nextdet_ops::Losses;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const ITERS: usize = 5;
const EPOCHS: usize = 3;

struct LinReg {
    params: ParamStore,
    w: Tensor,
    b: Tensor,
    seed: u64,
    nan_at: Option<(usize, usize)>,
    stop_at: Option<((usize, usize), Arc<AtomicBool>)>,
    current: (usize, usize),
    slow: bool,
}

impl LinReg {
    fn new() -> Self {
        let params = ParamStore::new(&Device::Cpu, 3);
        let fc = params.root().pp("fc");
        let w = fc.param("weight", (4, 1), Init::Normal { std: 0.5 }).unwrap();
        let b = fc.param("bias", 1, Init::Const(0.0)).unwrap();
        Self { params, w, b, seed: 11, nan_at: None, stop_at: None, current: (0, 0), slow: false }
    }
}

impl TrainTask for LinReg {
    type Batch = (Tensor, Tensor);

    fn iters_per_epoch(&self) -> usize {
        ITERS
    }

    fn batch(&mut self, epoch: usize, iter: usize) -> anyhow::Result<Self::Batch> {
        self.current = (epoch, iter);
        if self.slow {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut rng = StdRng::seed_from_u64(iteration_seed(self.seed, epoch, iter));
        let x: Vec<f32> = (0..8 * 4).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let w_true = [1.5f32, -2.0, 0.5, 3.0];
        let y: Vec<f32> = (0..8)
            .map(|r| (0..4).map(|c| x[r * 4 + c] * w_true[c]).sum::<f32>() + 0.5 + rng.gen_range(-0.1..0.1))
            .collect();
        Ok((Tensor::from_vec(x, (8, 4), &Device::Cpu)?, Tensor::from_vec(y, (8, 1), &Device::Cpu)?))
    }

    fn batch_size(&self, batch: &Self::Batch) -> Option<usize> {
        Some(batch.0.dims()[0])
    }

    fn losses(&mut self, (x, y): &Self::Batch) -> anyhow::Result<Losses> {
        if let Some((at, flag)) = &self.stop_at {
            if *at == self.current {
                flag.store(true, Ordering::SeqCst);
            }
        }
        let pred = x.matmul(&self.w)?.broadcast_add(&self.b)?;
        let mut mse = (pred - y)?.sqr()?.mean_all()?;
        if self.nan_at == Some(self.current) {
            mse = (mse * f64::NAN)?;
        }
        let reg = (self.w.sqr()?.sum_all()? * 0.01)?;
        let mut losses = Losses::new();
        losses.push_term("loss_mse", mse);
        losses.push_term("loss_reg", reg);
        Ok(losses)
    }

    fn evaluate(&mut self, epoch: usize) -> anyhow::Result<Vec<(String, f64)>> {
        let (x, y) = self.batch(1000 + epoch, 0)?;
        let mse = (x.matmul(&self.w)?.broadcast_add(&self.b)? - y)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
        Ok(vec![("neg_mse".into(), -(mse as f64))])
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }
}

fn trainer(task: &LinReg, dir: &Path) -> Trainer {
    trainer_for(task, dir, EPOCHS, false)
}

fn trainer_for(task: &LinReg, dir: &Path, epochs: usize, catch_ctrlc: bool) -> Trainer {
    let cfg = TrainerConfig {
        max_epochs: epochs,
        grad_clip: Some(1.0),
        accumulate: 2,
        log_interval: 2,
        eval_interval: 1,
        checkpoint_interval: 1,
        keep_last: 2,
        ema: Some(0.9),
        seed: 11,
        ema_eval: true,
        catch_ctrlc,
    };
    let ocfg = OptimizerConfig {
        kind: OptimizerType::AdamW,
        lr: 0.05,
        weight_decay: 0.05,
        betas: [0.9, 0.999],
        eps: 1e-8,
        momentum: 0.0,
        nesterov: false,
        paramwise: Some(ParamwiseConfig::NoDecayNormBias),
    };
    let opt = Optimizer::from_config(&ocfg, task.params()).unwrap();
    let sched = LrScheduleConfig::Step {
        step: vec![2],
        gamma: 0.1,
        min_lr: None,
        warmup: Some(WarmupKind::Linear),
        warmup_iters: 2,
        warmup_ratio: 0.1,
    };
    Trainer::new(cfg, dir, opt, LrSchedule::new(sched, ocfg.lr, epochs)).with_config_text("model: linreg\n")
}

fn values(store: &ParamStore) -> Vec<f32> {
    store.tensors().iter().flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

fn ema_values(t: &Trainer) -> Vec<f32> {
    t.ema().unwrap().tensors().iter().flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-6, "{what}: {a:?} vs {b:?}");
    }
}

/// (global_iter, loss) of each train line of metrics.jsonl.
fn logged_losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["mode"] == "train")
        .map(|v| (v["global_iter"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn resume_matches_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();

    if let Ok(keep) = std::env::var("NEXTDET_KEEP_TRAINER_OUTPUT") {
        let _ = std::fs::remove_dir_all(&keep);
        std::fs::create_dir_all(&keep).unwrap();
        return run_resume(Path::new(&keep));
    }
    run_resume(tmp.path());
}

fn run_resume(root: &Path) {
    let (dir_a, dir_b, dir_c) = (root.join("a"), root.join("b"), root.join("c"));
    let mut task = LinReg::new();
    let start = values(&task.params);
    let mut straight = trainer(&task, &dir_a);
    let out = straight.fit(&mut task, None).unwrap();
    assert_eq!(out, FitOutcome::Completed { checkpoint: Some(dir_a.join("epoch_3.safetensors")) });
    let want = values(&task.params);
    assert!(want.iter().zip(&start).any(|(a, b)| (a - b).abs() > 1e-2), "training changed nothing");

    // interrupted in the middle of epoch 2, then resumed from latest
    let mut task = LinReg::new();
    let mut first = trainer(&task, &dir_b);
    task.stop_at = Some(((1, 1), first.interrupt_flag()));
    let FitOutcome::Interrupted { checkpoint } = first.fit(&mut task, None).unwrap() else { panic!("not interrupted") };
    assert_eq!(checkpoint, dir_b.join("interrupted.safetensors"));
    let run = checkpoint::load(&dir_b.join("latest.safetensors"), &Device::Cpu).unwrap().run.unwrap();
    assert_eq!((run.epoch, run.iter, run.global_iter, run.global_step), (1, 2, 7, 4));
    assert_eq!(run.config.as_deref(), Some("model: linreg\n"));
    let mut task = LinReg::new();
    let mut second = trainer(&task, &dir_b);
    second.fit(&mut task, Some(&dir_b.join("latest.safetensors"))).unwrap();
    assert_close("weights after resume", &values(&task.params), &want);
    assert_close("ema after resume", &ema_values(&second), &ema_values(&straight));
    let (la, lb) = (logged_losses(&dir_a), logged_losses(&dir_b));
    assert_eq!(la.len(), lb.len());
    for ((ga, a), (gb, b)) in la.iter().zip(&lb) {
        assert_eq!(ga, gb);
        assert!((a - b).abs() <= 1e-6, "logged loss at {ga}: {a} vs {b}");
    }

    // resumed from an epoch checkpoint of the straight run
    let mut task = LinReg::new();
    let mut third = trainer(&task, &dir_c);
    third.fit(&mut task, Some(&dir_a.join("epoch_2.safetensors"))).unwrap();
    assert_close("weights after resume from epoch 2", &values(&task.params), &want);

    // outputs: keep_last 2 removed epoch 1; curves and metrics written
    assert!(!dir_a.join("epoch_1.safetensors").exists());
    assert!(dir_a.join("epoch_2.safetensors").exists());
    let png = std::fs::read(dir_a.join("curves.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    let text = std::fs::read_to_string(dir_a.join("metrics.jsonl")).unwrap();
    assert_eq!(text.lines().filter(|l| l.contains("\"val\"") && l.contains("ema_neg_mse")).count(), EPOCHS);
    assert!(text.lines().next().unwrap().contains("grad_norm"));
    let latest = checkpoint::load(&dir_a.join("latest.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(latest.run.as_ref().unwrap().epoch, EPOCHS);
    assert!(latest.run.unwrap().best_metric.is_some());
    assert!(latest.optimizer.contains_key("fc.weight.exp_avg"));
    assert!(latest.ema.contains_key("fc.weight"));
}

#[test]
fn nan_loss_stops_and_keeps_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut task = LinReg::new();
    task.nan_at = Some((1, 3));
    let mut t = trainer(&task, tmp.path());
    let err = t.fit(&mut task, None).unwrap_err();
    match &err {
        TrainError::NonFinite { epoch, iter, global_iter, part, value } => {
            assert_eq!((*epoch, *iter, *global_iter, part.as_str()), (2, 4, 9, "loss_mse"));
            assert!(value.is_nan());
        }
        e => panic!("wrong error: {e}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("iteration 4") && msg.contains("loss_mse"), "{msg}");
    let ckpt = checkpoint::load(&tmp.path().join("latest.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(ckpt.run.unwrap().epoch, 1);
    let store = LinReg::new().params;
    assert!(store.load(&ckpt.weights).unwrap().is_exact());
}

fn small_checkpoint(v: f32, n: usize) -> checkpoint::Checkpoint {
    let mut c = checkpoint::Checkpoint::default();
    c.weights.insert("w".into(), Tensor::full(v, n, &Device::Cpu).unwrap());
    c.optimizer.insert("w.step".into(), Tensor::new(&[3.0f64], &Device::Cpu).unwrap());
    c.run = Some(checkpoint::RunState { epoch: v as usize, ..Default::default() });
    c
}

#[test]
fn torn_write_leaves_previous_checkpoint_loadable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = CheckpointDir::new(tmp.path(), 0);
    dir.save_epoch(1, &small_checkpoint(1.0, 16)).unwrap();
    // a writer that died mid-write leaves half a temporary file and no rename
    let good = std::fs::read(dir.epoch_path(1)).unwrap();
    std::fs::write(tmp.path().join("latest.safetensors.tmp"), &good[..good.len() / 2]).unwrap();
    std::fs::write(tmp.path().join("epoch_2.safetensors.tmp"), &good[..good.len() / 2]).unwrap();
    let c = checkpoint::load(&dir.latest_path(), &Device::Cpu).unwrap();
    assert_eq!(c.run.unwrap().epoch, 1);
    assert_eq!(c.optimizer["w.step"].to_vec1::<f64>().unwrap(), vec![3.0]);
    // the next save goes through over the stale temporary files
    dir.save_epoch(2, &small_checkpoint(2.0, 16)).unwrap();
    assert_eq!(checkpoint::load(&dir.latest_path(), &Device::Cpu).unwrap().run.unwrap().epoch, 2);
    // a truncated file is an error naming it
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let err = checkpoint::load(&bad, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
}

/// Child side of `killed_writer_leaves_latest_loadable`: writes large checkpoints forever.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var("NEXTDET_CHILD_WRITER_DIR") else { return };
    let dir = CheckpointDir::new(dir, 2);
    for epoch in 2.. {
        dir.save_epoch(epoch, &small_checkpoint(epoch as f32, 8 << 20)).unwrap();
    }
}

#[test]
fn killed_writer_leaves_latest_loadable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = CheckpointDir::new(tmp.path(), 2);
    dir.save_epoch(1, &small_checkpoint(1.0, 8 << 20)).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads", "1"])
        .env("NEXTDET_CHILD_WRITER_DIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // wait until a temporary file is being written, then kill the writer
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut writing = false;
    while !writing {
        writing = std::fs::read_dir(tmp.path()).unwrap().flatten().any(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with("epoch_") && name.ends_with(".tmp") && e.metadata().map(|m| m.len() > 0).unwrap_or(false)
        });
        assert!(std::time::Instant::now() < deadline, "the child never started writing");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let c = checkpoint::load(&dir.latest_path(), &Device::Cpu).unwrap();
    let epoch = c.run.unwrap().epoch;
    assert!(epoch >= 1);
    let w = c.weights["w"].to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    assert!(w.iter().all(|&x| x == epoch as f64));
    for e in dir.epochs().unwrap() {
        checkpoint::load(&dir.epoch_path(e), &Device::Cpu).unwrap();
    }
}

#[test]
fn ema_follows_timm_formula() {
    let task = LinReg::new();
    let mut ema = nextdet_engine::ema::ModelEma::new(&task.params, 0.75).unwrap();
    let before = values(&task.params);
    let new: HashMap<String, Tensor> =
        task.params.tensors().into_iter().map(|(n, t)| (n, (t.ones_like().unwrap() * 2.0).unwrap())).collect();
    task.params.load(&new).unwrap();
    ema.update(&task.params).unwrap();
    let got: Vec<f32> =
        ema.tensors().iter().flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
    let want: Vec<f32> = before.iter().map(|b| 0.75 * b + 0.25 * 2.0).collect();
    assert_close("ema", &got, &want);
}

/// Child side of `ctrl_c_saves_interrupted_checkpoint`: a long run that must end interrupted.
#[test]
fn ctrl_c_child() {
    let Ok(dir) = std::env::var("NEXTDET_CTRLC_CHILD_DIR") else { return };
    let mut task = LinReg::new();
    task.slow = true;
    let mut t = trainer_for(&task, Path::new(&dir), 100_000, true);
    let out = t.fit(&mut task, None).unwrap();
    assert!(matches!(out, FitOutcome::Interrupted { .. }), "{out:?}");
}

#[test]
fn ctrl_c_saves_interrupted_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ctrl_c_child", "--nocapture", "--test-threads", "1"])
        .env("NEXTDET_CTRLC_CHILD_DIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !tmp.path().join("metrics.jsonl").exists() {
        assert!(std::time::Instant::now() < deadline, "the child never logged");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let status = std::process::Command::new("sh").args(["-c", &format!("kill -INT {}", child.id())]).status().unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "child: {status}");
    let c = checkpoint::load(&tmp.path().join("interrupted.safetensors"), &Device::Cpu).unwrap();
    let run = c.run.unwrap();
    assert!(run.global_iter >= 2);
    assert_eq!(run.iter % 2, 0, "saved inside an accumulation group: {run:?}");
    let latest = checkpoint::load(&tmp.path().join("latest.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(latest.run.unwrap(), run);
}

#[test]
fn optimizer_over_other_parameters_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let other = LinReg::new();
    let mut task = LinReg::new();
    let mut t = trainer(&other, tmp.path());
    let err = t.fit(&mut task, None).unwrap_err().to_string();
    assert!(err.contains("fc.weight"), "{err}");
}

/// `world` ranks that all hold this process's data, seen from rank `rank`: a sum over them is
/// `world` times the value, a mean or maximum the value itself, a broadcast changes nothing.
struct Mirror {
    rank: usize,
    world: usize,
    calls: AtomicUsize,
}

impl Mirror {
    fn new(rank: usize, world: usize) -> Arc<Self> {
        Arc::new(Self { rank, world, calls: AtomicUsize::new(0) })
    }
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl Collective for Mirror {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn local_rank(&self) -> usize {
        self.rank
    }
    fn local_size(&self) -> usize {
        self.world
    }
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<(), DistError> {
        self.count();
        if op == ReduceOp::Sum {
            buf.iter_mut().for_each(|v| *v *= self.world as f32);
        }
        Ok(())
    }
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<(), DistError> {
        self.count();
        if op == ReduceOp::Sum {
            buf.iter_mut().for_each(|v| *v *= self.world as f64);
        }
        Ok(())
    }
    fn broadcast_f32(&self, _buf: &mut [f32], _root: usize) -> Result<(), DistError> {
        self.count();
        Ok(())
    }
    fn broadcast_bytes(&self, _buf: &mut Vec<u8>, _root: usize) -> Result<(), DistError> {
        self.count();
        Ok(())
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        Ok(vec![mine.to_vec(); self.world])
    }
    fn barrier(&self) -> Result<(), DistError> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

#[test]
fn mirrored_ranks_train_as_one_process_and_only_rank_0_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b, dir_c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    let mut task = LinReg::new();
    trainer(&task, &dir_a).fit(&mut task, None).unwrap();
    let want = values(&task.params);

    let group = Mirror::new(0, 2);
    let mut task = LinReg::new();
    let out = trainer(&task, &dir_b).with_group(group.clone()).fit(&mut task, None).unwrap();
    assert_eq!(out, FitOutcome::Completed { checkpoint: Some(dir_b.join("epoch_3.safetensors")) });
    assert_eq!(values(&task.params), want, "averaging identical gradients changes nothing");
    assert!(group.calls.load(Ordering::SeqCst) > 3 * ITERS, "the distributed hook synchronized every step");
    assert_eq!(logged_losses(&dir_a), logged_losses(&dir_b));
    let run = checkpoint::load(&dir_b.join("latest.safetensors"), &Device::Cpu).unwrap().run.unwrap();
    assert_eq!(run.world_size, 2);

    // rank 1 trains the same but writes nothing
    let mut task = LinReg::new();
    let out = trainer(&task, &dir_c).with_group(Mirror::new(1, 2)).fit(&mut task, None).unwrap();
    assert_eq!(out, FitOutcome::Completed { checkpoint: Some(dir_c.join("epoch_3.safetensors")) });
    assert_eq!(values(&task.params), want);
    let written: Vec<_> = std::fs::read_dir(&dir_c).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(written.is_empty(), "rank 1 wrote {written:?}");
}

#[test]
fn a_mid_epoch_checkpoint_of_another_world_size_restarts_its_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut task = LinReg::new();
    trainer(&task, &dir_a).with_group(Mirror::new(0, 2)).fit(&mut task, None).unwrap();
    let want = values(&task.params);

    // an epoch checkpoint of 2 ranks resumes exactly in one process
    let mut task = LinReg::new();
    trainer(&task, &tmp.path().join("c")).fit(&mut task, Some(&dir_a.join("epoch_2.safetensors"))).unwrap();
    assert_eq!(values(&task.params), want);

    // stopped in the middle of epoch 2 on 2 ranks, resumed by one process: epoch 2 again from
    // its first iteration (the log lines past the epoch's start are dropped and written again)
    let mut task = LinReg::new();
    let mut first = trainer(&task, &dir_b).with_group(Mirror::new(0, 2));
    task.stop_at = Some(((1, 1), first.interrupt_flag()));
    let FitOutcome::Interrupted { checkpoint } = first.fit(&mut task, None).unwrap() else { panic!("not interrupted") };
    let run = checkpoint::load(&checkpoint, &Device::Cpu).unwrap().run.unwrap();
    assert_eq!((run.epoch, run.iter, run.global_iter, run.world_size), (1, 2, 7, 2));
    let mut task = LinReg::new();
    trainer(&task, &dir_b).fit(&mut task, Some(&checkpoint)).unwrap();
    let iters: Vec<u64> = logged_losses(&dir_b).iter().map(|(g, _)| *g).collect();
    assert_eq!(iters, logged_losses(&dir_a).iter().map(|(g, _)| *g).collect::<Vec<_>>());
    let run = checkpoint::load(&dir_b.join("latest.safetensors"), &Device::Cpu).unwrap().run.unwrap();
    assert_eq!((run.epoch, run.global_iter, run.world_size), (EPOCHS, (EPOCHS * ITERS) as u64, 1));
    assert_ne!(values(&task.params), want, "epoch 2's first steps ran twice");
}
