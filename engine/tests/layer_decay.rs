//! Layer-wise learning-rate decay groups against ConvNeXt's rules re-implemented in
//! tests/reference/make_engine_fixtures.py: for ConvNeXt-T/S detection names (layer_wise and
//! stage_wise) and ConvNeXt-B classification names, every parameter's group and every group's
//! name, lr_scale and weight decay, in the same order.

use candle_core::Device;
use nextdet_engine::layer_decay::{build_param_groups, layer_scale, DecayType, ParamwiseConfig};
use nextdet_engine::optim::{Optimizer, OptimizerConfig};
use nextdet_ops::params::{Init, ParamStore};
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Deserialize)]
struct Model {
    names: Vec<String>,
    ranks: Vec<usize>,
}

#[derive(Deserialize)]
struct Group {
    name: String,
    lr_scale: f64,
    weight_decay: f64,
}

#[derive(Deserialize)]
struct Case {
    label: String,
    model: String,
    decay_type: DecayType,
    num_layers: usize,
    decay_rate: f64,
    weight_decay: f64,
    assign: Vec<usize>,
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Doc {
    models: HashMap<String, Model>,
    cases: Vec<Case>,
}

fn doc() -> Doc {
    let path = format!("{}/../tests/fixtures/engine/layer_decay.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A store with the model's names; every dimension 1 (the rule only looks at the rank).
fn store(m: &Model) -> ParamStore {
    let s = ParamStore::new(&Device::Cpu, 0);
    let root = s.root();
    for (n, r) in m.names.iter().zip(&m.ranks) {
        root.param(n, vec![1usize; *r], Init::Const(0.0)).unwrap();
    }
    s
}

#[test]
fn groups_match_cnx_rules() {
    let doc = doc();
    assert_eq!(doc.cases.len(), 5);
    for case in &doc.cases {
        let model = &doc.models[&case.model];
        let params = store(model);
        let cfg = ParamwiseConfig::LayerDecay {
            num_layers: case.num_layers,
            decay_rate: case.decay_rate,
            decay_type: case.decay_type,
        };
        let groups = build_param_groups(&params, case.weight_decay, Some(&cfg)).unwrap();
        assert_eq!(groups.len(), case.groups.len(), "{}: group count", case.label);
        for (got, want) in groups.iter().zip(&case.groups) {
            assert_eq!(got.name, want.name, "{}", case.label);
            assert!(
                (got.lr_scale - want.lr_scale).abs() <= 1e-12,
                "{} {}: {} vs {}",
                case.label,
                got.name,
                got.lr_scale,
                want.lr_scale
            );
            assert_eq!(got.weight_decay, want.weight_decay, "{} {}", case.label, got.name);
        }
        let of: HashMap<&str, &str> =
            groups.iter().flat_map(|g| g.params.iter().map(move |(n, _)| (n.as_str(), g.name.as_str()))).collect();
        assert_eq!(of.len(), model.names.len(), "{}", case.label);
        for (name, gi) in model.names.iter().zip(&case.assign) {
            assert_eq!(of[name.as_str()], case.groups[*gi].name, "{}: {name}", case.label);
        }
    }
}

#[test]
fn paper_table_scales() {
    // layer_decay_optimizer_constructor.py's formula: T Mask R-CNN (0.95, 6) id 0 -> .698, T Cascade (0.7, 6) id 0 -> .082
    assert!((layer_scale(0.95, 6, 0) - 0.698).abs() < 5e-4);
    assert!((layer_scale(0.7, 6, 0) - 0.082).abs() < 5e-4);
    assert_eq!(layer_scale(0.7, 12, 13), 1.0);
}

#[test]
fn config_builds_optimizer_and_rejects_bad_input() {
    let yaml =
        "type: AdamW\nlr: 0.0001\nweight_decay: 0.05\nparamwise: {type: LayerDecay, num_layers: 6, decay_rate: 0.95}\n";
    let cfg: OptimizerConfig = serde_yaml::from_str(yaml).unwrap();
    let doc = doc();
    let params = store(&doc.models["det_t"]);
    let opt = Optimizer::from_config(&cfg, &params).unwrap();
    assert_eq!(opt.groups()[0].name, "layer_0_decay");
    // without paramwise: one group with weight decay everywhere (mmcv's default constructor)
    let plain: OptimizerConfig =
        serde_yaml::from_str("type: SGD\nlr: 0.02\nmomentum: 0.9\nweight_decay: 0.0001\n").unwrap();
    let opt = Optimizer::from_config(&plain, &params).unwrap();
    assert_eq!(opt.groups().len(), 1);
    assert_eq!(opt.groups()[0].weight_decay, 0.0001);
    // typos are errors
    assert!(serde_yaml::from_str::<OptimizerConfig>("type: AdamW\nlr: 1\nweight_decy: 0.05\n").is_err());
    assert!(serde_yaml::from_str::<OptimizerConfig>(
        "type: AdamW\nlr: 1\nparamwise: {type: LayerDecay, num_layers: 6, decay_rte: 0.9}\n"
    )
    .is_err());
    // a name the rule cannot parse is an error naming it
    let bad = ParamStore::new(&Device::Cpu, 0);
    bad.root().param("backbone.stages.x.weight", vec![1usize, 1], Init::Const(0.0)).unwrap();
    let cfg = ParamwiseConfig::LayerDecay { num_layers: 6, decay_rate: 0.9, decay_type: DecayType::LayerWise };
    let err = build_param_groups(&bad, 0.05, Some(&cfg)).err().unwrap().to_string();
    assert!(err.contains("backbone.stages.x.weight"), "{err}");
    // classification with a num_layers other than ConvNeXt's 12
    let cfg = ParamwiseConfig::LayerDecay { num_layers: 6, decay_rate: 0.9, decay_type: DecayType::Classification };
    assert!(build_param_groups(&params, 0.05, Some(&cfg)).is_err());
}
