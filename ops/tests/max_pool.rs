//! ResNet's stem max pooling against torch's `F.max_pool2d(x, 3, stride=2, padding=1)` on ReLU
//! outputs (fixtures from `tests/reference/make_max_pool_fixtures.py`): the output and the
//! gradient of `sum(y * g)` where the input is positive, even and odd sizes and a 1x2 input.

use candle_core::{Device, Tensor, Var};
use nextdet_ops::max_pool_3x3_stride2_nonnegative;
use nextdet_testutil::max_abs_diff;

#[test]
fn matches_torch_forward_and_backward() {
    let path = format!("{}/../tests/fixtures/max_pool/max_pool.safetensors", env!("CARGO_MANIFEST_DIR"));
    let f = candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{path}: {e}"));
    for name in ["even", "odd", "tiny"] {
        let get = |k: &str| f[&format!("{name}.{k}")].clone();
        let x = Var::from_tensor(&get("x")).unwrap();
        let y = max_pool_3x3_stride2_nonnegative(x.as_tensor()).unwrap();
        assert_eq!(y.dims(), get("y").dims(), "{name}");
        assert_eq!(max_abs_diff(&y, &get("y")), 0.0, "{name}: forward");
        let grads = (y * get("g")).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = grads.get(x.as_tensor()).expect("a gradient for x");
        // Where x is 0 (a window of zeros), torch routes the gradient to one zero and this op
        // splits it; the ReLU before the pooling zeroes both. Compare where x > 0.
        let positive = get("x").gt(0.0).unwrap().to_dtype(candle_core::DType::F32).unwrap();
        let masked = |t: &Tensor| (t * &positive).unwrap();
        let diff = max_abs_diff(&masked(dx), &masked(&get("dx")));
        assert!(diff <= 1e-6, "{name}: input gradient differs by {diff} where x > 0");
        assert!(masked(&get("dx")).abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    }
}

#[test]
fn an_empty_plane_is_an_error() {
    let x = Tensor::zeros((1, 1, 0, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(max_pool_3x3_stride2_nonnegative(&x).is_err());
}
