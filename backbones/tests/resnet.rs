//! ResNet-50 logits and C2..C5 against torchvision. Full weights would not fit a small fixture,
//! so both sides fill every tensor from the same integer formula (described in
//! `tests/reference/make_backbone_fixtures.py`) and only the outputs are stored.

mod common;

use candle_core::{Device, Tensor};
use common::{assert_close, fixture};
use nextdet_backbones::config::{BackboneConfig, ResNetConfig};
use nextdet_backbones::{build_backbone, build_classifier};
use nextdet_ops::ParamStore;
use std::collections::HashMap;

/// FNV-1a, 64 bit, of the tensor's name: the per-tensor seed.
fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// Uniform in [0, 1) for element `j` of the tensor seeded with `seed` (splitmix64 finalizer).
fn unit(seed: u64, j: u64) -> f64 {
    let mut z = seed.wrapping_add((j + 1).wrapping_mul(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^= z >> 31;
    (z >> 11) as f64 * 2f64.powi(-53)
}

/// The value the fixture script gives element `j` of tensor `name` with `shape`.
fn formula(name: &str, shape: &[usize], j: u64) -> f32 {
    let u = unit(fnv1a(name), j);
    let s = 2.0 * u - 1.0;
    let is_conv_or_fc = name.ends_with(".weight") && shape.len() > 1;
    let v = if is_conv_or_fc {
        s * (3.0 / shape[1..].iter().product::<usize>() as f64).sqrt()
    } else if name.ends_with("running_var") {
        1.0 + 0.5 * u
    } else if name.ends_with("running_mean") || name.ends_with(".bias") {
        0.1 * s
    } else if name.ends_with(".weight") {
        1.0 + 0.2 * s
    } else {
        0.0
    };
    v as f32
}

fn formula_weights(store: &ParamStore) -> HashMap<String, Tensor> {
    store
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let v: Vec<f32> = (0..t.elem_count() as u64).map(|j| formula(&name, t.dims(), j)).collect();
            let tensor = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
            (name, tensor)
        })
        .collect()
}

fn resnet50() -> BackboneConfig {
    BackboneConfig::ResNet(ResNetConfig { depth: 50, out_indices: vec![0, 1, 2, 3], frozen_stages: 1 })
}

#[test]
fn formula_matches_the_fixture_probes() {
    let f = fixture("backbones/resnet50_formula.safetensors");
    let conv: Vec<f32> = (0..8).map(|j| formula("conv1.weight", &[64, 3, 7, 7], j)).collect();
    let var: Vec<f32> = (0..8).map(|j| formula("bn1.running_var", &[64], j)).collect();
    assert_eq!(conv, f["probe_conv1_weight_first8"].to_vec1::<f32>().unwrap());
    assert_eq!(var, f["probe_bn1_running_var_first8"].to_vec1::<f32>().unwrap());
}

#[test]
fn resnet50_logits_and_features_match_torchvision() {
    let f = fixture("backbones/resnet50_formula.safetensors");
    let store = ParamStore::new(&Device::Cpu, 0);
    let net = build_classifier(&resnet50(), 10, &store.root(), 0).unwrap();
    assert!(store.load(&formula_weights(&store)).unwrap().is_exact());
    assert_close("resnet50 logits", &net.forward(&f["input"], false).unwrap(), &f["logits"], 1e-4);

    let store = ParamStore::new(&Device::Cpu, 0);
    let backbone = build_backbone(&resnet50(), &store.root(), 0).unwrap();
    assert!(store.load(&formula_weights(&store)).unwrap().is_exact());
    assert_eq!(backbone.out_channels(), vec![256, 512, 1024, 2048]);
    let feats = backbone.forward(&f["input"], false).unwrap();
    for (i, feat) in feats.iter().enumerate() {
        assert_close(&format!("c{}", i + 2), feat, &f[&format!("c{}", i + 2)], 1e-4);
    }
}

#[test]
fn frozen_stages_are_not_trainable() {
    let store = ParamStore::new(&Device::Cpu, 0);
    build_backbone(&resnet50(), &store.root(), 0).unwrap();
    let trainable: Vec<String> = store.trainable().into_iter().map(|(n, _)| n).collect();
    assert!(!trainable.iter().any(|n| n.starts_with("conv1.") || n.starts_with("bn1.") || n.starts_with("layer1.")));
    assert!(trainable.iter().any(|n| n.starts_with("layer2.0.conv1")));
    assert!(!trainable.iter().any(|n| n.contains("running_")));
}

#[test]
fn a_trainable_stem_gets_gradients_through_the_max_pool() {
    let cfg = BackboneConfig::ResNet(ResNetConfig { depth: 50, out_indices: vec![0, 1, 2, 3], frozen_stages: -1 });
    let store = ParamStore::new(&Device::Cpu, 0);
    let backbone = build_backbone(&cfg, &store.root(), 0).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 37, 45), &Device::Cpu).unwrap();
    let feats = backbone.forward(&x, true).unwrap();
    let loss = feats.iter().map(|f| f.sum_all().unwrap()).reduce(|a, b| (a + b).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let trainable: HashMap<String, candle_core::Var> = store.trainable().into_iter().collect();
    let g = grads.get(trainable["conv1.weight"].as_tensor()).expect("the stem convolution gets a gradient");
    assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
}
