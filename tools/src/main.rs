//! `nextdet`: the command line of the framework, one binary with subcommands (DESIGN.md,
//! "Command line"). Progress and messages go to stderr; `--json` puts one JSON document on
//! stdout.

mod benchmark;
mod classify;
mod common;
mod convert;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// ConvNeXt detection, segmentation and classification on candle.
#[derive(Parser)]
#[command(name = "nextdet", version, about)]
struct Cli {
    /// Worker threads for the CPU kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a config with its `_base_` files merged and overrides applied.
    PrintConfig {
        config: PathBuf,
        /// Overrides `a.b.c=value` (YAML scalars or lists).
        #[arg(long, num_args = 1..)]
        cfg_options: Vec<String>,
    },
    /// Convert a checkpoint (.pth or safetensors, official or timm names) to safetensors.
    ConvertWeights { input: PathBuf, output: PathBuf },
    /// Classify images with a classifier config and checkpoint: top-k names and probabilities.
    Classify {
        config: PathBuf,
        checkpoint: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(long, default_value_t = 5)]
        topk: usize,
        #[arg(long)]
        json: bool,
        #[arg(long, num_args = 1..)]
        cfg_options: Vec<String>,
    },
    /// Evaluate a checkpoint on the config's test set (classification: top-1 / top-5).
    Test {
        config: PathBuf,
        checkpoint: PathBuf,
        /// Metrics to compute: `top1` (with top-5) for classifiers; `bbox segm` for detectors.
        #[arg(long, num_args = 1.., default_value = "top1")]
        eval: Vec<String>,
        /// Where to write the metrics JSON.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[arg(long, num_args = 1..)]
        cfg_options: Vec<String>,
    },
    /// Time a model's forward (or forward and backward) pass on random input.
    Benchmark {
        config: PathBuf,
        /// Weights to load first (random init otherwise).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "infer")]
        mode: benchmark::Mode,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Input size `HxW`.
        #[arg(long, default_value = "224x224")]
        shape: String,
        #[arg(long, default_value_t = 10)]
        iters: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long)]
        json: bool,
        #[arg(long, num_args = 1..)]
        cfg_options: Vec<String>,
    },
    /// Train a model from a config (not built yet).
    Train {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a detector on images and draw the results (not built yet).
    Infer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Evaluate COCO results against ground truth (not built yet).
    CocoEval {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Generate the built-in shapes datasets (not built yet).
    MakeShapes {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n).build_global() {
            eprintln!("error: cannot set --threads {n}: {e}");
            std::process::exit(2);
        }
    }
    if let Err(e) = run(cli.command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::PrintConfig { config, cfg_options } => {
            print!("{}", common::load_config(&config, &cfg_options)?.to_yaml_string()?);
            Ok(())
        }
        Command::ConvertWeights { input, output } => convert::run(&input, &output),
        Command::Classify { config, checkpoint, images, topk, json, cfg_options } => {
            classify::classify(&config, &checkpoint, &images, topk, json, &cfg_options)
        }
        Command::Test { config, checkpoint, eval, out, json, cfg_options } => {
            classify::test(&config, &checkpoint, &eval, out.as_deref(), json, &cfg_options)
        }
        Command::Benchmark { config, checkpoint, mode, batch, shape, iters, warmup, json, cfg_options } => {
            let opts = benchmark::Options { mode, batch, shape, iters, warmup, json };
            benchmark::run(&config, checkpoint.as_deref(), &opts, &cfg_options)
        }
        Command::Train { .. } => not_built("train", "the training engine (issue 5) and the detectors (issue 6)"),
        Command::Infer { .. } => not_built("infer", "the detectors (issue 6)"),
        Command::CocoEval { .. } => not_built("coco-eval", "COCO evaluation (issue 4)"),
        Command::MakeShapes { .. } => not_built("make-shapes", "the shapes datasets (issue 4)"),
    }
}

/// Refuses a subcommand that does not exist yet, with a non-zero exit, instead of pretending.
fn not_built(name: &str, needs: &str) -> Result<()> {
    eprintln!("error: `nextdet {name}` is not built yet; it needs {needs}");
    std::process::exit(2);
}
