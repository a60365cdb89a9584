//! AdamW and SGD (plain and Nesterov) with two parameter groups against torch.optim on committed
//! fixtures (tests/reference/make_engine_fixtures.py): 5 steps with changing learning rates, a
//! parameter without a gradient at one step, final values and optimizer state within 1e-6; and a
//! state save/load in the middle that changes nothing.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use nextdet_engine::optim::{Algorithm, Optimizer, ParamGroup};
use nextdet_ops::params::{Init, ParamStore};
use std::collections::HashMap;

const NAMES: [&str; 3] = ["a", "b", "c"];

struct Fixture {
    t: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

fn fixture(name: &str) -> Fixture {
    let path = format!("{}/../tests/fixtures/engine/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap_or_default();
    Fixture { t: candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap(), meta }
}

fn meta_f64(f: &Fixture, key: &str) -> f64 {
    serde_json::from_str(&f.meta[key]).unwrap()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1().unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.dims(), want.dims(), "{what}");
    for (i, (g, w)) in vals(got).iter().zip(vals(want)).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, torch {w}");
    }
}

/// The fixture's parameters at their initial values, and the two groups.
fn setup(f: &Fixture) -> (ParamStore, Vec<(String, Var)>, Vec<ParamGroup>) {
    let store = ParamStore::new(&Device::Cpu, 0);
    let root = store.root();
    for n in NAMES {
        root.param(n, f.t[&format!("init.{n}")].dims(), Init::Const(0.0)).unwrap();
    }
    let init: HashMap<String, Tensor> =
        NAMES.iter().map(|n| (n.to_string(), f.t[&format!("init.{n}")].clone())).collect();
    assert!(store.load(&init).unwrap().is_exact());
    let vars = store.trainable();
    let scales: Vec<f64> = serde_json::from_str(&f.meta["scales"]).unwrap();
    let groups = vec![
        ParamGroup {
            name: "g0".into(),
            params: vars[..2].to_vec(),
            lr_scale: scales[0],
            weight_decay: meta_f64(f, "wd0"),
        },
        ParamGroup { name: "g1".into(), params: vars[2..].to_vec(), lr_scale: scales[1], weight_decay: 0.0 },
    ];
    (store, vars, groups)
}

fn grads(f: &Fixture, vars: &[(String, Var)], step: usize) -> GradStore {
    let mut g = GradStore::default();
    for (name, var) in vars {
        if let Some(t) = f.t.get(&format!("grad.{step}.{name}")) {
            g.insert(var.as_tensor(), t.clone());
        }
    }
    g
}

fn algorithm(f: &Fixture) -> Algorithm {
    if f.meta.contains_key("betas") {
        let b: Vec<f64> = serde_json::from_str(&f.meta["betas"]).unwrap();
        Algorithm::AdamW { betas: (b[0], b[1]), eps: meta_f64(f, "eps") }
    } else {
        Algorithm::Sgd {
            momentum: meta_f64(f, "momentum"),
            nesterov: serde_json::from_str(&f.meta["nesterov"]).unwrap(),
        }
    }
}

fn check(file: &str) {
    let f = fixture(file);
    let lrs = vals(&f.t["lrs"]);
    let (store, vars, groups) = setup(&f);
    let mut opt = Optimizer::new(algorithm(&f), groups).unwrap();
    for (step, lr) in lrs.iter().enumerate() {
        opt.step(&grads(&f, &vars, step), *lr).unwrap();
    }
    let now: HashMap<String, Tensor> = store.tensors().into_iter().collect();
    for n in NAMES {
        assert_close(&format!("{file} final.{n}"), &now[n], &f.t[&format!("final.{n}")], 1e-6);
    }
    let state: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
    let mut compared = 0;
    for (key, want) in &f.t {
        if let Some(k) = key.strip_prefix("state.") {
            let got = state.get(k).unwrap_or_else(|| panic!("{file}: no state `{k}`"));
            assert_close(&format!("{file} state.{k}"), got, want, 1e-6);
            compared += 1;
        }
    }
    assert!(compared >= 3, "{file}: compared {compared} state tensors");
}

#[test]
fn adamw_two_groups_matches_torch() {
    check("adamw.safetensors");
}

#[test]
fn sgd_momentum_two_groups_matches_torch() {
    check("sgd.safetensors");
}

