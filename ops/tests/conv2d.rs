//! The dense convolution against PyTorch autograd (`F.conv2d`), on fixtures written by
//! `tests/reference/make_conv2d_fixtures.py`; plus the empty batch, bad shapes, the `nn::Conv2d`
//! layer and determinism across thread counts.

use candle_core::{DType, Device, Tensor, Var};
use nextdet_ops::conv2d::conv2d;
use nextdet_testutil::{assert_close_scaled, load_fixture, max_abs};
use std::collections::HashMap;

/// Relative tolerance: max |got - want| <= TOL * max(1, max |want|).
const TOL: f32 = 1e-4;

fn fixtures() -> HashMap<String, Tensor> {
    load_fixture("conv2d/conv2d.safetensors")
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_close_scaled(what, got, want, TOL);
}

/// Forward and the gradients of `sum(y * g)` for one fixture case.
fn check_case(name: &str) {
    let f = fixtures();
    let get = |k: &str| f.get(&format!("{name}.{k}")).unwrap_or_else(|| panic!("fixture {name}.{k}")).clone();
    let meta = get("meta").to_vec1::<f32>().unwrap();
    let (stride, padding) = (meta[0] as usize, meta[1] as usize);
    let x = Var::from_tensor(&get("x")).unwrap();
    let w = Var::from_tensor(&get("w")).unwrap();
    let b = f.get(&format!("{name}.b")).map(|b| Var::from_tensor(b).unwrap());
    let y = conv2d(x.as_tensor(), w.as_tensor(), b.as_ref().map(|b| b.as_tensor()), stride, padding).unwrap();
    assert_close(&format!("{name} y"), &y, &get("y"));
    let grads = (y * get("g")).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(&format!("{name} dx"), grads.get(&x).expect("dx"), &get("dx"));
    assert_close(&format!("{name} dw"), grads.get(&w).expect("dw"), &get("dw"));
    if let Some(b) = &b {
        assert_close(&format!("{name} db"), grads.get(b).expect("db"), &get("db"));
    }
}

#[test]
fn k3_stride1_pad1_matches_torch() {
    check_case("k3s1p1");
}

#[test]
fn k3_stride2_pad1_matches_torch() {
    check_case("k3s2p1");
}

#[test]
fn k3_stride1_pad0_matches_torch() {
    check_case("k3s1p0");
}

#[test]
fn k1_stride1_matches_torch() {
    check_case("k1s1p0");
}

#[test]
fn k1_stride2_matches_torch() {
    check_case("k1s2p0");
}

#[test]
fn k5_pad2_matches_torch() {
    check_case("k5s1p2");
}

#[test]
fn no_bias_matches_torch() {
    check_case("k3s1p1_nobias");
}

#[test]
fn tiny_spatial_sizes_match_torch() {
    check_case("tiny1x1");
    check_case("tiny2x3");
    check_case("tiny2x3_s2");
}

#[test]
fn many_small_images_match_torch() {
    check_case("many7x7");
}

#[test]
fn row_bands_of_one_image_match_torch() {
    check_case("band20x15");
    check_case("band1x1_20x15");
    check_case("band20x15_s2");
}

#[test]
fn empty_batch_gives_empty_output_and_zero_weight_grads() {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::zeros((0, 4, 14, 14), DType::F32, &dev).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::ones((3, 4, 3, 3), DType::F32, &dev).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::ones(3, DType::F32, &dev).unwrap()).unwrap();
    for stride in [1, 2] {
        let y = conv2d(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), stride, 1).unwrap();
        let side = (14 + 2 - 3) / stride + 1;
        assert_eq!(y.dims(), [0, 3, side, side]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(grads.get(&x).expect("dx").dims(), [0, 4, 14, 14]);
        assert_eq!(max_abs(grads.get(&w).expect("dw")), 0.0);
        assert_eq!(max_abs(grads.get(&b).expect("db")), 0.0);
    }
}

#[test]
fn bad_shapes_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 4, 2, 2), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((3, 5, 3, 3), DType::F32, &dev).unwrap();
    assert!(conv2d(&x, &w, None, 1, 1).is_err(), "channel mismatch");
    let w = Tensor::zeros((3, 4, 3, 3), DType::F32, &dev).unwrap();
    assert!(conv2d(&x, &w, None, 1, 0).is_err(), "kernel larger than the padded input");
    assert!(conv2d(&x, &w, None, 0, 1).is_err(), "stride 0");
    let b = Tensor::zeros(4, DType::F32, &dev).unwrap();
    assert!(conv2d(&x, &w, Some(&b), 1, 1).is_err(), "bias length");
}

#[test]
fn strided_input_matches_contiguous() {
    let f = fixtures();
    let (x, w, b) = (&f["k3s1p1.x"], &f["k3s1p1.w"], &f["k3s1p1.b"]);
    // The same values through a transposed view.
    let xt = x.transpose(2, 3).unwrap().contiguous().unwrap().transpose(2, 3).unwrap();
    let y = conv2d(&xt, w, Some(b), 1, 1).unwrap();
    assert_close("strided y", &y, &f["k3s1p1.y"]);
}

#[test]
fn nn_conv2d_layer_matches_torch() {
    let f = fixtures();
    let store = nextdet_ops::ParamStore::new(&Device::Cpu, 0);
    let layer = nextdet_ops::nn::Conv2d::new(&store.root(), 5, 4, 3, 1, 1, nextdet_ops::Init::Const(0.0)).unwrap();
    let weights: HashMap<String, Tensor> =
        [("weight".to_string(), f["k3s1p1.w"].clone()), ("bias".to_string(), f["k3s1p1.b"].clone())].into();
    assert!(store.load(&weights).unwrap().is_exact());
    assert_close("layer y", &layer.forward(&f["k3s1p1.x"]).unwrap(), &f["k3s1p1.y"]);
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (3, 16, 33, 29), &dev).unwrap();
    let w = Tensor::randn(0f32, 0.1, (8, 16, 3, 3), &dev).unwrap();
    let b = Tensor::randn(0f32, 1.0, 8, &dev).unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (xv, wv, bv) =
                (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap(), Var::from_tensor(&b).unwrap());
            let y = conv2d(xv.as_tensor(), wv.as_tensor(), Some(bv.as_tensor()), 1, 1).unwrap();
            let g = (y.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
            [y, g.get(&xv).unwrap().clone(), g.get(&wv).unwrap().clone(), g.get(&bv).unwrap().clone()]
                .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        })
    };
    assert_eq!(run(1), run(3));
}
