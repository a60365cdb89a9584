//! Nearest/bilinear resize and stride-2 subsampling, forward and input gradient, against
//! PyTorch autograd (`F.interpolate`, `F.max_pool2d(x, 1, 2)`) on fixtures written by
//! `tests/reference/make_mask_fixtures.py`.

use candle_core::{DType, Device, Tensor, Var};
use nextdet_ops::{resize_bilinear, resize_nearest, subsample_stride2};
use nextdet_testutil::{load_fixture, max_abs_diff};
use std::collections::HashMap;

fn fixture() -> HashMap<String, Tensor> {
    load_fixture("ops/masks/resample.safetensors")
}

enum Kind {
    Nearest,
    Bilinear,
    Stride2,
}

fn apply(kind: &Kind, x: &Tensor, size: (usize, usize)) -> candle_core::Result<Tensor> {
    match kind {
        Kind::Nearest => resize_nearest(x, size),
        Kind::Bilinear => resize_bilinear(x, size),
        Kind::Stride2 => subsample_stride2(x),
    }
}

/// Forward and `d/dx sum(y * gy)` against the fixture; `tol` on both.
fn check(name: &str, kind: Kind, tol: f32) {
    let f = fixture();
    let size = f[&format!("{name}_size")].to_vec1::<i64>().unwrap();
    let size = (size[0] as usize, size[1] as usize);
    let x = Var::from_tensor(&f[&format!("{name}_x")]).unwrap();
    let y = apply(&kind, x.as_tensor(), size).unwrap();
    let d = max_abs_diff(&y, &f[&format!("{name}_y")]);
    assert!(d <= tol, "{name} y: max abs diff {d} > {tol}");
    let grads = (y * &f[&format!("{name}_gy")]).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grads.get(&x).expect("dx");
    let d = max_abs_diff(dx, &f[&format!("{name}_dx")]);
    assert!(d <= tol, "{name} dx: max abs diff {d} > {tol}");
}

#[test]
fn nearest_2x_matches_torch() {
    check("near_up2", Kind::Nearest, 0.0);
}

#[test]
fn nearest_uses_torch_f32_index_rule() {
    check("near_odd", Kind::Nearest, 1e-6);
}

#[test]
fn nearest_down_and_same_match_torch() {
    check("near_down", Kind::Nearest, 1e-6);
    check("near_same", Kind::Nearest, 0.0);
}

#[test]
fn subsample_stride2_matches_max_pool_k1_s2() {
    check("sub2_even", Kind::Stride2, 0.0);
    check("sub2_odd", Kind::Stride2, 0.0);
}

#[test]
fn bilinear_matches_torch() {
    check("bil_up", Kind::Bilinear, 1e-5);
    check("bil_down", Kind::Bilinear, 1e-5);
    check("bil_mixed", Kind::Bilinear, 1e-5);
    check("bil_up2", Kind::Bilinear, 1e-5);
}

#[test]
fn gradients_do_not_depend_on_thread_count() {
    let f = fixture();
    let grad = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let x = Var::from_tensor(&f["bil_down_x"]).unwrap();
            let y = resize_bilinear(x.as_tensor(), (4, 5)).unwrap();
            let g = (y * &f["bil_down_gy"]).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
    };
    assert_eq!(grad(1), grad(3));
}

#[test]
fn bad_inputs_are_errors() {
    let dev = Device::Cpu;
    let x3 = Tensor::zeros((3, 4, 5), DType::F32, &dev).unwrap();
    assert!(resize_nearest(&x3, (2, 2)).is_err());
    assert!(resize_bilinear(&x3, (2, 2)).is_err());
    assert!(subsample_stride2(&x3).is_err());
    let x = Tensor::zeros((1, 2, 4, 5), DType::F32, &dev).unwrap();
    assert!(resize_nearest(&x, (0, 2)).is_err());
    assert!(resize_bilinear(&x, (2, 0)).is_err());
    let empty = Tensor::zeros((1, 2, 0, 5), DType::F32, &dev).unwrap();
    assert!(resize_nearest(&empty, (2, 2)).is_err());
    assert!(subsample_stride2(&empty).is_err());
    let x64 = Tensor::zeros((1, 2, 4, 5), DType::F64, &dev).unwrap();
    assert!(resize_nearest(&x64, (8, 10)).is_err());
    // Non-contiguous input is fine; an empty batch gives an empty output.
    let xt = Tensor::arange(0f32, 40.0, &dev).unwrap().reshape((1, 2, 5, 4)).unwrap().transpose(2, 3).unwrap();
    let y = subsample_stride2(&xt).unwrap();
    assert_eq!(y.dims(), [1, 2, 2, 3]);
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![0., 8., 16., 2., 10., 18., 20., 28., 36., 22., 30., 38.]
    );
    let none = Tensor::zeros((0, 2, 4, 5), DType::F32, &dev).unwrap();
    assert_eq!(resize_nearest(&none, (8, 10)).unwrap().dims(), [0, 2, 8, 10]);
}
