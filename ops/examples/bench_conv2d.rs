//! Times the dense convolutions of a ConvNeXt-T Mask R-CNN at 800x1216, for comparison with
//! `tests/reference/bench_conv2d.py` (torch `F.conv2d`, same shapes, same rows).
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p nextdet-ops --example bench_conv2d -- [ITERS] [ROW] [IMPL]`
//! (`ROW`: run only the rows whose name contains it; `IMPL`: `candle`, `ours` or `both`, the
//! default)
//!
//! Each row is one convolution with a bias, timed forward only and forward plus backward (the
//! gradients of input, weight and bias for the output gradient of `sum(y)`). `candle` is
//! `Tensor::conv2d` plus a broadcast bias add (what `nn::Conv2d` did before), `ours` is
//! [`nextdet_ops::conv2d::conv2d`].

use candle_core::{Device, Result, Tensor, Var};
use std::time::Instant;

/// One benchmarked convolution: `[n, cin, h, w]` to `cout` channels, `k x k`, stride, padding.
struct Case {
    name: &'static str,
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

/// The rows, in the same order as the Python script.
const CASES: [Case; 12] = [
    Case { name: "fpn_lateral_s4 1x1 96->256", n: 1, cin: 96, h: 200, w: 304, cout: 256, k: 1, stride: 1, pad: 0 },
    Case { name: "fpn_lateral_s32 1x1 768->256", n: 1, cin: 768, h: 25, w: 38, cout: 256, k: 1, stride: 1, pad: 0 },
    Case { name: "fpn_out_s4 3x3", n: 1, cin: 256, h: 200, w: 304, cout: 256, k: 3, stride: 1, pad: 1 },
    Case { name: "fpn_out_s8 3x3", n: 1, cin: 256, h: 100, w: 152, cout: 256, k: 3, stride: 1, pad: 1 },
    Case { name: "fpn_out_s16 3x3", n: 1, cin: 256, h: 50, w: 76, cout: 256, k: 3, stride: 1, pad: 1 },
    Case { name: "fpn_out_s32 3x3", n: 1, cin: 256, h: 25, w: 38, cout: 256, k: 3, stride: 1, pad: 1 },
    Case { name: "rpn_reg_s4 1x1 256->12", n: 1, cin: 256, h: 200, w: 304, cout: 12, k: 1, stride: 1, pad: 0 },
    Case { name: "mask_test R100 3x3", n: 100, cin: 256, h: 14, w: 14, cout: 256, k: 3, stride: 1, pad: 1 },
    Case { name: "mask_train R128 3x3", n: 128, cin: 256, h: 14, w: 14, cout: 256, k: 3, stride: 1, pad: 1 },
    Case { name: "box_train R512 3x3", n: 512, cin: 256, h: 7, w: 7, cout: 256, k: 3, stride: 1, pad: 1 },
    Case { name: "box_test R1000 3x3", n: 1000, cin: 256, h: 7, w: 7, cout: 256, k: 3, stride: 1, pad: 1 },
    Case { name: "p6_s2 3x3 stride2", n: 1, cin: 256, h: 25, w: 38, cout: 256, k: 3, stride: 2, pad: 1 },
];

/// CPU seconds (user + system, all threads) this process has used, from `/proc/self/stat`
/// (0 where that file does not exist).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let ticks: f64 = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// Wall and CPU milliseconds per call of `f`: the best of three means over `iters` calls
/// each, after one warm-up call. CPU time (all threads) is less disturbed by other processes
/// on a shared machine; with two busy threads it is about twice the wall time.
fn time_ms(iters: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?;
    let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        let (start, cpu) = (Instant::now(), cpu_seconds());
        for _ in 0..iters {
            f()?;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1000.0 / iters as f64);
        best_cpu = best_cpu.min((cpu_seconds() - cpu) * 1000.0 / iters as f64);
    }
    Ok((best, best_cpu))
}

/// candle's convolution plus the bias added by broadcasting.
fn candle_conv(x: &Tensor, w: &Tensor, b: &Tensor, c: &Case) -> Result<Tensor> {
    x.conv2d(w, c.pad, c.stride, 1, 1)?.broadcast_add(&b.reshape((1, c.cout, 1, 1))?)
}

/// Our convolution with the bias fused.
fn our_conv(x: &Tensor, w: &Tensor, b: &Tensor, c: &Case) -> Result<Tensor> {
    nextdet_ops::conv2d::conv2d(x, w, Some(b), c.stride, c.pad)
}

type ConvFn = fn(&Tensor, &Tensor, &Tensor, &Case) -> Result<Tensor>;

/// Forward and forward+backward (wall, CPU) milliseconds of one implementation on one case.
fn time_case(conv: ConvFn, c: &Case, iters: usize) -> Result<((f64, f64), (f64, f64))> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (c.n, c.cin, c.h, c.w), &dev)?)?;
    let w = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (c.cout, c.cin, c.k, c.k), &dev)? * 0.05)?)?;
    let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, c.cout, &dev)?)?;
    let fwd = time_ms(iters, &mut || {
        let y = conv(x.as_tensor(), w.as_tensor(), b.as_tensor(), c)?;
        std::hint::black_box(y);
        Ok(())
    })?;
    let fwd_bwd = time_ms(iters, &mut || {
        let y = conv(x.as_tensor(), w.as_tensor(), b.as_tensor(), c)?;
        let grads = y.sum_all()?.backward()?;
        std::hint::black_box(grads);
        Ok(())
    })?;
    Ok((fwd, fwd_bwd))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let iters: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let filter = args.get(2).cloned().unwrap_or_default();
    let which = args.get(3).cloned().unwrap_or_else(|| "both".into());
    println!("threads: {}, iters: {iters}", rayon::current_num_threads());
    println!("wall ms per call, CPU ms (all threads) in brackets");
    println!("{:<30} {:>18} {:>18} {:>18} {:>18}", "row", "candle fwd", "candle f+b", "ours fwd", "ours f+b");
    for c in CASES.iter().filter(|c| c.name.contains(&filter)) {
        let candle = if which != "ours" { Some(time_case(candle_conv, c, iters)?) } else { None };
        let ours = if which != "candle" { Some(time_case(our_conv, c, iters)?) } else { None };
        let cell = |v: Option<(f64, f64)>| v.map_or("-".to_string(), |(w, c)| format!("{w:.1} [{c:.0}]"));
        println!(
            "{:<30} {:>18} {:>18} {:>18} {:>18}",
            c.name,
            cell(candle.map(|t| t.0)),
            cell(candle.map(|t| t.1)),
            cell(ours.map(|t| t.0)),
            cell(ours.map(|t| t.1)),
        );
    }
    Ok(())
}
