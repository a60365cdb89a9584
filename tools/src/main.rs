//! `nextdet`: the command line of the framework, one binary with subcommands over the
//! `nextdet-apis` library. This crate parses arguments, prints and sets exit codes; the work
//! is in the library. Progress and messages go to stderr; `--json` puts one JSON document on
//! stdout.

mod coco_eval;
mod convert;
mod launch;
mod logging;
mod make_shapes;
mod print;

use anyhow::Result;
use clap::{Parser, Subcommand};
use nextdet_analysis::Counter;
use nextdet_apis::roadmap::RoadmapOptions;
use nextdet_apis::{AnalyzeOptions, BenchMode, BenchOptions, CounterChoice, Resume, TestOptions, TrainOptions};
use nextdet_engine::trainer::FitOutcome;
use std::path::PathBuf;

/// The exit status of a run stopped by Ctrl-C (after saving its `interrupted` checkpoint), as a
/// shell reports a process ended by SIGINT.
const EXIT_INTERRUPTED: i32 = 130;

/// ConvNeXt detection, segmentation and classification on candle.
#[derive(Parser)]
#[command(name = "nextdet", version, about)]
struct Cli {
    /// Worker threads for the CPU kernels (default: all cores; in an MPI run, the cores divided
    /// among the machine's ranks; with `--launcher threads`, the ranks, one thread each).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Only errors and warnings on stderr.
    #[arg(long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Debug messages too (`RUST_LOG` sets the filter in full, e.g. `nextdet_engine=debug`).
    #[arg(long, global = true)]
    verbose: bool,
    /// Inference precision of the pointwise layers: `f32`, or `bf16` (AVX-512 BF16; the
    /// config's `precision` key otherwise).
    #[arg(long, global = true, value_parser = ["f32", "bf16"])]
    precision: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// `--cfg-options a.b.c=value ...` and `--device`: overrides of config keys (YAML values).
#[derive(Clone, clap::Args)]
struct Overrides {
    /// Overrides `a.b.c=value` (YAML scalars or lists).
    #[arg(long, num_args = 1..)]
    cfg_options: Vec<String>,
    /// Where the model runs: `cpu`, `cuda` or `cuda:N` (the config's `device`, default cpu;
    /// CUDA needs a build with `--features cuda`).
    #[arg(long)]
    device: Option<String>,
}

impl Overrides {
    /// The `--cfg-options` with `--device` last, as `device=...`.
    fn all(&self) -> Vec<String> {
        let mut all = self.cfg_options.clone();
        all.extend(self.device.iter().map(|d| format!("device={d}")));
        all
    }
}

#[derive(Clone, Subcommand)]
enum Command {
    /// Print a config with its `_base_` files merged and overrides applied.
    PrintConfig {
        config: PathBuf,
        #[command(flatten)]
        o: Overrides,
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
        /// Print one JSON document on stdout instead of the text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        o: Overrides,
    },
    /// Evaluate a checkpoint on the config's test split: COCO AP for detectors, top-1 / top-5
    /// for classifiers.
    Test {
        config: PathBuf,
        checkpoint: PathBuf,
        /// Metrics: `bbox segm` for detectors (default: both with masks); `top1` for classifiers.
        #[arg(long, num_args = 1..)]
        eval: Vec<String>,
        /// Detectors: where to write the COCO results (`<stem>.bbox.json`, `<stem>.segm.json`).
        /// Classifiers: the metrics JSON.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Detectors: draw every test image with its detections into this folder.
        #[arg(long)]
        show_dir: Option<PathBuf>,
        /// Detectors: the score threshold for `--show-dir`.
        #[arg(long, default_value_t = 0.3)]
        show_score_thr: f32,
        /// Print one JSON document on stdout instead of the text.
        #[arg(long)]
        json: bool,
        /// `mpi`: one rank of an MPI job (`tools/dist_test.sh`); `threads`: one rank per
        /// `--threads` thread in this process; default: MPI when the environment announces
        /// several ranks, else one process.
        #[arg(long, value_enum)]
        launcher: Option<launch::LauncherArg>,
        #[command(flatten)]
        o: Overrides,
    },
    /// Time a model's forward (or forward and backward) pass on random input.
    Benchmark {
        config: PathBuf,
        /// Weights to load first (random init otherwise).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "infer")]
        mode: ModeArg,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Input size `HxW`.
        #[arg(long, default_value = "224x224")]
        shape: String,
        #[arg(long, default_value_t = 10)]
        iters: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Print one JSON document on stdout instead of the text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        o: Overrides,
    },
    /// Count a model's parameters, FLOPs and activations, in total and per module, as the paper's
    /// tools count them (classifiers: fvcore; detectors: mmcv in mmdetection's get_flops.py).
    Analyze {
        config: PathBuf,
        /// Input size `HxW` (default: the config's test input size, or 224; detectors 1280x800).
        #[arg(long)]
        shape: Option<String>,
        /// Levels of submodules listed.
        #[arg(long, default_value_t = 2)]
        depth: usize,
        /// `paper` (classifiers: fvcore's conv and matmul handles; detectors: mmcv), `fvcore`
        /// (all of fvcore's default handles), `fvcore-conv-matmul` or `mmcv`.
        #[arg(long, value_enum, default_value = "paper")]
        counter: CounterArg,
        /// Print one JSON document on stdout instead of the text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        o: Overrides,
    },
    /// Train every step of the ConvNeXt paper's roadmap (Figure 2) with one short recipe at
    /// scaled widths; write a table (roadmap.md) and a bar chart (roadmap.png) in the work dir.
    Roadmap {
        /// The step configs.
        #[arg(long, default_value = "configs/roadmap")]
        configs: PathBuf,
        /// The recipe merged over every step.
        #[arg(long, default_value = "configs/roadmap/shapes/recipe.yaml")]
        recipe: PathBuf,
        /// Multiplies every stage width.
        #[arg(long, default_value_t = 0.25)]
        width_scale: f64,
        #[arg(long, default_value = "work_dirs/roadmap")]
        work_dir: PathBuf,
        /// `threads`: one rank per `--threads` thread in this process; default: one process.
        #[arg(long, value_enum)]
        launcher: Option<launch::LauncherArg>,
        /// Applied to every step's merged config.
        #[command(flatten)]
        o: Overrides,
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
        /// Start a new run in a work dir that holds another one, moving the old run's files into
        /// `<work dir>/previous_runs/<n>/` first.
        #[arg(long)]
        overwrite: bool,
        /// `mpi`: one rank of an MPI job (`tools/dist_train.sh`); `threads`: one rank per
        /// `--threads` thread in this process; default: MPI when the environment announces
        /// several ranks, else one process.
        #[arg(long, value_enum)]
        launcher: Option<launch::LauncherArg>,
        #[command(flatten)]
        o: Overrides,
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
        /// Print one JSON document on stdout instead of the text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        o: Overrides,
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

/// `analyze --counter`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CounterArg {
    /// What the paper prints: fvcore-conv-matmul for classifiers, mmcv for detectors.
    Paper,
    /// fvcore's FlopCountAnalysis with all its default handles.
    Fvcore,
    /// fvcore's convolution and matrix-multiply handles only.
    FvcoreConvMatmul,
    /// mmcv's get_model_complexity_info.
    Mmcv,
}

/// What one benchmark iteration runs.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ModeArg {
    /// Forward pass in evaluation mode.
    Infer,
    /// A training step: forward in training mode, the loss, backward and an AdamW step.
    Train,
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
    nextdet_apis::runtime::keep_freed_memory();
    let cli = Cli::parse();
    // train and test run on every rank of an MPI job; the other commands in one process
    let launcher = match &cli.command {
        Command::Train { launcher, .. } | Command::Test { launcher, .. } | Command::Roadmap { launcher, .. } => {
            Some(*launcher)
        }
        _ => None,
    };
    if let Some(Some(launch::LauncherArg::Threads)) = launcher {
        logging::init(cli.quiet, cli.verbose);
        let code = launch::in_threads(cli.threads, |_| run(cli.command.clone(), cli.precision.clone()));
        std::process::exit(code)
    }
    let guard = match launcher.map(|l| nextdet_dist::init(l.map(Into::into))) {
        Some(Err(e)) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
        Some(Ok(guard)) => Some(guard),
        None => None,
    };
    let group = nextdet_dist::world();
    launch::abort_on_panic(group.clone());
    // the other ranks of a data-parallel run show only warnings and errors
    logging::init(cli.quiet || !group.is_main(), cli.verbose);
    if let Err(e) = nextdet_apis::runtime::configure_threads(cli.threads, group.local_size()) {
        launch::fail(&*group, &error_report(&e), 2);
    }
    match run(cli.command, cli.precision) {
        Ok(code) => {
            drop(guard);
            std::process::exit(code)
        }
        Err(e) => launch::fail(&*group, &error_report(&e), 1),
    }
}

/// Runs a command; the exit status on success.
fn run(command: Command, precision: Option<String>) -> Result<i32> {
    let load = |config: &PathBuf, o: &Overrides| {
        let mut overrides = o.all();
        overrides.extend(precision.iter().map(|p| format!("precision={p}")));
        nextdet_apis::load_config(config, &overrides)
    };
    match command {
        Command::PrintConfig { config, o } => print!("{}", load(&config, &o)?.to_yaml_string()?),
        Command::ConvertWeights { input, output } => convert::run(&input, &output)?,
        Command::Classify { config, checkpoint, images, topk, json, o } => {
            let classifier = nextdet_apis::init_classifier(&load(&config, &o)?, &checkpoint)?;
            let mut all = Vec::new();
            for chunk in images.chunks(8) {
                let paths: Vec<&std::path::Path> = chunk.iter().map(PathBuf::as_path).collect();
                for (path, top) in chunk.iter().zip(classifier.classify_files(&paths, topk)?) {
                    if !json {
                        print::classification(path, &top);
                    }
                    all.push(serde_json::json!({"image": path, "topk": top}));
                }
            }
            if json {
                println!("{}", serde_json::Value::Array(all));
            }
        }
        Command::Test { config, checkpoint, eval, out, show_dir, show_score_thr, json, launcher: _, o } => {
            let opts = TestOptions { eval, out, show_dir, show_score_thr };
            let report = nextdet_apis::test(&load(&config, &o)?, &checkpoint, &opts)?;
            if nextdet_dist::world().is_main() {
                print::test_report(&report, &config, &checkpoint, json);
            }
        }
        Command::Benchmark { config, checkpoint, mode, batch, shape, iters, warmup, json, o } => {
            let mode = match mode {
                ModeArg::Infer => BenchMode::Infer,
                ModeArg::Train => BenchMode::Train,
            };
            let opts =
                BenchOptions { mode, batch, shape: nextdet_apis::benchmark::parse_shape(&shape)?, iters, warmup };
            let report = nextdet_apis::benchmark(&load(&config, &o)?, checkpoint.as_deref(), &opts)?;
            print::benchmark(&report, &config, &opts, json);
        }
        Command::Roadmap { configs, recipe, width_scale, work_dir, launcher: _, o } => {
            let opts = RoadmapOptions { configs, recipe, width_scale, work_dir, overrides: o.all() };
            let results = nextdet_apis::roadmap::run_roadmap(&opts, |i, step| {
                tracing::info!("roadmap step {}/{}: {}", i + 1, nextdet_apis::roadmap::STEPS.len(), step.label)
            })?;
            if nextdet_dist::world().is_main() {
                let written = nextdet_apis::roadmap::write_roadmap(&opts, &results)?;
                print!("{}", written.table);
                eprintln!("wrote {} and {}", written.table_path.display(), written.chart_path.display());
            }
        }
        Command::Analyze { config, shape, depth, counter, json, o } => {
            let counter = match counter {
                CounterArg::Paper => CounterChoice::Paper,
                CounterArg::Fvcore => CounterChoice::Exactly(Counter::Fvcore),
                CounterArg::FvcoreConvMatmul => CounterChoice::Exactly(Counter::FvcoreConvMatmul),
                CounterArg::Mmcv => CounterChoice::Exactly(Counter::Mmcv),
            };
            let shape = shape.as_deref().map(nextdet_apis::benchmark::parse_shape).transpose()?;
            let report = nextdet_apis::analyze(&load(&config, &o)?, &AnalyzeOptions { shape, counter })?;
            print::analyze(&report, &config, depth, json)?;
        }
        Command::Train { config, work_dir, resume, load_from, seed, overwrite, launcher: _, o } => {
            let resume = match resume {
                None => Resume::No,
                Some(None) => Resume::Latest,
                Some(Some(path)) => Resume::From(path),
            };
            let mut opts = TrainOptions { work_dir, resume, load_from, seed, overwrite, hooks: Vec::new() };
            if let Some(fault) = nextdet_engine::trainer::hooks::FaultHook::from_env()? {
                opts.hooks.push(Box::new(fault));
            }
            let report = nextdet_apis::train(&load(&config, &o)?, opts)?;
            if !nextdet_dist::world().is_main() {
                return Ok(match report.outcome {
                    FitOutcome::Interrupted { .. } => EXIT_INTERRUPTED,
                    FitOutcome::Completed { .. } => 0,
                });
            }
            if let Some(best) = &report.best {
                eprintln!("best {}: {:.4} (epoch {})", best.name, best.value, best.epoch);
            }
            return Ok(match report.outcome {
                FitOutcome::Interrupted { checkpoint } => {
                    eprintln!(
                        "interrupted; saved {}; resume with `nextdet train {} --resume`",
                        checkpoint.display(),
                        config.display()
                    );
                    EXIT_INTERRUPTED
                }
                FitOutcome::Completed { .. } => {
                    eprintln!("done; the checkpoints and metrics.jsonl are in {}", report.work_dir.display());
                    0
                }
            });
        }
        Command::Infer { config, checkpoint, images, out_dir, score_thr, json, o } => {
            let detector = nextdet_apis::init_detector(&load(&config, &o)?, &checkpoint)?;
            let records = nextdet_apis::infer::infer_files(&detector, &images, &out_dir, score_thr, |r| {
                let n = r.json["detections"].as_array().map_or(0, Vec::len);
                eprintln!("{}: {n} detections >= {score_thr}, drawn to {}", r.image.display(), r.drawing.display());
            })?;
            if json {
                println!("{}", serde_json::Value::Array(records.into_iter().map(|r| r.json).collect()));
            }
        }
        Command::CocoEval { gt, dt, iou_type, json } => coco_eval::run(&gt, &dt, iou_type, json)?,
        Command::MakeShapes { dir, task, train, val, seed } => make_shapes::run(&dir, task, train, val, seed)?,
    }
    Ok(0)
}
