//! `nextdet analyze` against the two counters the ConvNeXt paper's numbers come from, run on the
//! PyTorch reference models by `tests/reference/make_complexity_fixtures.py`:
//!
//! - per module (parameters, trainable parameters, FLOPs by operator, activations) against
//!   fvcore's `FlopCountAnalysis.by_module_and_operator()` and `ActivationCountAnalysis` for
//!   ConvNeXt-T, ConvNeXt-isotropic-S and torchvision's ResNet-50 (`classifiers.json`), and
//!   against mmcv's `get_model_complexity_info` as mmdetection's
//!   `tools/analysis_tools/get_flops.py` runs it for Mask R-CNN and Cascade Mask R-CNN ConvNeXt-T
//!   (`detectors.json`);
//! - per module against fvcore for every step of the roadmap from ResNet-50 to ConvNeXt-T
//!   (`roadmap.json`, the reference `tests/reference/roadmap_ref.py`; `configs/roadmap/`), and
//!   the GFLOPs the paper prints for each step (Figure 2 / Table 10);
//! - in total for every model of the paper's Tables 1 to 3 (`totals.json`);
//! - the numbers the paper prints (arXiv 2201.03545, Tables 1, 2 and 3), within the rounding of
//!   the printed digit.

mod common;

use common::{nextdet, root, stderr, stdout};
use nextdet_analysis::{Counter, ModuleCost};
use nextdet_apis::{analyze, load_config, AnalyzeOptions, AnalyzeReport, CounterChoice};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One module of a fixture: what the reference counter reported for it.
#[derive(Deserialize)]
struct Expected<F> {
    params: u64,
    trainable: u64,
    flops: F,
    #[serde(default)]
    acts: Option<u64>,
}

/// fvcore's FLOPs of a module by operator (operators counting zero left out).
type ByOp = BTreeMap<String, u64>;

fn fixture<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = root().join("tests/fixtures/complexity").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(config: &str, counter: Counter, shape: Option<(usize, usize)>) -> AnalyzeReport {
    let cfg = load_config(&root().join(config), &[]).unwrap_or_else(|e| panic!("{config}: {e:#}"));
    let opts = AnalyzeOptions { shape, counter: CounterChoice::Exactly(counter) };
    analyze(&cfg, &opts).unwrap_or_else(|e| panic!("{config}: {e:#}"))
}

fn modules(report: &AnalyzeReport) -> HashMap<String, &ModuleCost> {
    report.root.flatten().into_iter().map(|m| (m.name.clone(), m)).collect()
}

fn by_op(m: &ModuleCost) -> ByOp {
    m.flops_by_op.iter().filter(|(_, &v)| v > 0).map(|(k, &v)| (k.to_string(), v)).collect()
}

/// Compares every module of `want` with ours (a module we do not list counts as all zeros) and
/// checks that every module we list with a nonzero count is in `want`; `flops` reads the FLOPs
/// of one of our modules in the fixture's form. Returns the differences, one line each.
fn compare<F: PartialEq + std::fmt::Debug + Default>(
    what: &str,
    want: &BTreeMap<String, Expected<F>>,
    ours: &HashMap<String, &ModuleCost>,
    flops: impl Fn(&ModuleCost) -> F,
) -> Vec<String> {
    let zero = ModuleCost::default();
    let mut diffs = Vec::new();
    for (name, w) in want {
        let m = ours.get(name).copied().unwrap_or(&zero);
        let got = (m.params, m.trainable, flops(m), m.acts);
        let expected = (w.params, w.trainable, &w.flops, w.acts.unwrap_or(m.acts));
        if (got.0, got.1, &got.2, got.3) != expected {
            diffs.push(format!(
                "{what} `{name}`: ours (params, trainable, flops, acts) {got:?}, reference {expected:?}"
            ));
        }
    }
    for (name, m) in ours {
        let counts = m.params > 0 || m.flops > 0 || m.acts > 0;
        if counts && !want.contains_key(name) {
            diffs.push(format!("{what} `{name}`: not a module of the reference, ours counts {m:?}"));
        }
    }
    diffs
}

