//! Times mask paste-back: 100 masks of 28x28 into an 800x1216 image, boxes of 20..400 px,
//! for comparison with `tests/reference/bench_mask_paste.py` (mmdet 2.11's CPU path: per-box
//! `F.grid_sample` into a dense `[N, H, W]` bool tensor). Both build the same inputs from the
//! same formulas. A second section times the FPN resampling ops of `resample.rs` (forward,
//! and forward + backward with upstream gradient `g`) at Mask R-CNN's P5 -> P4 shape for a batch of 2.
//!
//! `cargo run --release -p nextdet-ops --example bench_mask_paste -- [THREADS] [RUNS]`

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor, Var};
use nextdet_ops::{
    binary_masks_to_tensor, paste_masks, paste_masks_soft, resize_bilinear, resize_nearest, subsample_stride2,
};
use std::time::Instant;

const H: usize = 800;
const W: usize = 1216;
const N: usize = 100;
const M: usize = 28;

/// Masks `[N, M, M]` and boxes `[N, 4]`, as `bench_inputs()` in the Python script computes them.
fn inputs() -> Result<(Tensor, Tensor)> {
    let mut boxes = Vec::with_capacity(4 * N);
    for i in 0..N {
        let bw = 20 + (i * 37) % 381;
        let bh = 20 + (i * 53) % 381;
        let x0 = ((i * 131) % (W - bw)) as f32 + 0.25 * (i % 4) as f32;
        let y0 = ((i * 97) % (H - bh)) as f32 + 0.125 * (i % 8) as f32;
        boxes.extend([x0, y0, x0 + bw as f32 + 0.5, y0 + bh as f32 + 0.75]);
    }
    let mut masks = Vec::with_capacity(N * M * M);
    for i in 0..N {
        for r in 0..M {
            for c in 0..M {
                masks.push(0.5 + 0.5 * (0.3 * r as f32 + 0.2 * c as f32 + i as f32).sin());
            }
        }
    }
    Ok((Tensor::from_vec(masks, (N, M, M), &Device::Cpu)?, Tensor::from_vec(boxes, (N, 4), &Device::Cpu)?))
}

/// `y -> sum(y * g)`, whose backward hands `g` (times the scalar upstream gradient) straight
/// to the op being timed: candle's own `mul` / `sum_all` backward go through slow broadcast
/// paths and would dominate the measurement.
#[derive(Clone)]
struct Dot {
    g: Tensor,
    values: std::sync::Arc<Vec<f32>>,
}

impl Dot {
    fn new(g: &Tensor) -> Result<Self> {
        Ok(Dot { g: g.clone(), values: std::sync::Arc::new(g.flatten_all()?.to_vec1()?) })
    }
}

impl CustomOp1 for Dot {
    fn name(&self) -> &'static str {
        "dot"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(y), Some((a, b))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("dot: contiguous f32 only");
        };
        let dot = y[a..b].iter().zip(self.values.iter()).map(|(y, g)| y * g).sum::<f32>();
        Ok((CpuStorage::F32(vec![dot]), Shape::from(())))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.g.affine(grad.to_scalar::<f32>()? as f64, 0.0)?))
    }
}

/// Best wall time in milliseconds of `runs` calls of `f`, after one warm-up call.
fn best_ms<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(f()?);
        best = best.min(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(best)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("THREADS and RUNS are integers"));
    let threads = args.next().unwrap_or(2);
    let runs = args.next().unwrap_or(7);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("rayon pool");
    let (masks, boxes) = inputs()?;
    let pasted = paste_masks(&masks, &boxes, (H, W), 0.5)?;
    let area: usize = pasted.iter().map(|m| m.area()).sum();
    let window: usize = pasted.iter().map(|m| m.data.len()).sum();
    println!(
        "{threads} threads, best of {runs}; {N} masks {M}x{M} into {H}x{W}, foreground {area} px, windows {window} px"
    );
    let rows = [
        ("paste (windows, column-major u8)", best_ms(runs, || paste_masks(&masks, &boxes, (H, W), 0.5))?),
        ("paste soft (windows, f32)", best_ms(runs, || paste_masks_soft(&masks, &boxes, (H, W)))?),
        (
            "paste + dense [N,H,W] u8 tensor",
            best_ms(runs, || binary_masks_to_tensor(&paste_masks(&masks, &boxes, (H, W), 0.5)?))?,
        ),
        (
            "paste + RLE counts",
            best_ms(runs, || {
                let m = paste_masks(&masks, &boxes, (H, W), 0.5)?;
                Ok(m.iter().map(|m| m.to_rle().counts).collect::<Vec<_>>())
            })?,
        ),
    ];
    for (name, ms) in rows {
        println!("{name:<38} {ms:9.2} ms");
    }

    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 256, 50, 76), &Device::Cpu)?)?;
    let up = (100, 152);
    let g_up = Tensor::randn(0f32, 1.0, (2, 256, 100, 152), &Device::Cpu)?;
    let g_sub = Tensor::randn(0f32, 1.0, (2, 256, 25, 38), &Device::Cpu)?;
    println!("resample, x [2, 256, 50, 76]");
    type Op = fn(&Tensor, (usize, usize)) -> Result<Tensor>;
    let (dot_up, dot_sub) = (Dot::new(&g_up)?, Dot::new(&g_sub)?);
    let ops: [(&str, Op, &Dot); 3] = [
        ("nearest -> 100x152", resize_nearest, &dot_up),
        ("bilinear -> 100x152", resize_bilinear, &dot_up),
        ("stride-2 subsample", |x, _| subsample_stride2(x), &dot_sub),
    ];
    println!("  (backward = forward+backward - forward - the loss's own forward+backward, measured alone)");
    for (name, op, g) in ops {
        let fwd = best_ms(runs, || op(x.as_tensor(), up))?;
        let both = best_ms(runs, || op(x.as_tensor(), up)?.apply_op1(g.clone())?.backward())?;
        let y = Var::from_tensor(&g.g)?;
        let loss = best_ms(runs, || y.as_tensor().apply_op1(g.clone())?.backward())?;
        println!(
            "  {name:<22} forward {fwd:7.2} ms   backward {:7.2} ms   (forward+backward {both:.2} ms, loss {loss:.2} ms)",
            both - fwd - loss
        );
    }
    Ok(())
}
