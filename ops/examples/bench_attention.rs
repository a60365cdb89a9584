//! Times the window attention op (forward, and forward + backward) and the softmax of the same
//! logits alone, at the shapes of Swin-T's four stages at 224x224, batch 8 (7x7 windows, head
//! dim 32): where the attention's time goes next to the whole model's
//! (`nextdet benchmark configs/imagenet/swin_tiny_1k_224.yaml`).
//!
//!     cargo run --release -p nextdet-ops --example bench_attention -- [threads]

use candle_core::{Device, Tensor, Var};
use nextdet_ops::{softmax_last_dim, window_attention};
use std::time::Instant;

fn time<F: FnMut()>(mut f: F, iters: usize) -> f64 {
    f();
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    t0.elapsed().as_secs_f64() / iters as f64 * 1e3
}

fn main() {
    let threads = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();
    let dev = Device::Cpu;
    // (windows per image, heads) of Swin-T's stages at 224: 7x7 windows of 32-channel heads.
    for (stage, (windows, heads)) in [(64, 3), (16, 6), (4, 12), (1, 24)].into_iter().enumerate() {
        let (groups, n, d) = (8 * windows, 49, 32);
        let c = heads * d;
        let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (groups, n, 3 * c), &dev).unwrap()).unwrap();
        let bias = Var::from_tensor(&Tensor::randn(0f32, 1.0, (heads, n, n), &dev).unwrap()).unwrap();
        let mask = Tensor::zeros((windows, n, n), candle_core::DType::F32, &dev).unwrap();
        let gy = Tensor::randn(0f32, 1.0, (groups, n, c), &dev).unwrap();
        let scale = (d as f64).powf(-0.5);
        let fwd = time(
            || {
                window_attention(qkv.as_tensor(), bias.as_tensor(), Some(&mask), heads, scale).unwrap();
            },
            10,
        );
        let fwd_bwd = time(
            || {
                let y = window_attention(qkv.as_tensor(), bias.as_tensor(), Some(&mask), heads, scale).unwrap();
                (y * &gy).unwrap().sum_all().unwrap().backward().unwrap();
            },
            5,
        );
        let logits = Tensor::randn(0f32, 1.0, (groups * heads, n, n), &dev).unwrap();
        let sm = time(
            || {
                softmax_last_dim(&logits).unwrap();
            },
            10,
        );
        println!(
            "stage {stage} [{groups} windows x {heads} heads, {n} tokens, d {d}]: attention forward {fwd:7.2} ms, \
             forward+backward {fwd_bwd:7.2} ms; softmax of the logits {sm:6.2} ms"
        );
    }
}
