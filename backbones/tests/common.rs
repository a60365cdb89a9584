//! Helpers shared by the backbone tests: fixture loading and tensor comparison.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use nextdet_ops::ParamStore;
use std::collections::HashMap;

/// Path of a committed fixture, relative to `tests/fixtures/`.
pub fn fixture_path(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}/../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR")))
}

/// All tensors of a safetensors fixture.
pub fn fixture(rel: &str) -> HashMap<String, Tensor> {
    let path = fixture_path(rel);
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Largest absolute difference, after checking the shapes agree.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Largest absolute value (the scale a tolerance is relative to).
pub fn max_abs(a: &Tensor) -> f32 {
    a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Asserts `got` is within `rel` of `want`, relative to `want`'s largest magnitude.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    let (d, scale) = (max_abs_diff(got, want), max_abs(want).max(1.0));
    assert!(d <= rel * scale, "{what}: max abs diff {d} exceeds {rel} x {scale}");
}

/// Loads the fixture tensors whose names the store has and asserts every parameter was filled.
pub fn load_exact(store: &ParamStore, tensors: &HashMap<String, Tensor>) {
    let names: std::collections::HashSet<String> = store.tensors().into_iter().map(|(k, _)| k).collect();
    let subset: HashMap<String, Tensor> =
        tensors.iter().filter(|(k, _)| names.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let report = store.load(&subset).unwrap();
    assert!(report.is_exact(), "{}", report.summary());
}
