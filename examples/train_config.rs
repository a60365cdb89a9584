//! Train a config from a program, with a hook of one's own in the training loop (here: a line
//! per optimizer step): `cargo run --release --example train_config -- CONFIG WORK_DIR`.

use anyhow::{bail, Result};
use nextdet_apis::{train, TrainOptions};
use nextdet_engine::trainer::{FitOutcome, Hook, TrainError, TrainState};
use std::path::PathBuf;

/// Prints the total loss after every optimizer step.
struct PrintLoss;

impl Hook for PrintLoss {
    fn after_step(&mut self, s: &mut TrainState) -> Result<(), TrainError> {
        if s.step.stepped {
            println!(
                "epoch {} iter {}: loss {:.4} (lr {:.2e})",
                s.step.epoch + 1,
                s.step.iter + 1,
                s.step.total,
                s.step.lr
            );
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [config, work_dir] = args.as_slice() else { bail!("usage: train_config CONFIG WORK_DIR") };
    let cfg = nextdet_apis::load_config(config, &[])?;
    let opts =
        TrainOptions { work_dir: Some(work_dir.clone()), hooks: vec![Box::new(PrintLoss)], ..Default::default() };
    let report = train(&cfg, opts)?;
    if let FitOutcome::Completed { checkpoint: Some(path) } = &report.outcome {
        println!("trained: {}", path.display());
    }
    Ok(())
}
