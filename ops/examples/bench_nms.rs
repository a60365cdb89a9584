//! Times `nextdet_ops::nms` at 1k, 10k and 100k boxes, for comparison with
//! `tests/reference/bench_nms.py` (torchvision.ops.nms on the same boxes).
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p nextdet-ops --example bench_nms`
//!
//! Boxes: centers uniform in an 800x1216 image, sides uniform in [10, 300], scores uniform in
//! [0, 1), from the same 32-bit LCG as the Python script, so both sides see identical inputs and
//! must keep the same number of boxes. Reports the best of several runs, in milliseconds. Also
//! times `batched_nms` with 80 ids (`i % 80`) and `box_iou` of 1000 x 20000 boxes.

use candle_core::{Device, Result, Tensor};
use nextdet_ops::nms::{batched_nms, BatchedNmsOpts};
use nextdet_ops::{nms, Boxes};
use std::time::Instant;

/// `n` floats in [0, 1): x <- 1664525 x + 1013904223 (mod 2^32), top 24 bits.
fn lcg_uniform(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as f32 / 16_777_216.0
        })
        .collect()
}

/// `n` random boxes and scores, as in the Python script.
fn make_boxes(n: usize) -> Result<(Boxes, Tensor)> {
    let u = lcg_uniform(5 * n, 12345);
    let mut xyxy = Vec::with_capacity(4 * n);
    let mut scores = Vec::with_capacity(n);
    for r in u.chunks_exact(5) {
        let (cx, cy) = (r[0] * 1216.0, r[1] * 800.0);
        let (w, h) = (10.0 + r[2] * 290.0, 10.0 + r[3] * 290.0);
        xyxy.extend_from_slice(&[cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]);
        scores.push(r[4]);
    }
    Ok((Boxes::from_slice(&xyxy, &Device::Cpu)?, Tensor::new(scores, &Device::Cpu)?))
}

/// Best wall time of `runs` calls after one warm-up call, in milliseconds.
fn best_ms<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(best)
}

fn main() -> Result<()> {
    println!("nextdet-ops nms, {} threads", rayon::current_num_threads());
    for (n, runs) in [(1000, 200), (10_000, 30), (100_000, 5)] {
        let (boxes, scores) = make_boxes(n)?;
        for thr in [0.5, 0.7] {
            let kept = nms(&boxes, &scores, thr)?.len();
            let ms = best_ms(runs, || nms(&boxes, &scores, thr))?;
            println!("nms n={n:>6} thr={thr}: {ms:10.3} ms  kept {kept}");
        }
        if n == 100_000 {
            let s = scores.to_vec1::<f32>()?;
            let xyxy = boxes.to_vec()?;
            let sort = best_ms(runs, || Ok(nextdet_ops::nms::argsort_descending(&s)))?;
            println!("  of which: score sort {sort:.3} ms");
            for thr in [0.5, 0.7] {
                let ms = best_ms(1, || Ok(nextdet_ops::nms::nms_slices_sweep(&xyxy, &s, thr)))?;
                println!("  full sweep without the grid, thr={thr}: {ms:.3} ms");
            }
        }
        // Per-class NMS over 80 classes (R-CNN post-processing shape).
        let ids = Tensor::new((0..n as u32).map(|i| i % 80).collect::<Vec<_>>(), &Device::Cpu)?;
        let opts = BatchedNmsOpts::new(0.5);
        let kept = batched_nms(&boxes, &scores, &ids, &opts)?.len();
        let ms = best_ms(runs, || batched_nms(&boxes, &scores, &ids, &opts))?;
        println!("batched_nms n={n:>6} thr=0.5 (80 ids): {ms:10.3} ms  kept {kept}");
    }
    let (a, b) = (make_boxes(1000)?.0, make_boxes(20_000)?.0);
    let ms = best_ms(10, || nextdet_ops::box_iou(&a, &b))?;
    println!("box_iou 1000 x 20000: {ms:10.3} ms");
    Ok(())
}