#[test]
fn classifiers_match_fvcore_per_module() {
    let fx: BTreeMap<String, BTreeMap<String, Expected<ByOp>>> = fixture("classifiers.json");
    assert_eq!(fx.len(), 3, "ConvNeXt-T, isotropic-S, ResNet-50");
    let mut diffs = Vec::new();
    for (name, want) in &fx {
        let report = run(&format!("configs/imagenet/{name}.yaml"), Counter::Fvcore, Some((224, 224)));
        diffs.extend(compare(name, want, &modules(&report), by_op));
        // The paper's counter is the convolution and matrix-multiply handles of the same count.
        let conv_matmul: u64 = want[""]
            .flops
            .iter()
            .filter(|(op, _)| ["conv", "linear", "matmul"].contains(&op.as_str()))
            .map(|(_, v)| v)
            .sum();
        let paper = run(&format!("configs/imagenet/{name}.yaml"), Counter::FvcoreConvMatmul, Some((224, 224)));
        if paper.root.flops != conv_matmul {
            diffs.push(format!("{name}: conv + matmul FLOPs {}, fvcore's {conv_matmul}", paper.root.flops));
        }
    }
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
}

#[test]
fn detectors_match_mmcv_per_module() {
    let fx: BTreeMap<String, BTreeMap<String, Expected<u64>>> = fixture("detectors.json");
    assert_eq!(fx.len(), 2, "Mask R-CNN and Cascade Mask R-CNN ConvNeXt-T");
    let mut diffs = Vec::new();
    for (name, want) in &fx {
        let dir = if name.starts_with("cascade") { "cascade_mask_rcnn" } else { "mask_rcnn" };
        let report = run(&format!("configs/{dir}/{name}.yaml"), Counter::Mmcv, None);
        assert_eq!(report.input, [1, 3, 1280, 800], "get_flops.py's default input");
        diffs.extend(compare(name, want, &modules(&report), |m| m.flops));
    }
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
}

/// The config of each model of `totals.json`.
const TOTALS: &[(&str, &str)] = &[
    ("convnext_tiny_224", "configs/imagenet/convnext_tiny_1k_224.yaml"),
    ("convnext_tiny_384", "configs/imagenet/convnext_tiny_22k_1k_384.yaml"),
    ("convnext_small_224", "configs/imagenet/convnext_small_1k_224.yaml"),
    ("convnext_small_384", "configs/imagenet/convnext_small_22k_1k_384.yaml"),
    ("convnext_base_224", "configs/imagenet/convnext_base_1k_224.yaml"),
    ("convnext_base_384", "configs/imagenet/convnext_base_1k_384.yaml"),
    ("convnext_large_224", "configs/imagenet/convnext_large_1k_224.yaml"),
    ("convnext_large_384", "configs/imagenet/convnext_large_1k_384.yaml"),
    ("convnext_xlarge_224", "configs/imagenet/convnext_xlarge_22k_1k_224.yaml"),
    ("convnext_xlarge_384", "configs/imagenet/convnext_xlarge_22k_1k_384.yaml"),
    ("convnext_isotropic_small_224", "configs/imagenet/convnext_isotropic_small_1k_224.yaml"),
    ("convnext_isotropic_base_224", "configs/imagenet/convnext_isotropic_base_1k_224.yaml"),
    ("convnext_isotropic_large_224", "configs/imagenet/convnext_isotropic_large_1k_224.yaml"),
    ("resnet50_224", "configs/imagenet/resnet50_1k_224.yaml"),
    ("mask_rcnn_convnext_tiny", "configs/mask_rcnn/mask_rcnn_convnext_tiny_fpn_3x_coco.yaml"),
    ("cascade_mask_rcnn_convnext_tiny", "configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_tiny_fpn_3x_coco.yaml"),
    ("cascade_mask_rcnn_convnext_small", "configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_small_fpn_3x_coco.yaml"),
    ("cascade_mask_rcnn_convnext_base", "configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_base_fpn_3x_coco.yaml"),
    (
        "cascade_mask_rcnn_convnext_large",
        "configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_large_fpn_3x_coco_in22k.yaml",
    ),
    (
        "cascade_mask_rcnn_convnext_xlarge",
        "configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_xlarge_fpn_3x_coco_in22k.yaml",
    ),
    ("cascade_mask_rcnn_r50", "configs/cascade_mask_rcnn/cascade_mask_rcnn_r50_fpn_3x_coco.yaml"),
];

