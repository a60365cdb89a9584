//! Every step of the ConvNeXt paper's roadmap (`Roadmap`) against the PyTorch reference
//! `tests/reference/roadmap_ref.py`, at small widths (fixture written by
//! `tests/reference/make_roadmap_fixtures.py`): logits in evaluation mode, logits in training
//! mode (batch statistics) and the running statistics that training-mode forward leaves; and
//! the combinations the reference refuses.

mod common;

use candle_core::{Device, Tensor};
use common::{fixture, fixture_path, load_exact, max_abs, max_abs_diff};
use nextdet_backbones::config::BackboneConfig;
use nextdet_backbones::roadmap::RoadmapConfig;
use nextdet_backbones::{build_backbone, build_classifier};
use nextdet_ops::ParamStore;
use std::collections::{BTreeMap, HashMap};

const FILE: &str = "backbones/roadmap_steps.safetensors";
/// Logits within 1e-4 of the reference (relative to their largest magnitude).
const TOL: f32 = 1e-4;

/// The fixture's `{step: options}` (its "config" metadata).
fn step_configs() -> BTreeMap<String, RoadmapConfig> {
    let bytes = std::fs::read(fixture_path(FILE)).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let json = meta.metadata().as_ref().and_then(|m| m.get("config")).expect("config metadata").clone();
    serde_json::from_str(&json).unwrap()
}

/// The tensors under `prefix/`, without it.
fn under(all: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    let p = format!("{prefix}/");
    all.iter().filter_map(|(k, v)| k.strip_prefix(&p).map(|k| (k.to_string(), v.clone()))).collect()
}

#[test]
fn every_step_matches_the_reference_in_eval_and_train_mode() {
    let all = fixture(FILE);
    let steps = step_configs();
    assert_eq!(steps.len(), 16, "the 16 steps of Figure 2");
    let mut off = Vec::new();
    for (step, cfg) in &steps {
        let f = under(&all, step);
        let store = ParamStore::new(&Device::Cpu, 0);
        let net = build_classifier(&BackboneConfig::Roadmap(cfg.clone()), 5, &store.root(), 0).unwrap();
        load_exact(&store, &f);
        let reference = f.keys().filter(|k| !k.starts_with("logits") && !k.starts_with("after_train")).count();
        assert_eq!(store.tensors().len(), reference, "{step}: the reference's state_dict, name for name");

        let mut check = |what: &str, got: &Tensor, want: &Tensor, tol: f32| {
            let (d, scale) = (max_abs_diff(got, want), max_abs(want).max(1.0));
            if d > tol * scale {
                off.push(format!("{step} {what}: max abs diff {d} exceeds {tol} x {scale}"));
            }
        };
        check("eval logits", &net.forward(&all["input"], false).unwrap(), &f["logits_eval"], TOL);
        check("train logits", &net.forward(&all["input"], true).unwrap(), &f["logits_train"], TOL);
        let tensors: HashMap<String, Tensor> = store.tensors().into_iter().collect();
        for (name, want) in under(&f, "after_train") {
            check(&format!("{name} after a training forward"), &tensors[&name], &want, 1e-5);
        }
    }
    assert!(off.is_empty(), "{}", off.join("\n"));
}

#[test]
fn every_trainable_parameter_gets_a_gradient() {
    for (step, cfg) in step_configs() {
        let store = ParamStore::new(&Device::Cpu, 1);
        let net = build_classifier(&BackboneConfig::Roadmap(cfg), 5, &store.root(), 1).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1.0, (2, 5), &Device::Cpu).unwrap();
        let loss = (net.forward(&x, true).unwrap() * w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in store.trainable() {
            let g = grads.get(&var).unwrap_or_else(|| panic!("{step}: {name} got no gradient"));
            let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm.is_finite() && norm > 0.0, "{step}: {name} gradient norm {norm}");
        }
    }
}

#[test]
fn combinations_the_reference_refuses_are_errors() {
    let base = step_configs()["r50"].clone();
    type Edit = fn(&mut RoadmapConfig);
    let cases: [(&str, Edit); 5] = [
        ("`spatial_first` needs `block: inverted`", |c| c.spatial_first = true),
        ("need `spatial_first: true`", |c| c.one_act = true),
        ("`kernel_size` must be odd", |c| c.kernel_size = 4),
        ("4 depths and 4 dims", |c| c.depths = vec![1, 1, 1]),
        ("`drop_path_rate` must be in [0, 1)", |c| c.drop_path_rate = 1.0),
    ];
    for (msg, edit) in cases {
        let mut cfg = base.clone();
        edit(&mut cfg);
        let store = ParamStore::new(&Device::Cpu, 0);
        let err = build_classifier(&BackboneConfig::Roadmap(cfg), 5, &store.root(), 0).err().expect(msg);
        assert!(err.to_string().contains(msg), "{err}");
    }
    let store = ParamStore::new(&Device::Cpu, 0);
    let err = build_backbone(&BackboneConfig::Roadmap(base), &store.root(), 0).err().unwrap();
    assert!(err.to_string().contains("no detection mode"), "{err}");
}
