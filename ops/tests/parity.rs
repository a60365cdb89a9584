//! Forward and backward of the custom ops against PyTorch autograd, on fixtures written by
//! `tests/reference/make_op_fixtures.py`.

use candle_core::{Tensor, Var};
use nextdet_testutil::{assert_close, load_fixture};
use std::collections::HashMap;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    load_fixture(&format!("ops/{name}"))
}

/// Runs `op(x, w, b)`, backpropagates `sum(y * gy)` and compares y, dx, dw, db with the fixture.
fn check_three(name: &str, op: impl Fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor>, tol: f32) {
    let f = fixture(name);
    let x = Var::from_tensor(&f["x"]).unwrap();
    let w = Var::from_tensor(&f["weight"]).unwrap();
    let b = Var::from_tensor(&f["bias"]).unwrap();
    let y = op(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
    assert_close(&format!("{name} y"), &y, &f["y"], tol);
    let grads = (y * &f["gy"]).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(&format!("{name} dx"), grads.get(&x).expect("dx"), &f["dx"], tol);
    assert_close(&format!("{name} dw"), grads.get(&w).expect("dw"), &f["dw"], tol * 10.0);
    assert_close(&format!("{name} db"), grads.get(&b).expect("db"), &f["db"], tol * 10.0);
}

#[test]
fn depthwise_conv_k7_matches_torch() {
    check_three("dwconv_k7.safetensors", nextdet_ops::depthwise_conv2d_nchw, 1e-4);
}

#[test]
fn depthwise_conv_k3_matches_torch() {
    check_three("dwconv_k3.safetensors", nextdet_ops::depthwise_conv2d_nchw, 1e-4);
}

#[test]
fn layer_norm_last_dim_matches_torch() {
    check_three("layernorm_last.safetensors", |x, w, b| nextdet_ops::layer_norm(x, w, b, 1e-6), 1e-4);
}

#[test]
fn layer_norm_channels_first_matches_torch() {
    check_three(
        "layernorm_channels_first.safetensors",
        |x, w, b| nextdet_ops::layer_norm_channels_first(x, w, b, 1e-6),
        1e-4,
    );
}
