//! FPN parity with the torch re-implementation of mmdet's FPN in
//! tests/reference/make_fpn_rpn_fixtures.py (fpn.safetensors): outputs for odd-sized levels and
//! gradients to the inputs and every weight.

use candle_core::{backprop::GradStore, Device, Tensor, Var};
use nextdet_necks::{Fpn, FpnConfig};
use nextdet_ops::ParamStore;
use nextdet_testutil::{load_fixture, max_abs_diff};
use std::collections::HashMap;

fn fixture() -> HashMap<String, Tensor> {
    load_fixture("fpn_rpn/fpn.safetensors")
}

fn config() -> FpnConfig {
    FpnConfig { in_channels: None, out_channels: 8, num_outs: 5, start_level: 0, add_extra_convs: false }
}

const CHANNELS: [usize; 4] = [4, 8, 12, 16];

#[test]
fn fpn_outputs_and_gradients_match_torch() {
    let fx = fixture();
    let store = ParamStore::new(&Device::Cpu, 0);
    let fpn = Fpn::new(&config(), &CHANNELS, &store.root().pp("neck")).unwrap();
    let weights: HashMap<String, Tensor> =
        fx.iter().filter(|(k, _)| k.starts_with("neck.")).map(|(k, v)| (k.clone(), v.clone())).collect();
    let report = store.load(&weights).unwrap();
    assert!(report.is_exact(), "{report:?}");
    let feats: Vec<Var> = (0..4).map(|i| Var::from_tensor(&fx[&format!("feat{i}")]).unwrap()).collect();
    let inputs: Vec<Tensor> = feats.iter().map(|v| v.as_tensor().clone()).collect();
    let outs = fpn.forward(&inputs).unwrap();
    assert_eq!(outs.len(), 5);
    let mut objective = Tensor::new(0f32, &Device::Cpu).unwrap();
    for (i, o) in outs.iter().enumerate() {
        let d = max_abs_diff(o, &fx[&format!("out{i}")]);
        eprintln!("out{i} {:?}: max diff {d:e}", o.dims());
        assert!(d < 1e-5, "out{i}: max diff {d}");
        objective = (objective + (o * &fx[&format!("gy{i}")]).unwrap().sum_all().unwrap()).unwrap();
    }
    let grads: GradStore = objective.backward().unwrap();
    for (i, f) in feats.iter().enumerate() {
        let d = max_abs_diff(grads.get(f.as_tensor()).unwrap(), &fx[&format!("grad_feat{i}")]);
        assert!(d < 1e-4, "grad_feat{i}: max diff {d}");
    }
    let trainable = store.trainable();
    assert_eq!(trainable.len(), 16);
    for (name, var) in trainable {
        let d = max_abs_diff(grads.get(var.as_tensor()).unwrap(), &fx[&format!("grad.{name}")]);
        eprintln!("grad.{name}: max diff {d:e}");
        assert!(d < 1e-3, "grad.{name}: max diff {d}");
    }
}

#[test]
fn parameter_names_and_init_follow_mmdet() {
    let store = ParamStore::new(&Device::Cpu, 1);
    Fpn::new(&config(), &CHANNELS, &store.root().pp("neck")).unwrap();
    let names: Vec<String> = store.tensors().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"neck.lateral_convs.3.conv.weight".to_string()), "{names:?}");
    assert!(names.contains(&"neck.fpn_convs.0.conv.bias".to_string()), "{names:?}");
    for (name, t) in store.tensors() {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        if name.ends_with("bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
        } else {
            // xavier-uniform bound sqrt(6 / (fan_in + fan_out)).
            let dims = t.dims();
            let rf = dims[2] * dims[3];
            let bound = (6.0 / ((dims[0] + dims[1]) * rf) as f32).sqrt();
            assert!(v.iter().all(|x| x.abs() <= bound), "{name}");
            assert!(v.iter().any(|x| x.abs() > 0.5 * bound), "{name}");
        }
    }
}

#[test]
fn start_level_skips_the_finest_inputs() {
    let fx = fixture();
    let store = ParamStore::new(&Device::Cpu, 0);
    let cfg = FpnConfig { start_level: 1, num_outs: 4, ..config() };
    let fpn = Fpn::new(&cfg, &CHANNELS, &store.root()).unwrap();
    let feats: Vec<Tensor> = (0..4).map(|i| fx[&format!("feat{i}")].clone()).collect();
    let outs = fpn.forward(&feats).unwrap();
    let dims: Vec<Vec<usize>> = outs.iter().map(|o| o.dims().to_vec()).collect();
    assert_eq!(dims, vec![vec![1, 8, 9, 12], vec![1, 8, 5, 6], vec![1, 8, 3, 3], vec![1, 8, 2, 2]]);
    assert!(fpn.forward(&feats[1..]).is_err());
}

#[test]
fn bad_configs_are_errors_naming_the_key() {
    let store = ParamStore::new(&Device::Cpu, 0);
    let root = store.root();
    let err = |cfg: FpnConfig| Fpn::new(&cfg, &CHANNELS, &root).err().expect("an error").to_string();
    assert!(err(FpnConfig { in_channels: Some(vec![4, 8, 12, 32]), ..config() }).contains("neck.in_channels"));
    assert!(err(FpnConfig { add_extra_convs: true, ..config() }).contains("neck.add_extra_convs"));
    assert!(err(FpnConfig { num_outs: 3, ..config() }).contains("neck.num_outs"));
    assert!(err(FpnConfig { start_level: 4, ..config() }).contains("neck.start_level"));
    // Matching in_channels are accepted.
    let store = ParamStore::new(&Device::Cpu, 0);
    assert!(Fpn::new(&FpnConfig { in_channels: Some(CHANNELS.to_vec()), ..config() }, &CHANNELS, &store.root()).is_ok());
    // Unknown keys are rejected, defaults filled.
    let e = serde_json::from_str::<FpnConfig>(r#"{"out_channels": 8, "num_outs": 5, "upsample": 1}"#).unwrap_err();
    assert!(e.to_string().contains("upsample"), "{e}");
    let c: FpnConfig = serde_json::from_str(r#"{"out_channels": 8, "num_outs": 5}"#).unwrap();
    assert_eq!(c, config());
}
