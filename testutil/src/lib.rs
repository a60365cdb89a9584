//! What nextdet's tests share: loading the committed PyTorch fixtures (`tests/fixtures/`,
//! written by the scripts in `tests/reference/`) and comparing tensors with them. A
//! dev-dependency only; every helper panics with a message naming what differs.

#![deny(missing_docs)]

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// The repository's root: `NEXTDET_REPO` when set (a test binary built on one machine and run
/// from another checkout, as `tools/gpu-check.sh` does), else where this crate was built.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("NEXTDET_REPO") {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// The repository's `tests/fixtures` folder.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// The tensors of the safetensors fixture `tests/fixtures/<rel>` on the CPU.
pub fn load_fixture(rel: &str) -> HashMap<String, Tensor> {
    let path = fixtures_dir().join(rel);
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The largest absolute value of a tensor (0 for an empty one).
pub fn max_abs(t: &Tensor) -> f32 {
    if t.elem_count() == 0 {
        return 0.0;
    }
    t.to_dtype(DType::F32).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// The largest absolute difference of two tensors of the same shape (0 when both are empty).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    max_abs(&(a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap())
}

/// Asserts that `got` is within `tol` of `want` everywhere (absolute).
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let d = max_abs_diff(got, want);
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
}

/// Asserts that `got` is within `tol * max(max |want|, 1)` of `want` everywhere: a tolerance
/// relative to the size of the reference values.
pub fn assert_close_scaled(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let d = max_abs_diff(got, want);
    let tol = tol * max_abs(want).max(1.0);
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_catch_differences() {
        let a = Tensor::new(&[1.0f32, -4.0, 2.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[1.0f32, -4.5, 2.0], &Device::Cpu).unwrap();
        assert_eq!(max_abs(&a), 4.0);
        assert_eq!(max_abs_diff(&a, &b), 0.5);
        assert_close("same", &a, &a, 0.0);
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert_close("differ", &a, &b, 0.4))).is_err());
        assert_close_scaled("scaled", &a, &b, 0.5 / 4.5);
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert_close_scaled("scaled", &a, &b, 0.1)))
            .is_err());
        let empty = Tensor::zeros((0, 4), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&empty, &empty), 0.0);
    }
}
