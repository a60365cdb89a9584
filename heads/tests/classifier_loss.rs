//! Soft-target cross-entropy against timm's `SoftTargetCrossEntropy` and torch autograd
//! (tests/reference/make_cls_loss_fixtures.py): loss values and gradients on mixed smoothed
//! targets, extreme logits, one-hot targets and a 1000-class row.

use candle_core::{Device, Tensor, Var};
use nextdet_heads::classifier::{log_softmax_rows, soft_target_cross_entropy};
use nextdet_testutil::load_fixture;
use std::collections::HashMap;

fn fixture() -> HashMap<String, Tensor> {
    load_fixture("cls_loss/soft_ce.safetensors")
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f32::max)
}

#[test]
fn loss_and_gradient_match_timm() {
    let fx = fixture();
    for case in 0..4 {
        let get = |k: &str| fx[&format!("{case}.{k}")].clone();
        let logits = Var::from_tensor(&get("logits")).unwrap();
        let loss = soft_target_cross_entropy(logits.as_tensor(), &get("targets")).unwrap();
        assert_eq!(loss.dims(), &[] as &[usize], "case {case}: a scalar");
        let want = get("loss").to_vec1::<f32>().unwrap()[0];
        let got = loss.to_scalar::<f32>().unwrap();
        assert!(got.is_finite(), "case {case}: {got}");
        assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "case {case}: loss {got} vs timm {want}");
        let grads = loss.backward().unwrap();
        let grad = grads.get(logits.as_tensor()).expect("a gradient for the logits");
        let diff = max_rel_diff(grad, &get("grad"));
        assert!(diff <= 1e-6, "case {case}: gradient differs from torch by {diff}");
    }
}

#[test]
fn log_softmax_rows_are_finite_and_normalized() {
    let x = Tensor::new(&[[1000f32, 0.0, -1000.0], [-5.0, -5.0, -5.0]], &Device::Cpu).unwrap();
    let rows = log_softmax_rows(&x).unwrap().exp().unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
    for s in rows {
        assert!((s - 1.0).abs() < 1e-6, "{s}");
    }
}

#[test]
fn mismatched_or_empty_inputs_are_errors() {
    let d = Device::Cpu;
    let logits = Tensor::zeros((2, 3), candle_core::DType::F32, &d).unwrap();
    let targets = Tensor::zeros((2, 4), candle_core::DType::F32, &d).unwrap();
    let err = soft_target_cross_entropy(&logits, &targets).unwrap_err().to_string();
    assert!(err.contains("do not match"), "{err}");
    let empty = Tensor::zeros((0, 3), candle_core::DType::F32, &d).unwrap();
    assert!(soft_target_cross_entropy(&empty, &empty).is_err());
}