/// A total of `totals.json`: fvcore's FLOPs by operator (classifiers) or mmcv's (detectors).
#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum Flops {
    Mmcv(u64),
    Fvcore(ByOp),
}

impl Default for Flops {
    fn default() -> Self {
        Flops::Mmcv(0)
    }
}

#[test]
fn every_table_model_matches_the_reference_counters_in_total() {
    let fx: BTreeMap<String, Expected<Flops>> = fixture("totals.json");
    let listed: BTreeSet<&str> = TOTALS.iter().map(|(n, _)| *n).collect();
    assert_eq!(fx.keys().map(String::as_str).collect::<BTreeSet<_>>(), listed, "a config for every model");
    let mut diffs = Vec::new();
    for &(name, config) in TOTALS {
        let want = &fx[name];
        let side = name.rsplit('_').next().and_then(|s| s.parse().ok());
        let (counter, shape) = match side {
            Some(s) => (Counter::Fvcore, Some((s, s))),
            None => (Counter::Mmcv, None),
        };
        let r = run(config, counter, shape).root;
        let flops = match counter {
            Counter::Mmcv => Flops::Mmcv(r.flops),
            _ => Flops::Fvcore(by_op(&r)),
        };
        if (r.params, r.trainable, &flops) != (want.params, want.trainable, &want.flops) {
            diffs.push(format!(
                "{name} ({config}): ours {:?}, reference {:?}",
                (r.params, r.trainable, flops),
                (want.params, want.trainable, &want.flops)
            ));
        }
    }
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
}

/// What the paper prints (arXiv 2201.03545): config, input side (`None`: the detectors' 1280x800),
/// parameters in millions and GFLOPs, as printed (the digits say the rounding).
const PRINTED: &[(&str, Option<usize>, Option<&str>, &str)] = &[
    // Table 1 (ImageNet-1K and ImageNet-22K rows).
    ("configs/imagenet/convnext_tiny_1k_224.yaml", Some(224), Some("29"), "4.5"),
    ("configs/imagenet/convnext_small_1k_224.yaml", Some(224), Some("50"), "8.7"),
    ("configs/imagenet/convnext_base_1k_224.yaml", Some(224), Some("89"), "15.4"),
    ("configs/imagenet/convnext_base_1k_384.yaml", Some(384), Some("89"), "45.0"),
    ("configs/imagenet/convnext_large_1k_224.yaml", Some(224), Some("198"), "34.4"),
    ("configs/imagenet/convnext_large_1k_384.yaml", Some(384), Some("198"), "101.0"),
    ("configs/imagenet/convnext_xlarge_22k_1k_224.yaml", Some(224), Some("350"), "60.9"),
    ("configs/imagenet/convnext_xlarge_22k_1k_384.yaml", Some(384), Some("350"), "179.0"),
    // Table 2 (isotropic ConvNeXt).
    ("configs/imagenet/convnext_isotropic_small_1k_224.yaml", Some(224), Some("22"), "4.3"),
    ("configs/imagenet/convnext_isotropic_base_1k_224.yaml", Some(224), Some("87"), "16.9"),
    ("configs/imagenet/convnext_isotropic_large_1k_224.yaml", Some(224), Some("306"), "59.7"),
    // Table 3 (COCO, FLOPs at 1280x800).
    ("configs/mask_rcnn/mask_rcnn_convnext_tiny_fpn_3x_coco.yaml", None, None, "262"),
    ("configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_tiny_fpn_3x_coco.yaml", None, None, "741"),
    ("configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_small_fpn_3x_coco.yaml", None, None, "827"),
    ("configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_base_fpn_3x_coco.yaml", None, None, "964"),
    ("configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_large_fpn_3x_coco_in22k.yaml", None, None, "1354"),
    ("configs/cascade_mask_rcnn/cascade_mask_rcnn_convnext_xlarge_fpn_3x_coco_in22k.yaml", None, None, "1898"),
    ("configs/cascade_mask_rcnn/cascade_mask_rcnn_r50_fpn_3x_coco.yaml", None, None, "739"),
];

