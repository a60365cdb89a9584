//! A small-scale Figure 2 of the ConvNeXt paper (arXiv 2201.03545, Section 2): every step of
//! the roadmap from ResNet-50 to ConvNeXt-T (`configs/roadmap/`) trained with one short recipe
//! on a small dataset, then a table and a bar chart of each step's accuracy and cost.
//!
//! Each step's config is merged with the recipe (a config whose sections replace the ImageNet
//! data, optimizer, schedule and runner, e.g. `configs/roadmap/shapes/recipe.yaml`), and its
//! widths are multiplied by a scale (the depths, kernels and layer choices stay), so the whole
//! roadmap trains in about an hour on a small CPU. The table gives two costs: the step's GFLOPs
//! at the paper's size (full width, 224x224, fvcore's count, as Figure 2 prints them) and the
//! trained model's at its own widths and input.
//!
//! Every step trains in its own folder under the work dir and writes `result.json` when done;
//! a later call reuses finished steps and resumes an interrupted one, so nothing is lost.

use crate::analyze::{analyze, AnalyzeOptions, CounterChoice};
use crate::train::{train, Resume, TrainOptions};
use anyhow::{bail, Context, Result};
use nextdet_analysis::Counter;
use nextdet_engine::checkpoint::LATEST;
use nextdet_engine::config::Config;
use nextdet_engine::plot::{plot_bars, Bar};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// The sections of Figure 2, in order: the design space each step explores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Section {
    /// ResNet-50 with the modern training recipe.
    Baseline,
    /// Stage compute ratio and the patchify stem (Section 2.2).
    MacroDesign,
    /// Depthwise convolution and the wider network (Section 2.3).
    ResNeXt,
    /// The inverted bottleneck (Section 2.4).
    InvertedBottleneck,
    /// The depthwise conv moved up, then larger kernels (Section 2.5).
    LargeKernel,
    /// Activations, norms and downsampling layers (Section 2.6).
    MicroDesign,
}

impl Section {
    /// Every section, in the figure's order.
    pub const ALL: [Section; 6] = [
        Section::Baseline,
        Section::MacroDesign,
        Section::ResNeXt,
        Section::InvertedBottleneck,
        Section::LargeKernel,
        Section::MicroDesign,
    ];

    /// The name Figure 2 gives it.
    pub fn name(self) -> &'static str {
        match self {
            Section::Baseline => "ResNet-50",
            Section::MacroDesign => "Macro design",
            Section::ResNeXt => "ResNeXt",
            Section::InvertedBottleneck => "Inverted bottleneck",
            Section::LargeKernel => "Large kernel",
            Section::MicroDesign => "Micro design",
        }
    }
}

/// One step of the roadmap: its config's file stem, its label in Figure 2, its section.
#[derive(Clone, Copy, Debug)]
pub struct RoadmapStep {
    /// `configs/roadmap/<file>.yaml`.
    pub file: &'static str,
    /// The figure's label.
    pub label: &'static str,
    /// The figure's section.
    pub section: Section,
}

const fn step(file: &'static str, label: &'static str, section: Section) -> RoadmapStep {
    RoadmapStep { file, label, section }
}

/// The 16 steps of Figure 2, each config inheriting the one before.
pub const STEPS: [RoadmapStep; 16] = [
    step("r50", "ResNet-50", Section::Baseline),
    step("stage_ratio", "stage ratio", Section::MacroDesign),
    step("patchify_stem", "\"patchify\" stem", Section::MacroDesign),
    step("depthwise_conv", "depthwise conv", Section::ResNeXt),
    step("width_96", "width 64 -> 96", Section::ResNeXt),
    step("inverted_bottleneck", "inverting dims", Section::InvertedBottleneck),
    step("move_up_dwconv", "move up d. conv", Section::LargeKernel),
    step("kernel_5", "kernel size 5", Section::LargeKernel),
    step("kernel_7", "kernel size 7", Section::LargeKernel),
    step("kernel_9", "kernel size 9", Section::LargeKernel),
    step("kernel_11", "kernel size 11", Section::LargeKernel),
    step("gelu", "ReLU -> GELU", Section::MicroDesign),
    step("fewer_activations", "fewer activations", Section::MicroDesign),
    step("fewer_norms", "fewer norms", Section::MicroDesign),
    step("layer_norm", "BN -> LN", Section::MicroDesign),
    step("separate_downsampling", "sep. d.s. conv", Section::MicroDesign),
];

