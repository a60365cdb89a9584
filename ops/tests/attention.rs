//! Softmax, log-softmax, window attention and the row gather against the same computation in
//! plain candle ops (whose forward and backward candle already defines): outputs and every
//! gradient, with and without a mask, across the kernels' task boundaries; the attention's bias
//! gradient has the same bits on 1 and 3 threads.

use candle_core::{DType, Device, Tensor, Var, D};
use nextdet_ops::{gather_rows, log_softmax_last_dim, scatter_rows, softmax_last_dim, window_attention, RowMap};
use std::sync::Arc;

fn randn(shape: &[usize], seed: u64, spread: f32) -> Tensor {
    // A deterministic spread of values without depending on candle's RNG.
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * spread
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn plain_softmax(x: &Tensor) -> Tensor {
    let max = x.max_keepdim(D::Minus1).unwrap().detach();
    let e = x.broadcast_sub(&max).unwrap().exp().unwrap();
    e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
}

#[test]
fn softmax_matches_plain_ops_and_gradient() {
    // 37 columns (not a multiple of the kernel's 16 lanes), values up to +-40, and enough rows
    // to be cut into several tasks.
    let x = Var::from_tensor(&randn(&[3, 700, 37], 1, 80.0)).unwrap();
    let gy = randn(&[3, 700, 37], 2, 2.0);
    let fused = softmax_last_dim(x.as_tensor()).unwrap();
    let plain = plain_softmax(x.as_tensor());
    assert!(max_diff(&fused, &plain) < 1e-6, "forward diff {}", max_diff(&fused, &plain));
    let rows = fused.sum(D::Minus1).unwrap();
    assert!(max_diff(&rows, &Tensor::ones_like(&rows).unwrap()) < 1e-5);
    let gf = (&fused * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    let gp = (&plain * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    let d = max_diff(gf.get(&x).unwrap(), gp.get(&x).unwrap());
    assert!(d < 1e-5, "gradient diff {d}");
}

#[test]
fn log_softmax_matches_plain_ops_and_gradient() {
    let x = Var::from_tensor(&randn(&[300, 21], 3, 60.0)).unwrap();
    let gy = randn(&[300, 21], 4, 2.0);
    let fused = log_softmax_last_dim(x.as_tensor()).unwrap();
    let plain = plain_softmax(x.as_tensor()).log().unwrap();
    assert!(max_diff(&fused, &plain) < 1e-4, "forward diff {}", max_diff(&fused, &plain));
    let gf = (&fused * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    let gp = (&plain * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    let d = max_diff(gf.get(&x).unwrap(), gp.get(&x).unwrap());
    assert!(d < 1e-5, "gradient diff {d}");
}

#[test]
fn log_softmax_stays_finite_where_exp_underflows() {
    let x = Tensor::new(&[[0f32, -200.0, 150.0], [-1e4, -1e4, -1e4]], &Device::Cpu).unwrap();
    let y = log_softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(y[0][2], 0.0);
    assert_eq!(y[0][1], -350.0);
    // -1e4 holds ~1e-3 of precision in f32: log(1/3) within that.
    assert!((y[1][0] + 3f32.ln()).abs() < 2e-3, "{:?}", y[1]);
}

/// Swin's attention written with candle ops, as `WindowAttention.forward` in
/// `timm/models/swin_transformer.py` does it (q scaled before the product).
fn plain_attention(qkv: &Tensor, bias: &Tensor, mask: Option<&Tensor>, heads: usize) -> Tensor {
    let (b, n, c3) = qkv.dims3().unwrap();
    let d = c3 / 3 / heads;
    let qkv = qkv.reshape((b, n, 3, heads, d)).unwrap().permute((2, 0, 3, 1, 4)).unwrap();
    let q = (qkv.get(0).unwrap() * (d as f64).powf(-0.5)).unwrap().contiguous().unwrap();
    let k = qkv.get(1).unwrap().contiguous().unwrap();
    let v = qkv.get(2).unwrap().contiguous().unwrap();
    let mut attn = q.matmul(&k.t().unwrap()).unwrap().broadcast_add(&bias.unsqueeze(0).unwrap()).unwrap();
    if let Some(m) = mask {
        let nw = m.dim(0).unwrap();
        attn = attn
            .reshape((b / nw, nw, heads, n, n))
            .unwrap()
            .broadcast_add(&m.unsqueeze(1).unwrap().unsqueeze(0).unwrap())
            .unwrap()
            .reshape((b, heads, n, n))
            .unwrap();
    }
    let p = plain_softmax(&attn);
    p.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((b, n, c3 / 3)).unwrap()
}

/// A Swin-style mask: 0 inside a region, -100 across regions, region labels per token.
fn region_mask(nw: usize, n: usize, seed: u64) -> Tensor {
    let labels = randn(&[nw, n], seed, 6.0).to_vec2::<f32>().unwrap();
    let mut m = vec![0f32; nw * n * n];
    for w in 0..nw {
        for i in 0..n {
            for j in 0..n {
                if (labels[w][i] > 0.0) != (labels[w][j] > 0.0) {
                    m[(w * n + i) * n + j] = -100.0;
                }
            }
        }
    }
    Tensor::from_vec(m, (nw, n, n), &Device::Cpu).unwrap()
}

fn check_attention(groups: usize, n: usize, heads: usize, d: usize, nw: Option<usize>, seed: u64) {
    let c = heads * d;
    let qkv = Var::from_tensor(&randn(&[groups, n, 3 * c], seed, 4.0)).unwrap();
    let bias = Var::from_tensor(&randn(&[heads, n, n], seed + 1, 2.0)).unwrap();
    let mask = nw.map(|nw| region_mask(nw, n, seed + 2));
    let gy = randn(&[groups, n, c], seed + 3, 2.0);
    let scale = (d as f64).powf(-0.5);
    let fused = window_attention(qkv.as_tensor(), bias.as_tensor(), mask.as_ref(), heads, scale).unwrap();
    let plain = plain_attention(qkv.as_tensor(), bias.as_tensor(), mask.as_ref(), heads);
    let what = format!("groups {groups} n {n} heads {heads} d {d} mask {nw:?}");
    assert!(max_diff(&fused, &plain) < 1e-5, "{what}: forward diff {}", max_diff(&fused, &plain));
    let gf = (&fused * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    let gp = (&plain * &gy).unwrap().sum_all().unwrap().backward().unwrap();
    let dq = max_diff(gf.get(&qkv).unwrap(), gp.get(&qkv).unwrap());
    assert!(dq < 1e-4, "{what}: qkv gradient diff {dq}");
    let db = max_diff(gf.get(&bias).unwrap(), gp.get(&bias).unwrap());
    assert!(db < 1e-4, "{what}: bias gradient diff {db}");
}

#[test]
fn window_attention_matches_plain_ops_without_mask() {
    check_attention(3, 9, 2, 5, None, 10);
    // Swin-T's first stage: 7x7 windows, head dim 32; 20 windows make several tasks per head.
    check_attention(20, 49, 3, 32, None, 20);
}

#[test]
fn window_attention_matches_plain_ops_with_mask() {
    check_attention(8, 9, 2, 5, Some(4), 30);
    check_attention(12, 49, 2, 32, Some(3), 40);
    // One window per image, as a stage whose map is a single window.
    check_attention(2, 16, 4, 8, Some(1), 50);
}

#[test]
fn window_attention_rejects_bad_shapes() {
    let qkv = Tensor::zeros((4, 9, 30), DType::F32, &Device::Cpu).unwrap();
    let bias = Tensor::zeros((2, 9, 9), DType::F32, &Device::Cpu).unwrap();
    let err = window_attention(&qkv, &bias, None, 4, 1.0).unwrap_err().to_string();
    assert!(err.contains("does not split"), "{err}");
    let err = window_attention(&qkv, &bias, None, 5, 1.0).unwrap_err().to_string();
    assert!(err.contains("bias"), "{err}");
    let mask = Tensor::zeros((3, 9, 9), DType::F32, &Device::Cpu).unwrap();
    let err = window_attention(&qkv, &bias, Some(&mask), 2, 1.0).unwrap_err().to_string();
    assert!(err.contains("mask"), "{err}");
}

#[test]
fn window_attention_bias_gradient_does_not_depend_on_threads() {
    let qkv = Var::from_tensor(&randn(&[40, 49, 96], 60, 4.0)).unwrap();
    let bias = Var::from_tensor(&randn(&[1, 49, 49], 61, 2.0)).unwrap();
    let gy = randn(&[40, 49, 32], 62, 2.0);
    let mask = region_mask(4, 49, 63);
    let grads: Vec<Vec<f32>> = [1, 3]
        .into_iter()
        .map(|threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let y = window_attention(qkv.as_tensor(), bias.as_tensor(), Some(&mask), 1, 0.2).unwrap();
                let g = (y * &gy).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(&bias).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
        })
        .collect();
    assert_eq!(grads[0], grads[1]);
}

#[test]
fn gather_and_scatter_rows_are_inverse_and_differentiable() {
    // 6 input rows of 4; the output takes rows 4, pad, 0, 5, 2 (rows 1 and 3 are dropped).
    let map = Arc::new(RowMap::new(vec![4, nextdet_ops::gather_rows::PAD, 0, 5, 2], 6).unwrap());
    let x = Var::from_tensor(&randn(&[6, 2, 2], 70, 4.0)).unwrap();
    let y = gather_rows(x.as_tensor(), &map).unwrap();
    assert_eq!(y.dims(), &[5, 2, 2]);
    let xv = x.as_tensor().flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    let yv = y.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(yv[0], xv[4]);
    assert_eq!(yv[1], vec![0.0; 4]);
    assert_eq!(yv[2], xv[0]);
    assert_eq!(yv[3], xv[5]);
    assert_eq!(yv[4], xv[2]);
    let back = scatter_rows(&y, &map).unwrap().flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    for r in [0, 2, 4, 5] {
        assert_eq!(back[r], xv[r]);
    }
    assert_eq!(back[1], vec![0.0; 4]);
    assert_eq!(back[3], vec![0.0; 4]);
    // d/dx of sum(gather(x) * g): row r of the gradient is the g row that read x[r].
    let g = randn(&[5, 2, 2], 71, 2.0);
    let grads = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = grads.get(&x).unwrap().flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    let gv = g.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(gx[4], gv[0]);
    assert_eq!(gx[0], gv[2]);
    assert_eq!(gx[5], gv[3]);
    assert_eq!(gx[2], gv[4]);
    assert_eq!(gx[1], vec![0.0; 4]);
}

#[test]
fn a_row_map_must_be_one_to_one_and_in_range() {
    assert!(RowMap::new(vec![0, 1, 0], 3).unwrap_err().to_string().contains("used twice"));
    assert!(RowMap::new(vec![0, 3], 3).unwrap_err().to_string().contains("out of range"));
    let map = Arc::new(RowMap::new(vec![0, 1], 3).unwrap());
    let x = Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(gather_rows(&x, &map).unwrap_err().to_string().contains("expects 3"));
}
