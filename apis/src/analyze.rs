//! A config's model in numbers: parameters (total and trainable), FLOPs and activations, in
//! total and per module, counted as the ConvNeXt paper's tools count them (see
//! `nextdet_analysis`): classifiers as fvcore's convolution and matrix-multiply handles (Tables
//! 1, 2 and 10), detectors as mmcv's counter in mmdetection's `get_flops.py` (Table 3: input
//! 1280x800, `forward_dummy` with 1000 RoIs for the box heads and 100 for the mask heads).
//!
//! The model is built (zero weights) and describes its own layers, so the tree is the model's
//! module tree and its parameters are the model's.

use crate::config::{model_config, ModelKind};
use anyhow::{bail, Context, Result};
use nextdet_analysis::{CostTree, Counter, ModuleCost};
use nextdet_engine::config::Config;
use nextdet_heads::roi::DUMMY_ROIS;
use nextdet_models::ModelConfig;
use serde::Serialize;
use std::collections::HashSet;

/// Which convention counts the FLOPs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CounterChoice {
    /// What the paper's tables print: [`Counter::FvcoreConvMatmul`] for classifiers,
    /// [`Counter::Mmcv`] for detectors.
    #[default]
    Paper,
    /// This counter.
    Exactly(Counter),
}

/// `analyze`'s settings.
#[derive(Clone, Debug, Default)]
pub struct AnalyzeOptions {
    /// Input `(height, width)`; default: the config's `data.test.transform.input_size` (else
    /// 224) for classifiers, 1280x800 for detectors (`get_flops.py`'s default).
    pub shape: Option<(usize, usize)>,
    /// The counting convention.
    pub counter: CounterChoice,
}

/// What `analyze` found.
#[derive(Clone, Debug, Serialize)]
pub struct AnalyzeReport {
    /// The model type (`ImageClassifier`, `MaskRCNN`, `CascadeRCNN`).
    pub model: String,
    /// The input, `[1, 3, H, W]`.
    pub input: Vec<usize>,
    /// The counter the FLOPs follow.
    pub counter: Counter,
    /// Detectors: the RoIs the box and mask heads are counted on.
    pub rois: Option<(usize, usize)>,
    /// The whole model and, nested, its modules.
    pub root: ModuleCost,
}

/// The default input side of a classifier config: its test transform's `input_size`, or 224.
fn classifier_side(cfg: &Config) -> usize {
    cfg.get("data.test.transform.input_size").and_then(|v| v.as_u64()).map_or(224, |v| v as usize)
}

/// Counts the model of `cfg` (see the module docs).
pub fn analyze(cfg: &Config, opts: &AnalyzeOptions) -> Result<AnalyzeReport> {
    let model_cfg = model_config(cfg)?;
    let (kind, name) = match &model_cfg {
        ModelConfig::ImageClassifier(_) => (ModelKind::Classifier, "ImageClassifier"),
        ModelConfig::MaskRCNN(_) => (ModelKind::Detector, "MaskRCNN"),
        ModelConfig::CascadeRCNN(_) => (ModelKind::Detector, "CascadeRCNN"),
    };
    let (h, w) = match (opts.shape, kind) {
        (Some(s), _) => s,
        (None, ModelKind::Classifier) => (classifier_side(cfg), classifier_side(cfg)),
        (None, ModelKind::Detector) => (1280, 800),
    };
    let counter = match (opts.counter, kind) {
        (CounterChoice::Exactly(c), _) => c,
        (CounterChoice::Paper, ModelKind::Classifier) => Counter::FvcoreConvMatmul,
        (CounterChoice::Paper, ModelKind::Detector) => Counter::Mmcv,
    };
    // Zero weights: the shapes and names are the model's, the values do not matter.
    let store = nextdet_ops::ParamStore::zeros(&candle_core::Device::Cpu);
    let model = nextdet_models::build_model_in(&model_cfg, store, 0).context("building the model")?;
    let input = vec![1, 3, h, w];
    let mut tree = CostTree::new();
    model.cost(&input, &mut tree).with_context(|| format!("describing the model on a {h}x{w} input"))?;
    check_parameters(&tree, model.params())?;
    let trainable: HashSet<String> = model.params().trainable().into_iter().map(|(n, _)| n).collect();
    let root = tree.report(counter, &|p| trainable.contains(p));
    let rois = (kind == ModelKind::Detector).then_some(DUMMY_ROIS);
    Ok(AnalyzeReport { model: name.to_string(), input, counter, rois, root })
}

/// Every parameter the description names must be one of the model's with the same size: a
/// description that drifted from the model is an error, not a wrong count.
fn check_parameters(tree: &CostTree, params: &nextdet_ops::ParamStore) -> Result<()> {
    let sizes: std::collections::HashMap<String, u64> =
        params.tensors().into_iter().map(|(n, t)| (n, t.elem_count() as u64)).collect();
    for (name, numel) in tree.parameters() {
        match sizes.get(&name) {
            Some(&n) if n == numel => {}
            Some(&n) => bail!("the layer description names `{name}` with {numel} elements, the model has {n}"),
            None => bail!("the layer description names `{name}`, which the model does not have"),
        }
    }
    Ok(())
}

/// `1234567` as `1.23M`, `4456000000` as `4.46G`.
pub fn human(v: u64) -> String {
    let v = v as f64;
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.2}K", v / 1e3),
        v => format!("{v:.0}"),
    }
}

impl AnalyzeReport {
    /// The module tree cut at `depth` levels as a text table (one module per line, indented),
    /// then a total line with the FLOPs by operator.
    pub fn table(&self, depth: usize) -> String {
        let root = self.root.truncated(depth);
        let rows: Vec<&ModuleCost> = root.flatten();
        let width = rows.iter().map(|m| indent_name(m).len()).max().unwrap_or(5).max(6);
        let mut out =
            format!("{:<width$}  {:>9}  {:>9}  {:>9}  {:>9}\n", "module", "params", "trainable", "FLOPs", "acts");
        for m in rows {
            out += &format!(
                "{:<width$}  {:>9}  {:>9}  {:>9}  {:>9}\n",
                indent_name(m),
                human(m.params),
                human(m.trainable),
                human(m.flops),
                human(m.acts)
            );
        }
        let ops: Vec<String> = self.root.flops_by_op.iter().map(|(op, v)| format!("{op} {}", human(*v))).collect();
        let [_, _, h, w] = self.input[..] else { unreachable!("the input is [1, 3, H, W]") };
        out += &format!(
            "{} at {h}x{w}: {} parameters ({} trainable), {} FLOPs ({}; {}), {} activations\n",
            self.model,
            human(self.root.params),
            human(self.root.trainable),
            human(self.root.flops),
            self.counter.name(),
            if ops.is_empty() { "none".to_string() } else { ops.join(", ") },
            human(self.root.acts)
        );
        if let Some((r, m)) = self.rois {
            out += &format!("RoI heads counted on {r} RoIs (box) and {m} (mask), as mmdetection's forward_dummy\n");
        }
        out
    }
}

/// The module's last name segment, indented by its depth (`model` for the root).
fn indent_name(m: &ModuleCost) -> String {
    if m.name.is_empty() {
        return "model".to_string();
    }
    let depth = m.name.split('.').count();
    format!("{}{}", "  ".repeat(depth), m.name)
}
