//! `nextdet`: the command line of the framework, one binary with subcommands (DESIGN.md,
//! "Command line"). Progress and messages go to stderr; `--json` puts one JSON document on
//! stdout.

mod benchmark;
mod classify;
mod coco_eval;
mod common;
mod convert;
mod detection;
mod infer;
mod make_shapes;
mod test_det;
mod train;
mod train_cls;
mod train_det;

use anyhow::{Context, Result};
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
        #[arg(long, num_args = 1..)]
        eval: Vec<String>,
        /// Classifiers: where to write the metrics JSON. Detectors: where to write the COCO
        /// results (`<stem>.bbox.json`, `<stem>.segm.json`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Detectors: draw every test image with its detections into this folder.
        #[arg(long)]
        show_dir: Option<PathBuf>,
        /// Detectors: the score threshold for `--show-dir`.
        #[arg(long, default_value_t = 0.3)]
        show_score_thr: f32,
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
    /// Train a model from a config: checkpoints, metrics.jsonl and curves.png in the work dir.
    Train {
        config: PathBuf,
        /// Where to write (default `work_dirs/<config name>`).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Continue a run: from CKPT, or from the work dir's latest checkpoint when no path is given.
        #[arg(long, num_args = 0..=1)]
        resume: Option<Option<PathBuf>>,
        /// Start from these weights (a pretrained backbone or detector), not from their run state.
        #[arg(long)]
        load_from: Option<PathBuf>,
        /// Overrides the config's `runner.seed`.
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, num_args = 1..)]
        cfg_options: Vec<String>,
    },
    /// Run a detector on images: a PNG with boxes, names, scores and masks, and a JSON, per image.
    Infer {
        config: PathBuf,
        checkpoint: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(long, default_value = "infer_out")]
        out_dir: PathBuf,
        /// Detections below this score are not drawn or listed.
        #[arg(long, default_value_t = 0.3)]
        score_thr: f32,
        #[arg(long)]
        json: bool,
        #[arg(long, num_args = 1..)]
        cfg_options: Vec<String>,
    },
    /// Evaluate COCO results against COCO ground truth, as pycocotools does: the 12 stats and
    /// a per-category AP table.
    CocoEval {
        /// The COCO ground-truth annotation file.
        #[arg(long)]
        gt: PathBuf,
        /// The COCO results file (a list of detections).
        #[arg(long)]
        dt: PathBuf,
        /// Match boxes (`bbox`) or masks (`segm`).
        #[arg(long, value_enum)]
        iou_type: coco_eval::IouTypeArg,
        /// Print one JSON document instead of the text summary.
        #[arg(long)]
        json: bool,
    },
    /// Generate the built-in shapes datasets: a COCO-format detection set or an ImageFolder.
    MakeShapes {
        /// Output folder (must be absent or empty).
        dir: PathBuf,
        #[arg(long, value_enum)]
        task: make_shapes::Task,
        /// Training images (detection) or training images per class (classification).
        #[arg(long)]
        train: Option<usize>,
        /// Validation images (detection) or validation images per class (classification).
        #[arg(long)]
        val: Option<usize>,
        #[arg(long, default_value_t = nextdet_datasets::shapes::DEFAULT_SEED)]
        seed: u64,
    },
}

/// Keeps freed memory in the process instead of returning it to the kernel after every op.
///
/// A forward pass allocates and frees tensors of tens of megabytes; glibc serves those with
/// `mmap` and unmaps them on free, so every op pays page faults and zeroing for fresh pages
/// (measured: the fused GELU at batch 8 took 32 ms instead of 15 ms). Serving every block from
/// the heap (glibc refuses an mmap threshold above 32 MiB, so mmap is switched off instead) and
/// never trimming it lets large blocks be reused, as PyTorch's caching allocator does.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called before any thread
    // starts and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Sizes the thread pool once, from `--threads`, `RAYON_NUM_THREADS` or the core count, and
/// records the size in `RAYON_NUM_THREADS`: candle asks for the thread count on every matrix
/// multiply, and without the variable std re-reads the cgroup files each time.
fn configure_threads(requested: Option<usize>) -> Result<()> {
    let from_env = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
    let n = match requested.or(from_env) {
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    // candle 0.11 runs its broadcast elementwise ops on a second, spin-waiting thread pool of
    // its own. Our heavy ops and the matrix multiplies use rayon's pool; with both pools on a
    // few cores the spinning thread steals the cores rayon needs (measured: Mask R-CNN training
    // on the shapes set 0.65-0.88 img/s with it, 1.0-1.3 img/s without). Keep candle's pool
    // empty unless the user sized it.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    rayon::ThreadPoolBuilder::new().num_threads(n).build_global().with_context(|| format!("cannot set --threads {n}"))
}

/// The error and its causes on one line, each cause once: the library errors write their cause
/// into their own message (so that `to_string()` alone is complete) and also expose it as the
/// source, which `{:#}` would print a second time.
fn error_report(e: &anyhow::Error) -> String {
    let mut report = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if report.contains(&text) {
            continue;
        }
        if !report.is_empty() {
            report.push_str(": ");
        }
        report.push_str(&text);
    }
    report
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = configure_threads(cli.threads) {
        eprintln!("error: {}", error_report(&e));
        std::process::exit(2);
    }
    if let Err(e) = run(cli.command) {
        eprintln!("error: {}", error_report(&e));
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
        Command::Test { config, checkpoint, eval, out, show_dir, show_score_thr, json, cfg_options } => {
            match common::model_kind(&common::load_config(&config, &cfg_options)?)? {
                common::ModelKind::Classifier => {
                    let eval = if eval.is_empty() { vec!["top1".to_string()] } else { eval };
                    classify::test(&config, &checkpoint, &eval, out.as_deref(), json, &cfg_options)
                }
                common::ModelKind::Detector => {
                    let opts = test_det::TestOptions {
                        eval: &eval,
                        out: out.as_deref(),
                        show_dir: show_dir.as_deref(),
                        score_thr: show_score_thr,
                        json,
                    };
                    test_det::run(&config, &checkpoint, &opts, &cfg_options)
                }
            }
        }
        Command::Benchmark { config, checkpoint, mode, batch, shape, iters, warmup, json, cfg_options } => {
            let opts = benchmark::Options { mode, batch, shape, iters, warmup, json };
            benchmark::run(&config, checkpoint.as_deref(), &opts, &cfg_options)
        }
        Command::Train { config, work_dir, resume, load_from, seed, cfg_options } => {
            let opts = train::TrainOptions { config, work_dir, resume, load_from, seed };
            let cfg = common::load_config(&opts.config, &cfg_options)?;
            match common::model_kind(&cfg)? {
                common::ModelKind::Classifier => train_cls::run(&cfg, &opts),
                common::ModelKind::Detector => train_det::run(&cfg, &opts),
            }
        }
        Command::Infer { config, checkpoint, images, out_dir, score_thr, json, cfg_options } => {
            infer::run(&config, &checkpoint, &images, &out_dir, score_thr, json, &cfg_options)
        }
        Command::CocoEval { gt, dt, iou_type, json } => coco_eval::run(&gt, &dt, iou_type, json),
        Command::MakeShapes { dir, task, train, val, seed } => make_shapes::run(&dir, task, train, val, seed),
    }
}