/// The printed numbers our count does not round to, and why:
///
/// ConvNeXt-B at 384 prints 45.0G; fvcore's convolution and matrix-multiply handles on the
/// reference model give 45.12G (`totals.json`, `convnext_base_384`: the count is fvcore's own,
/// ours equals it per operator), and every other handle only adds (45.19G with all of fvcore's
/// defaults). No op explains it: all of B's FLOPs but the 1.0M of the head scale with the input
/// area, so 384 gives (384 / 224)^2 times 224's 15.35G; the printed 45.0G is 0.3% below that.
const NOT_REACHED: &[&str] = &["configs/imagenet/convnext_base_1k_384.yaml FLOPs"];

/// Whether `value` rounds to `printed` (in units of `scale`) at the printed number of decimals.
fn rounds_to(value: u64, printed: &str, scale: f64) -> bool {
    let decimals = printed.split_once('.').map_or(0, |(_, d)| d.len());
    let p: f64 = printed.parse().expect("a number");
    let half_unit = 0.5 * 10f64.powi(-(decimals as i32));
    (value as f64 / scale - p).abs() <= half_unit
}

#[test]
fn the_papers_printed_numbers_hold_within_their_rounding() {
    let mut off = Vec::new();
    let mut table = String::new();
    for &(config, side, params, gflops) in PRINTED {
        let cfg = load_config(&root().join(config), &[]).unwrap_or_else(|e| panic!("{config}: {e:#}"));
        let opts = AnalyzeOptions { shape: side.map(|s| (s, s)), counter: CounterChoice::Paper };
        let r = analyze(&cfg, &opts).unwrap_or_else(|e| panic!("{config}: {e:#}")).root;
        table += &format!(
            "{config}: {:.2}M (printed {params:?}), {:.2}G (printed {gflops})\n",
            r.params as f64 / 1e6,
            r.flops as f64 / 1e9
        );
        if let Some(p) = params {
            if !rounds_to(r.params, p, 1e6) {
                off.push(format!("{config} params"));
            }
        }
        if !rounds_to(r.flops, gflops, 1e9) {
            off.push(format!("{config} FLOPs"));
        }
    }
    println!("{table}");
    assert_eq!(off, NOT_REACHED, "the printed numbers our count misses changed:\n{table}");
}

/// The steps of the roadmap (arXiv 2201.03545, Figure 2 and Table 10) in order, with the GFLOPs
/// the paper prints for each; the configs are `configs/roadmap/<step>.yaml`.
const ROADMAP: &[(&str, &str)] = &[
    ("r50", "4.1"),
    ("stage_ratio", "4.5"),
    ("patchify_stem", "4.4"),
    ("depthwise_conv", "2.4"),
    ("width_96", "5.3"),
    ("inverted_bottleneck", "4.6"),
    ("move_up_dwconv", "4.1"),
    ("kernel_5", "4.1"),
    ("kernel_7", "4.2"),
    ("kernel_9", "4.2"),
    ("kernel_11", "4.3"),
    ("gelu", "4.2"),
    ("fewer_activations", "4.2"),
    ("fewer_norms", "4.2"),
    ("layer_norm", "4.2"),
    ("separate_downsampling", "4.5"),
];

