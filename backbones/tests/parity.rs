//! Logits and detection features of every backbone family against PyTorch, on fixtures written
//! by `tests/reference/make_backbone_fixtures.py` (random weights, non-trivial layer scales).

mod common;

use candle_core::Device;
use common::{assert_close, fixture, load_exact};
use nextdet_backbones::config::{BackboneConfig, ConvNeXtConfig, IsotropicConfig};
use nextdet_backbones::{build_backbone, build_classifier};
use nextdet_ops::ParamStore;

/// Logits within 1e-4 (relative to their largest magnitude), as the issue asks.
const TOL: f32 = 1e-4;

fn convnext_cfg(depths: &[usize], dims: &[usize]) -> ConvNeXtConfig {
    ConvNeXtConfig {
        arch: None,
        depths: Some(depths.to_vec()),
        dims: Some(dims.to_vec()),
        in_chans: 3,
        drop_path_rate: 0.3,
        layer_scale_init_value: 1e-6,
        out_indices: vec![0, 1, 2, 3],
    }
}

fn check_convnext(file: &str, depths: &[usize], dims: &[usize], classes: usize) {
    let f = fixture(file);
    let cfg = BackboneConfig::ConvNeXt(convnext_cfg(depths, dims));
    let store = ParamStore::new(&Device::Cpu, 0);
    let net = build_classifier(&cfg, classes, &store.root(), 0).unwrap();
    load_exact(&store, &f);
    let logits = net.forward(&f["input"], false).unwrap();
    assert_close(&format!("{file} logits"), &logits, &f["logits"], TOL);

    let store = ParamStore::new(&Device::Cpu, 0);
    let backbone = build_backbone(&cfg, &store.root(), 0).unwrap();
    load_exact(&store, &f);
    let feats = backbone.forward(&f["input"], false).unwrap();
    assert_eq!(backbone.strides(), vec![4, 8, 16, 32]);
    assert_eq!(backbone.out_channels(), dims.to_vec());
    for (i, feat) in feats.iter().enumerate() {
        assert_close(&format!("{file} feat{i}"), feat, &f[&format!("feat{i}")], TOL);
    }
}

#[test]
fn convnext_3_3_9_3_logits_and_features_match_torch() {
    check_convnext("backbones/convnext_small_depths.safetensors", &[3, 3, 9, 3], &[8, 16, 32, 64], 10);
}

#[test]
fn convnext_3_3_27_3_logits_and_features_match_torch() {
    check_convnext("backbones/convnext_deep.safetensors", &[3, 3, 27, 3], &[8, 16, 16, 32], 7);
}

fn check_isotropic(file: &str, layer_scale: f64) {
    let f = fixture(file);
    let cfg = BackboneConfig::ConvNeXtIsotropic(IsotropicConfig {
        arch: None,
        depth: Some(4),
        dim: Some(32),
        in_chans: 3,
        drop_path_rate: 0.1,
        layer_scale_init_value: layer_scale,
    });
    let store = ParamStore::new(&Device::Cpu, 0);
    let net = build_classifier(&cfg, 5, &store.root(), 0).unwrap();
    load_exact(&store, &f);
    let logits = net.forward(&f["input"], false).unwrap();
    assert_close(&format!("{file} logits"), &logits, &f["logits"], TOL);
}

#[test]
fn convnext_isotropic_with_layer_scale_matches_torch() {
    check_isotropic("backbones/convnext_isotropic.safetensors", 1e-6);
}

#[test]
fn convnext_isotropic_without_layer_scale_matches_torch() {
    check_isotropic("backbones/convnext_isotropic_nogamma.safetensors", 0.0);
}
