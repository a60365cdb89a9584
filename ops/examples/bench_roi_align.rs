//! Times RoIAlign on the box-head case of a ConvNeXt Mask R-CNN, for comparison with
//! `tests/reference/bench_roi_align.py` (torchvision.ops.roi_align, same RoIs):
//! 1000 RoIs of one 800x1216 image, 256 channels, 7x7 bins, aligned, adaptive sampling, on the
//! four FPN levels (strides 4, 8, 16, 32); the RoIs go to levels by mmdet's rule.
//!
//! `cargo run --release -p nextdet-ops --example bench_roi_align -- [ITERS] [ROIS] [ROW]`
//! (`ROW`: run only the rows whose name contains it, e.g. `backward`)
//!
//! Rows: the four levels' forward on `[N, C, H, W]` maps (which includes the transpose to
//! channels-last) and on channels-last maps; the backward (the gradient of all four levels for
//! an all-ones output gradient, which costs the same as any other); the extractor end to end
//! (level mapping, pooling, gathering back in RoI order).

use candle_core::{backprop::GradStore, Device, Result, Tensor, Var};
use nextdet_ops::{map_roi_levels, RoiAlign, SingleRoiExtractor};
use std::time::Instant;

/// One timed row of the benchmark.
type Row<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

const STRIDES: [f32; 4] = [4.0, 8.0, 16.0, 32.0];
const CHANNELS: usize = 256;
const IMAGE: (usize, usize) = (800, 1216);

/// Milliseconds per call of `f`: the best of five means over `iters` calls each, after one
/// warm-up call.
fn time_ms(iters: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1000.0 / iters as f64);
    }
    Ok(best)
}

/// The benchmark's RoIs, the same numbers as the Python script draws: a 64-bit LCG, sides
/// log-uniform in 16..600 px, aspect ratio 0.5..2, centres uniform, clipped to the image.
fn make_rois(k: usize) -> Vec<[f32; 5]> {
    let mut state: u64 = 12345;
    let mut uniform = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) as f64 / (1u64 << 24) as f64
    };
    let (h, w) = (IMAGE.0 as f64, IMAGE.1 as f64);
    (0..k)
        .map(|_| {
            let side = 16.0 * (600.0f64 / 16.0).powf(uniform());
            let aspect = 2f64.powf(2.0 * uniform() - 1.0);
            let (bw, bh) = (side * aspect.sqrt(), side / aspect.sqrt());
            let (cx, cy) = (uniform() * w, uniform() * h);
            let x1 = (cx - bw / 2.0).clamp(0.0, w);
            let y1 = (cy - bh / 2.0).clamp(0.0, h);
            let x2 = (cx + bw / 2.0).clamp(0.0, w);
            let y2 = (cy + bh / 2.0).clamp(0.0, h);
            [0.0, x1 as f32, y1 as f32, x2 as f32, y2 as f32]
        })
        .collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number =
        |i: usize, default: usize| args.get(i).map_or(default, |a| a.parse().expect("ITERS and ROIS are integers"));
    let (iters, k, only) = (number(0, 5), number(1, 1000), args.get(2).cloned());
    let dev = Device::Cpu;
    let rows = make_rois(k);
    let levels = map_roi_levels(&rows, STRIDES.len(), 56.0);
    let mut per_level = vec![Vec::new(); STRIDES.len()];
    for (row, &l) in rows.iter().zip(&levels) {
        per_level[l].extend_from_slice(row);
    }
    let level_rois: Vec<Tensor> =
        per_level.iter().map(|r| Tensor::from_vec(r.clone(), (r.len() / 5, 5), &dev)).collect::<Result<_>>()?;
    let counts: Vec<usize> = per_level.iter().map(|r| r.len() / 5).collect();
    let feats: Vec<Var> = STRIDES
        .iter()
        .map(|s| {
            let (h, w) = ((IMAGE.0 as f32 / s) as usize, (IMAGE.1 as f32 / s) as usize);
            Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, CHANNELS, h, w), &dev)?)
        })
        .collect::<Result<_>>()?;
    let feats_nhwc: Vec<Var> = feats
        .iter()
        .map(|f| Var::from_tensor(&f.as_tensor().permute((0, 2, 3, 1))?.contiguous()?))
        .collect::<Result<_>>()?;
    let layers: Vec<RoiAlign> = STRIDES.iter().map(|s| RoiAlign::new((7, 7), 1.0 / s)).collect();
    let all_rois = Tensor::from_vec(rows.iter().flatten().copied().collect::<Vec<f32>>(), (k, 5), &dev)?;
    let extractor = SingleRoiExtractor::new((7, 7), &STRIDES);

    let forward = |nhwc: bool| -> Result<Vec<Tensor>> {
        (0..STRIDES.len())
            .map(|i| {
                if nhwc {
                    layers[i].forward_nhwc(feats_nhwc[i].as_tensor(), &level_rois[i])
                } else {
                    layers[i].forward(feats[i].as_tensor(), &level_rois[i])
                }
            })
            .collect()
    };
    let outs = forward(false)?;
    let outs_nhwc = forward(true)?;
    let backward = |ys: &[Tensor]| -> Result<Vec<GradStore>> { ys.iter().map(|y| y.backward()).collect() };
    let ex_nchw: Vec<Tensor> = feats.iter().map(|v| v.as_tensor().clone()).collect();
    let ex_nhwc: Vec<Tensor> = feats_nhwc.iter().map(|v| v.as_tensor().clone()).collect();
    let ex_out = extractor.forward(&ex_nchw, &all_rois)?;

    println!(
        "roi_align: {k} RoIs per level {counts:?}, C={CHANNELS}, 7x7, image {}x{}, {} threads, best of 5 x {iters}",
        IMAGE.0,
        IMAGE.1,
        rayon::current_num_threads()
    );
    let mut rows_out: Vec<(&str, Row)> = vec![
        ("forward (NCHW maps)", Box::new(|| forward(false).map(drop))),
        ("forward (NHWC maps)", Box::new(|| forward(true).map(drop))),
        ("backward (NCHW maps)", Box::new(|| backward(&outs).map(drop))),
        ("backward (NHWC maps)", Box::new(|| backward(&outs_nhwc).map(drop))),
        ("extractor forward (NCHW)", Box::new(|| extractor.forward(&ex_nchw, &all_rois).map(drop))),
        ("extractor forward (NHWC)", Box::new(|| extractor.forward_nhwc(&ex_nhwc, &all_rois).map(drop))),
        ("extractor backward (NCHW)", Box::new(|| ex_out.backward().map(drop))),
    ];
    for (name, f) in rows_out.iter_mut() {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        println!("nextdet {name:<26} {:9.2} ms", time_ms(iters, f)?);
    }
    Ok(())
}