/// How to run the roadmap.
#[derive(Clone, Debug)]
pub struct RoadmapOptions {
    /// The folder of the step configs (`configs/roadmap`).
    pub configs: PathBuf,
    /// The short recipe merged over every step.
    pub recipe: PathBuf,
    /// Multiplies every stage width (`model.backbone.dims`), in `(0, 1]`.
    pub width_scale: f64,
    /// One folder per step, and the table and chart.
    pub work_dir: PathBuf,
    /// Overrides (`a.b=value`) applied to every merged config.
    pub overrides: Vec<String>,
}

/// What one step gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoadmapResult {
    /// The step's config file stem.
    pub file: String,
    /// GFLOPs at the paper's size (full width, 224x224, fvcore's count).
    pub paper_gflops: f64,
    /// GFLOPs of the trained model at its widths and test input.
    pub trained_gflops: f64,
    /// Parameters of the trained model.
    pub trained_params: u64,
    /// Best top-1 (%) over the run's evaluations.
    pub top1: f64,
    /// The epoch of that evaluation (from 1).
    pub epoch: usize,
    /// Wall-clock seconds of training (of the last call, for a resumed step).
    pub train_secs: f64,
}

/// The step config `step` merged with the recipe and the scaled widths, as the config of its run.
pub fn step_config(opts: &RoadmapOptions, step: &RoadmapStep) -> Result<Config> {
    load_step(opts, step).map(|(_, merged)| merged)
}

/// The step's own config, as the paper builds it, and [`step_config`]'s.
fn load_step(opts: &RoadmapOptions, step: &RoadmapStep) -> Result<(Config, Config)> {
    if !(opts.width_scale > 0.0 && opts.width_scale <= 1.0) {
        bail!("the width scale must be in (0, 1], not {}", opts.width_scale);
    }
    let file = opts.configs.join(format!("{}.yaml", step.file));
    let full = Config::from_file(&file)?;
    let Some(dims) = full.get("model.backbone.dims").and_then(|d| d.as_sequence()) else {
        bail!("{}: no model.backbone.dims list", file.display());
    };
    let scaled: Vec<String> = dims
        .iter()
        .map(|d| d.as_u64().map(|d| ((d as f64 * opts.width_scale).round() as u64).max(1).to_string()))
        .collect::<Option<_>>()
        .with_context(|| format!("{}: model.backbone.dims must be integers", file.display()))?;
    // The recipe's keys (and its `_delete_` marks) apply over the step's inherited sections, so
    // its text is the merged config's own, under `_base_: <step>`.
    let recipe = std::fs::read_to_string(&opts.recipe)
        .with_context(|| format!("cannot read the recipe {}", opts.recipe.display()))?;
    if recipe.lines().any(|l| l.trim_start().starts_with("_base_")) {
        bail!("{}: a roadmap recipe cannot have a _base_ (it is merged over each step)", opts.recipe.display());
    }
    let abs = std::path::absolute(&file).with_context(|| format!("cannot resolve {}", file.display()))?;
    let text = format!("_base_: {:?}\n{recipe}\n", abs.display().to_string());
    let mut cfg = Config::from_yaml_str(&text, opts.work_dir.join(step.file).join("roadmap_step.yaml"))?;
    let dims = format!("model.backbone.dims=[{}]", scaled.join(", "));
    cfg.apply_overrides(&[dims])?;
    cfg.apply_overrides(&opts.overrides)?;
    Ok((full, cfg))
}

/// The total FLOPs of `cfg`'s model at `shape` (its test input when `None`), in GFLOPs, and
/// its parameters.
fn cost(cfg: &Config, shape: Option<(usize, usize)>) -> Result<(f64, u64)> {
    let report = analyze(cfg, &AnalyzeOptions { shape, counter: CounterChoice::Exactly(Counter::Fvcore) })?;
    Ok((report.root.flops as f64 / 1e9, report.root.params))
}

