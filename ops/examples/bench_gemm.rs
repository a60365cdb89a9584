//! GFLOP/s of the linear layer's matrix multiply at ConvNeXt-T's pointwise shapes, on the
//! current rayon pool, for the training multiply and the packed inference ones (f32, and bf16
//! where the CPU has it): `cargo run --release -p nextdet-ops --example bench_gemm -- [ROWS...]`.

use candle_core::{Device, Result, Tensor};
use nextdet_ops::{PackedWeight, Precision};
use std::time::Instant;

/// The best of three rounds of `iters` calls, in seconds per call.
fn best_time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        best = best.min(t.elapsed().as_secs_f64() / iters as f64);
    }
    Ok(best)
}

fn main() -> Result<()> {
    let rows: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("integer")).collect();
    let rows = if rows.is_empty() { vec![3136, 784, 196, 49] } else { rows };
    println!("{} threads", rayon::current_num_threads());
    for (&m, c) in rows.iter().zip([96usize, 192, 384, 768].iter().cycle()) {
        for (k, n) in [(*c, 4 * c), (4 * c, *c)] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
            let w = Tensor::randn(0f32, 0.1, (n, k), &Device::Cpu)?;
            let iters = (2e9 / (2.0 * (m * k * n) as f64)).ceil() as usize;
            let gflops = |t: f64| 2.0 * (m * k * n) as f64 / t / 1e9;
            let plain = best_time(iters, || nextdet_ops::linear_no_bias(&x, &w).map(drop))?;
            let mut line = format!("[{m} x {k}] x [{k} x {n}]: training {:6.1}", gflops(plain));
            for (name, precision) in [("packed f32", Precision::F32), ("packed bf16", Precision::Bf16)] {
                if let Some(p) = PackedWeight::from_weight(&w, precision)? {
                    let p = std::sync::Arc::new(p);
                    let t = best_time(iters, || nextdet_ops::linear_packed(&x, &p).map(drop))?;
                    line += &format!(", {name} {:6.1}", gflops(t));
                }
            }
            println!("{line} GFLOP/s");
        }
    }
    Ok(())
}