#[test]
fn sgd_nesterov_two_groups_matches_torch() {
    check("sgd_nesterov.safetensors");
}

/// Three steps, save params + state, restore both into a fresh optimizer, two more steps: the
/// same final values as torch's five uninterrupted steps.
#[test]
fn state_roundtrip_resumes_exactly() {
    for file in ["adamw.safetensors", "sgd.safetensors"] {
        let f = fixture(file);
        let lrs = vals(&f.t["lrs"]);
        let (store, vars, groups) = setup(&f);
        let mut opt = Optimizer::new(algorithm(&f), groups).unwrap();
        for (step, lr) in lrs.iter().enumerate().take(3) {
            opt.step(&grads(&f, &vars, step), *lr).unwrap();
        }
        let weights: HashMap<String, Tensor> =
            store.tensors().into_iter().map(|(n, t)| (n, t.copy().unwrap())).collect();
        let state: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
        assert!(state
            .keys()
            .all(|k| k.ends_with(".step") || k.contains(".exp_avg") || k.ends_with(".momentum_buffer")));

        let (store2, vars2, groups2) = setup(&f);
        assert!(store2.load(&weights).unwrap().is_exact());
        let mut opt2 = Optimizer::new(algorithm(&f), groups2).unwrap();
        opt2.load_state(&state).unwrap();
        for (step, lr) in lrs.iter().enumerate().skip(3) {
            opt2.step(&grads(&f, &vars2, step), *lr).unwrap();
        }
        let now: HashMap<String, Tensor> = store2.tensors().into_iter().collect();
        for n in NAMES {
            assert_close(&format!("{file} resumed final.{n}"), &now[n], &f.t[&format!("final.{n}")], 1e-6);
        }
        // bad state is an error naming the key
        let mut bad = state.clone();
        bad.insert("zzz.exp_avg".into(), Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap());
        let err = opt2.load_state(&bad).unwrap_err().to_string();
        assert!(err.contains("zzz.exp_avg"), "{err}");
    }
}

#[test]
fn duplicate_parameter_is_an_error() {
    let f = fixture("adamw.safetensors");
    let (_, vars, _) = setup(&f);
    let g = |name: &str| ParamGroup { name: name.into(), params: vars[..1].to_vec(), lr_scale: 1.0, weight_decay: 0.0 };
    let err = Optimizer::new(Algorithm::Sgd { momentum: 0.0, nesterov: false }, vec![g("x"), g("y")]).err().unwrap();
    assert!(err.to_string().contains("`a`"), "{err}");
}

/// The tensor-op path (used off the CPU; here forced with f64 parameters) against the same
/// torch fixtures; f64 arithmetic differs from torch's f32 by rounding only.
#[test]
fn tensor_path_matches_torch() {
    for file in ["adamw.safetensors", "sgd.safetensors", "sgd_nesterov.safetensors"] {
        let f = fixture(file);
        let lrs = vals(&f.t["lrs"]);
        let (_, vars32, groups32) = setup(&f);
        let to64 = |v: &Var| Var::from_tensor(&v.as_tensor().to_dtype(candle_core::DType::F64).unwrap()).unwrap();
        let groups: Vec<ParamGroup> = groups32
            .iter()
            .map(|g| ParamGroup { params: g.params.iter().map(|(n, v)| (n.clone(), to64(v))).collect(), ..g.clone() })
            .collect();
        let vars: Vec<(String, Var)> = groups.iter().flat_map(|g| g.params.clone()).collect();
        assert_eq!(vars.len(), vars32.len());
        let mut opt = Optimizer::new(algorithm(&f), groups).unwrap();
        for (step, lr) in lrs.iter().enumerate() {
            let mut g = GradStore::default();
            for (name, var) in &vars {
                if let Some(t) = f.t.get(&format!("grad.{step}.{name}")) {
                    g.insert(var.as_tensor(), t.to_dtype(candle_core::DType::F64).unwrap());
                }
            }
            opt.step(&g, *lr).unwrap();
        }
        for (name, var) in &vars {
            assert_close(&format!("{file} f64 final.{name}"), var.as_tensor(), &f.t[&format!("final.{name}")], 1e-5);
        }
        let state: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
        for (key, want) in &f.t {
            if let Some(k) = key.strip_prefix("state.") {
                assert_close(&format!("{file} f64 state.{k}"), &state[k], want, 1e-5);
            }
        }
    }
}