/// Trains (or reuses) every step in order and returns their results (see the module docs).
/// `on_step` is called before each step with its index.
pub fn run_roadmap(opts: &RoadmapOptions, mut on_step: impl FnMut(usize, &RoadmapStep)) -> Result<Vec<RoadmapResult>> {
    let group = nextdet_dist::world();
    let mut results = Vec::with_capacity(STEPS.len());
    for (i, step) in STEPS.iter().enumerate() {
        let dir = opts.work_dir.join(step.file);
        let done = dir.join("result.json");
        if let Ok(text) = std::fs::read_to_string(&done) {
            let r: RoadmapResult =
                serde_json::from_str(&text).with_context(|| format!("{}: not a roadmap result", done.display()))?;
            results.push(r);
            continue;
        }
        on_step(i, step);
        let (full, cfg) = load_step(opts, step).with_context(|| format!("roadmap step {} ({})", i + 1, step.file))?;
        let (paper_gflops, _) = cost(&full, Some((224, 224)))?;
        let (trained_gflops, trained_params) = cost(&cfg, None)?;
        let resume = if dir.join(LATEST).exists() { Resume::Latest } else { Resume::No };
        let start = Instant::now();
        let report = train(&cfg, TrainOptions { work_dir: Some(dir.clone()), resume, ..Default::default() })
            .with_context(|| format!("training roadmap step {} ({})", i + 1, step.file))?;
        let Some(best) = report.best else {
            bail!("roadmap step {} ({}): the run made no evaluation (the recipe needs a data.test)", i + 1, step.file)
        };
        let r = RoadmapResult {
            file: step.file.to_string(),
            paper_gflops,
            trained_gflops,
            trained_params,
            top1: best.value,
            epoch: best.epoch,
            train_secs: start.elapsed().as_secs_f64(),
        };
        if group.is_main() {
            let text = serde_json::to_string_pretty(&r)?;
            nextdet_engine::checkpoint::write_atomic(&done, text.as_bytes())?;
        }
        group.barrier()?;
        results.push(r);
    }
    Ok(results)
}

/// The chart's axis caption: what the bars measure and how the steps were trained (epochs,
/// input side and recipe of the first step's merged config, the width scale).
pub fn roadmap_caption(opts: &RoadmapOptions) -> Result<String> {
    let cfg = step_config(opts, &STEPS[0])?;
    let epochs = cfg.get("runner.max_epochs").and_then(|v| v.as_u64()).unwrap_or(0);
    let side = cfg.get("data.test.transform.input_size").and_then(|v| v.as_u64()).unwrap_or(224);
    let recipe = opts.recipe.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let s = if epochs == 1 { "" } else { "s" };
    Ok(format!(
        "best top-1 (%) after {epochs} epoch{s} at {side} px ({recipe}), widths x{}; GFLOPs at full width, 224 px",
        opts.width_scale
    ))
}

/// The step a result belongs to.
fn step_of(r: &RoadmapResult) -> Option<&'static RoadmapStep> {
    STEPS.iter().find(|s| s.file == r.file)
}

/// The results as a Markdown table, one row per step.
pub fn roadmap_table(results: &[RoadmapResult]) -> String {
    let mut t = String::from(
        "| step | section | GFLOPs (paper size) | GFLOPs (trained) | params (trained) | top-1 (%) | train time |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let (label, section) = step_of(r).map_or((r.file.as_str(), ""), |s| (s.label, s.section.name()));
        let secs = r.train_secs.round() as u64;
        t.push_str(&format!(
            "| {label} | {section} | {:.1} | {:.3} | {:.2}M | {:.1} | {}:{:02} |\n",
            r.paper_gflops,
            r.trained_gflops,
            r.trained_params as f64 / 1e6,
            r.top1,
            secs / 60,
            secs % 60
        ));
    }
    t
}

/// What [`write_roadmap`] wrote.
#[derive(Clone, Debug)]
pub struct RoadmapFiles {
    /// The table's text ([`roadmap_table`]).
    pub table: String,
    /// `roadmap.md`, the table.
    pub table_path: PathBuf,
    /// `roadmap.png`, the chart.
    pub chart_path: PathBuf,
}

/// Writes `roadmap.md` (the table) and `roadmap.png` (top-1 per step as bars, labelled with
/// top-1 and the paper-size GFLOPs, coloured by section, with [`roadmap_caption`] under the
/// axis) into the work dir.
pub fn write_roadmap(opts: &RoadmapOptions, results: &[RoadmapResult]) -> Result<RoadmapFiles> {
    let dir = &opts.work_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let table = roadmap_table(results);
    let table_path = dir.join("roadmap.md");
    nextdet_engine::checkpoint::write_atomic(&table_path, table.as_bytes())?;
    let bars: Vec<Bar> = results
        .iter()
        .map(|r| Bar {
            label: step_of(r).map_or(r.file.clone(), |s| s.label.to_string()),
            value: r.top1,
            note: format!("{:.1}  ({:.1}G)", r.top1, r.paper_gflops),
            // Section::ALL lists the sections in declaration order
            group: step_of(r).map_or(0, |s| s.section as usize),
        })
        .collect();
    let names: Vec<&str> = Section::ALL.iter().map(|s| s.name()).collect();
    let chart_path = dir.join("roadmap.png");
    let title = "Modernizing a ResNet toward a ConvNeXt (small scale)";
    plot_bars(&chart_path, title, &roadmap_caption(opts)?, &names, &bars).map_err(anyhow::Error::msg)?;
    Ok(RoadmapFiles { table, table_path, chart_path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sections_index_is_its_place_in_the_figure() {
        for (i, s) in Section::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{}", s.name());
        }
    }
}
