//! Times each step of a ConvNeXt-T block at the four stage shapes, for comparison with
//! `tests/reference/bench_convnext_tiny.py` (which times `F.conv2d(groups=C)` the same way).
//!
//! `cargo run --release -p nextdet-ops --example bench_kernels -- [BATCH] [ITERS]`

use candle_core::{Device, Result, Tensor};
use std::time::Instant;

/// Milliseconds per call of `f`: the best of three means over `iters` calls each, after one
/// warm-up call (the best run is the one least disturbed by the rest of a shared machine).
fn time_ms(iters: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1000.0 / iters as f64);
    }
    Ok(best)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("BATCH and ITERS are integers"));
    let batch = args.next().unwrap_or(8);
    let iters = args.next().unwrap_or(20);
    let dev = Device::Cpu;
    println!("batch {batch}, {iters} iterations, {} threads", rayon::current_num_threads());
    for (c, hw) in [(96, 56), (192, 28), (384, 14), (768, 7)] {
        let x = Tensor::randn(0f32, 1.0, (batch, hw, hw, c), &dev)?;
        let (w, b) = (Tensor::randn(0f32, 1.0, (c, 1, 7, 7), &dev)?, Tensor::randn(0f32, 1.0, c, &dev)?);
        let w1 = Tensor::randn(0f32, 0.1, (4 * c, c), &dev)?;
        let w2 = Tensor::randn(0f32, 0.1, (c, 4 * c), &dev)?;
        let b1 = Tensor::randn(0f32, 1.0, 4 * c, &dev)?;
        let rows = x.reshape((batch * hw * hw, c))?;
        let hidden = rows.matmul(&w1.t()?)?;
        let mut steps = vec![
            ("depthwise conv 7x7", time_ms(iters, || nextdet_ops::depthwise_conv2d_nhwc(&x, &w, &b))?),
            (
                "depthwise conv + norm",
                time_ms(iters, || nextdet_ops::depthwise_conv2d_layer_norm_nhwc(&x, &w, &b, &b, &b, 1e-6))?,
            ),
            ("layer norm", time_ms(iters, || nextdet_ops::layer_norm(&x, &b, &b, 1e-6))?),
            ("linear C->4C", time_ms(iters, || nextdet_ops::linear_no_bias(&rows, &w1))?),
            ("bias + GELU", time_ms(iters, || nextdet_ops::bias_gelu(&hidden, &b1))?),
            ("linear 4C->C", time_ms(iters, || nextdet_ops::linear_no_bias(&hidden, &w2))?),
            (
                "layer scale + residual",
                time_ms(iters, || nextdet_ops::layer_scale_residual(&rows, &b, Some(&b), &rows))?,
            ),
        ];
        // the packed inference MLP, where the CPU runs packed multiplies (AVX-512): as many blocks
        // as the stage has, each with its own weights (the model's weights come from memory, not
        // from a cache that the same weights would stay in)
        let blocks = if c == 384 { 9 } else { 3 };
        let packed = |w: Tensor| nextdet_ops::PackedWeight::from_weight(&w, nextdet_ops::Precision::F32);
        let mut mlps = Vec::with_capacity(blocks);
        for _ in 0..blocks {
            let w1 = packed(Tensor::randn(0f32, 0.1, (4 * c, c), &dev)?)?;
            let w2 = packed(Tensor::randn(0f32, 0.1, (c, 4 * c), &dev)?)?;
            if let (Some(w1), Some(w2)) = (w1, w2) {
                let (b1, b2) = (b1.to_vec1()?, b.to_vec1()?);
                let gamma = Some(b2.clone());
                mlps.push(nextdet_ops::PackedMlp { w1: w1.into(), b1, w2: w2.into(), b2, gamma });
            }
        }
        if let Some(mlp) = mlps.first() {
            let mut next = 0;
            let mut cold_mlp = || {
                next = (next + 1) % mlps.len();
                nextdet_ops::convnext_mlp_inference(&rows, &rows, &mlps[next])
            };
            steps.push(("packed MLP, every block", time_ms(iters, &mut cold_mlp)?));
            steps.push((
                "packed MLP (inference)",
                time_ms(iters, || nextdet_ops::convnext_mlp_inference(&rows, &rows, mlp))?,
            ));
        }
        println!("[{batch}, {c}, {hw}, {hw}]");
        for (name, ms) in steps {
            println!("  {name:<24} {ms:8.3} ms");
        }
    }
    Ok(())
}
