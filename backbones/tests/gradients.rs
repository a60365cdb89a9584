//! Every trainable parameter of a ConvNeXt (classifier and detection mode) receives a non-zero
//! gradient from a training-mode backward, stochastic depth included.

use candle_core::{Device, Tensor};
use nextdet_backbones::config::{BackboneConfig, ConvNeXtArch, ConvNeXtConfig};
use nextdet_backbones::{build_backbone, build_classifier};
use nextdet_ops::ParamStore;

fn atto_like() -> BackboneConfig {
    BackboneConfig::ConvNeXt(ConvNeXtConfig {
        arch: Some(ConvNeXtArch::Atto),
        depths: Some(vec![2, 2, 3, 2]),
        dims: Some(vec![8, 16, 24, 32]),
        in_chans: 3,
        drop_path_rate: 0.1,
        layer_scale_init_value: 0.5,
        out_indices: vec![0, 1, 2, 3],
    })
}

fn assert_all_have_gradients(store: &ParamStore, loss: &Tensor) {
    let grads = loss.backward().unwrap();
    let trainable = store.trainable();
    assert!(!trainable.is_empty());
    for (name, var) in trainable {
        let g = grads.get(&var).unwrap_or_else(|| panic!("{name} got no gradient"));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm > 0.0 && norm.is_finite(), "{name}: gradient norm {norm}");
    }
}

#[test]
fn classifier_training_backward_reaches_every_parameter() {
    let store = ParamStore::new(&Device::Cpu, 1);
    let net = build_classifier(&atto_like(), 5, &store.root(), 1).unwrap();
    let x = Tensor::randn(0f32, 1.0, (4, 3, 64, 64), &Device::Cpu).unwrap();
    let logits = net.forward(&x, true).unwrap();
    let target = Tensor::randn(0f32, 1.0, (4, 5), &Device::Cpu).unwrap();
    let loss = (logits * target).unwrap().sum_all().unwrap();
    assert_all_have_gradients(&store, &loss);
}

#[test]
fn detection_backbone_training_backward_reaches_every_parameter() {
    let store = ParamStore::new(&Device::Cpu, 2);
    let net = build_backbone(&atto_like(), &store.root(), 2).unwrap();
    let x = Tensor::randn(0f32, 1.0, (4, 3, 64, 64), &Device::Cpu).unwrap();
    let mut loss = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu).unwrap();
    for feat in net.forward(&x, true).unwrap() {
        let w = Tensor::randn(0f32, 1.0, feat.dims(), &Device::Cpu).unwrap();
        loss = (loss + (feat * w).unwrap().sum_all().unwrap()).unwrap();
    }
    assert_all_have_gradients(&store, &loss);
}
