//! The fused GELU + linear against PyTorch autograd (`F.linear(F.gelu(h + b), w)`), on fixtures
//! written by `tests/reference/make_gelu_linear_fixtures.py`, with the default chunking and with
//! chunks small enough to split the fixtures; plus an input spanning several default chunks
//! against the unfused candle ops, the empty input, bad shapes and determinism across thread
//! counts.

use candle_core::{Device, Tensor, Var};
use nextdet_ops::{gelu_linear, gelu_linear_chunked};
use nextdet_testutil::{assert_close_scaled as assert_close, load_fixture, max_abs};
use std::collections::HashMap;

/// Relative tolerance: max |got - want| <= TOL * max(1, max |want|).
const TOL: f32 = 1e-5;

const CASES: [&str; 5] = ["nhwc", "odd", "single_row", "prime37", "wide_out"];

fn fixtures() -> HashMap<String, Tensor> {
    load_fixture("gelu_linear/gelu_linear.safetensors")
}

/// Forward and the gradients of `sum(y * g)` for one fixture case, with chunks of about
/// `chunk_floats` values (`None`: the default chunking).
fn check_case(f: &HashMap<String, Tensor>, name: &str, chunk_floats: Option<usize>) {
    let get = |k: &str| f.get(&format!("{name}.{k}")).unwrap_or_else(|| panic!("fixture {name}.{k}")).clone();
    let (h, b, w) = (
        Var::from_tensor(&get("h")).unwrap(),
        Var::from_tensor(&get("b")).unwrap(),
        Var::from_tensor(&get("w")).unwrap(),
    );
    let y = match chunk_floats {
        Some(c) => gelu_linear_chunked(h.as_tensor(), b.as_tensor(), w.as_tensor(), c),
        None => gelu_linear(h.as_tensor(), b.as_tensor(), w.as_tensor()),
    }
    .unwrap();
    let what = format!("{name} (chunk {chunk_floats:?})");
    assert_close(&format!("{what} y"), &y, &get("y"), TOL);
    let grads = (y * get("g")).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(&format!("{what} dh"), grads.get(&h).expect("dh"), &get("dh"), TOL);
    assert_close(&format!("{what} db"), grads.get(&b).expect("db"), &get("db"), TOL);
    assert_close(&format!("{what} dw"), grads.get(&w).expect("dw"), &get("dw"), TOL);
}

#[test]
fn matches_torch_with_default_chunks() {
    let f = fixtures();
    for name in CASES {
        check_case(&f, name, None);
    }
}

#[test]
fn matches_torch_across_chunk_boundaries() {
    let f = fixtures();
    for name in CASES {
        let k = f[&format!("{name}.w")].dim(1).unwrap();
        // One row per chunk; three rows per chunk (a short last chunk in the odd cases); a
        // chunk size that is not a whole number of rows.
        for chunk in [1, 3 * k, 5 * k + k / 2] {
            check_case(&f, name, Some(chunk));
        }
    }
}

/// Deterministic values in [-3, 3) without depending on candle's RNG.
fn spread(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn several_default_chunks_match_unfused_candle_ops() {
    // 1250 x 1024 values (over 4 MB of GELU output): two default chunks of 625 rows.
    let (h, b) =
        (Var::from_tensor(&spread(&[5, 250, 1024], 1)).unwrap(), Var::from_tensor(&spread(&[1024], 2)).unwrap());
    let w = Var::from_tensor(&(spread(&[40, 1024], 3) * 0.03).unwrap()).unwrap();
    let gy = spread(&[5, 250, 40], 4);
    let fused = gelu_linear(h.as_tensor(), b.as_tensor(), w.as_tensor()).unwrap();
    let a = h.as_tensor().broadcast_add(b.as_tensor()).unwrap().gelu_erf().unwrap();
    let plain = a.broadcast_matmul(&w.as_tensor().t().unwrap()).unwrap();
    assert_close("y", &fused, &plain, 1e-5);
    let gf = (&fused * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    let gp = (&plain * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    for (what, v) in [("dh", &h), ("db", &b), ("dw", &w)] {
        assert_close(what, gf.get(v).expect("fused grad"), gp.get(v).expect("plain grad"), 1e-4);
    }
}

#[test]
fn empty_input_gives_empty_output_and_zero_gradients() {
    let h = Var::from_tensor(&Tensor::zeros((0, 6), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
    let b = Var::from_tensor(&spread(&[6], 5)).unwrap();
    let w = Var::from_tensor(&spread(&[4, 6], 6)).unwrap();
    let y = gelu_linear(h.as_tensor(), b.as_tensor(), w.as_tensor()).unwrap();
    assert_eq!(y.dims(), [0, 4]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(max_abs(g.get(&w).expect("dw")), 0.0);
    assert_eq!(max_abs(g.get(&b).expect("db")), 0.0);
}

#[test]
fn bad_shapes_are_errors() {
    let h = spread(&[4, 6], 7);
    let (b, w) = (spread(&[6], 8), spread(&[3, 6], 9));
    assert!(gelu_linear(&h, &b, &spread(&[3, 5], 10)).is_err(), "weight input features differ");
    assert!(gelu_linear(&h, &spread(&[5], 11), &w).is_err(), "bias length differs");
    assert!(gelu_linear(&h, &b, &spread(&[3, 2, 3], 12)).is_err(), "weight not 2-D");
    assert!(gelu_linear(&h, &b, &w).is_ok());
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let h = spread(&[2, 150, 512], 13);
    let (b, w) = (spread(&[512], 14), (spread(&[96, 512], 15) * 0.05).unwrap());
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (hv, bv, wv) =
                (Var::from_tensor(&h).unwrap(), Var::from_tensor(&b).unwrap(), Var::from_tensor(&w).unwrap());
            let y = gelu_linear_chunked(hv.as_tensor(), bv.as_tensor(), wv.as_tensor(), 40_000).unwrap();
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            [y, g.get(&hv).unwrap().clone(), g.get(&bv).unwrap().clone(), g.get(&wv).unwrap().clone()]
                .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        })
    };
    assert_eq!(run(1), run(3));
}