#[test]
fn roadmap_steps_match_fvcore_per_module() {
    let fx: BTreeMap<String, BTreeMap<String, Expected<ByOp>>> = fixture("roadmap.json");
    let steps: BTreeSet<&str> = ROADMAP.iter().map(|(s, _)| *s).collect();
    assert_eq!(fx.keys().map(String::as_str).collect::<BTreeSet<_>>(), steps, "a config for every step");
    let mut diffs = Vec::new();
    for (step, _) in ROADMAP {
        let report = run(&format!("configs/roadmap/{step}.yaml"), Counter::Fvcore, Some((224, 224)));
        diffs.extend(compare(step, &fx[*step], &modules(&report), by_op));
    }
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
}

/// The roadmap steps whose fvcore count (all its default handles: `--counter fvcore`) does not
/// round to the printed GFLOPs, and why:
///
/// The inverted bottleneck counts 4.69G, printed 4.6G: its batch norms run on the 4x-wide
/// hidden tensors and add 0.05G; convolutions and linears alone give 4.64G. That counter (the
/// one of the paper's Tables 1 and 2) would in turn miss six other steps: kernel 7, GELU, fewer
/// activations, fewer norms and BN -> LN all count 4.15G there (printed 4.2G) and the depthwise
/// conv 2.35G (printed 2.4G). No single counter reproduces every printed digit on the reference.
const ROADMAP_NOT_REACHED: &[&str] = &["inverted_bottleneck"];

#[test]
fn roadmap_gflops_round_to_the_papers_figure_2() {
    let mut off = Vec::new();
    let mut table = String::new();
    for &(step, printed) in ROADMAP {
        let r = run(&format!("configs/roadmap/{step}.yaml"), Counter::Fvcore, Some((224, 224))).root;
        table += &format!(
            "{step}: {:.3}G (printed {printed}), {:.2}M params\n",
            r.flops as f64 / 1e9,
            r.params as f64 / 1e6
        );
        if !rounds_to(r.flops, printed, 1e9) {
            off.push(step);
        }
    }
    println!("{table}");
    assert_eq!(off, ROADMAP_NOT_REACHED, "the printed numbers our count misses changed:\n{table}");
}

#[test]
fn analyze_prints_a_table_cut_at_depth_and_json_with_every_module() {
    let config = "configs/imagenet/convnext_tiny_1k_224.yaml";
    let out = nextdet(&["analyze", config, "--depth", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let names: Vec<&str> = text.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names[..5], ["model", "downsample_layers", "stages", "norm", "head"], "{text}");
    assert!(text.contains("4.46G FLOPs (fvcore-conv-matmul"), "{text}");

    let out = nextdet(&["analyze", config, "--json", "--counter", "fvcore"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    let fx: BTreeMap<String, BTreeMap<String, Expected<ByOp>>> = fixture("classifiers.json");
    let want = &fx["convnext_tiny_1k_224"];
    assert_eq!(doc["root"]["params"].as_u64(), Some(want[""].params));
    assert_eq!(doc["root"]["flops"].as_u64(), Some(want[""].flops.values().sum()));
    let block = &doc["root"]["children"][1]["children"][2]["children"][8];
    assert_eq!(block["name"], "stages.2.8", "{block}");
    assert_eq!(block["children"].as_array().map(Vec::len), Some(5), "dwconv, norm, pwconv1, act, pwconv2");
}

#[test]
fn analyze_refuses_an_input_the_model_cannot_take() {
    let out = nextdet(&["analyze", "configs/imagenet/convnext_tiny_1k_224.yaml", "--shape", "2x2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("downsample_layers.0") && !err.contains("panicked"), "{err}");
}
