//! Throughput of the detection input pipeline: JPEG decode + the paper's training transforms
//! (flip, AutoAugment of multi-scale resize / resize-crop-resize at (1333, 800) scales) + collate
//! into normalized, padded `f32` batches of 2, on 2 worker threads.
//!
//! `cargo run --release -p nextdet-datasets --example bench_loader`
//!
//! It writes 32 random 640x480 JPEGs (smooth colour fields plus noise, quality 90, each with 7
//! rectangle instances and their full-image masks) to a temporary directory and times 3 epochs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use image::codecs::jpeg::JpegEncoder;
use nextdet_datasets::collate::{collate, DetBatch};
use nextdet_datasets::loader::{Loader, LoaderConfig};
use nextdet_datasets::transforms::{DetPipeline, DetTransformConfig, Normalization};
use nextdet_datasets::{load_rgb8, Bitmap, DetSample, ImageMeta};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PIPELINE: &str = r#"[
    {"type": "RandomFlip", "flip_ratio": 0.5},
    {"type": "AutoAugment", "policies": [
        [{"type": "Resize", "img_scale": [[480, 1333], [512, 1333], [544, 1333], [576, 1333], [608, 1333],
          [640, 1333], [672, 1333], [704, 1333], [736, 1333], [768, 1333], [800, 1333]],
          "multiscale_mode": "value"}],
        [{"type": "Resize", "img_scale": [[400, 1333], [500, 1333], [600, 1333]], "multiscale_mode": "value"},
         {"type": "RandomCrop", "crop_type": "absolute_range", "crop_size": [384, 600], "allow_negative_crop": true},
         {"type": "Resize", "img_scale": [[480, 1333], [512, 1333], [544, 1333], [576, 1333], [608, 1333],
          [640, 1333], [672, 1333], [704, 1333], [736, 1333], [768, 1333], [800, 1333]],
          "multiscale_mode": "value", "override": true}]
    ]},
    {"type": "Normalize", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "to_rgb": true},
    {"type": "Pad", "size_divisor": 32}
]"#;

const IMAGES: usize = 32;
const INSTANCES: usize = 7;
const EPOCHS: u64 = 3;

fn write_jpegs(dir: &std::path::Path) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    let mut rng = StdRng::seed_from_u64(0);
    let (w, h) = (640u32, 480u32);
    let mut paths = Vec::new();
    for i in 0..IMAGES {
        let (a, b, c) = (rng.gen_range(0.0..6.0f32), rng.gen_range(0.0..6.0f32), rng.gen_range(0.0..255.0f32));
        let mut buf = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let noise = rng.gen_range(-20.0..20.0f32);
                buf.push((127.0 + 100.0 * (a * fx).sin() + noise).clamp(0.0, 255.0) as u8);
                buf.push((127.0 + 100.0 * (b * fy).cos() + noise).clamp(0.0, 255.0) as u8);
                buf.push(((c + 200.0 * fx * fy) % 255.0) as u8);
            }
        }
        let path = dir.join(format!("img_{i:03}.jpg"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        JpegEncoder::new_with_quality(&mut out, 90).encode(&buf, w, h, image::ExtendedColorType::Rgb8)?;
        paths.push(path);
    }
    Ok(paths)
}

/// Decodes image `i` and attaches `INSTANCES` rectangle instances derived from the index.
fn load_sample(path: &std::path::Path, i: usize) -> Result<DetSample, String> {
    let image = load_rgb8(path).map_err(|e| e.to_string())?;
    let (w, h) = (image.width(), image.height());
    let mut rng = StdRng::seed_from_u64(i as u64);
    let mut boxes = Vec::new();
    let mut masks = Vec::new();
    for _ in 0..INSTANCES {
        let (x1, y1) = (rng.gen_range(0..w - 40), rng.gen_range(0..h - 40));
        let (x2, y2) = (rng.gen_range(x1 + 8..w), rng.gen_range(y1 + 8..h));
        let mut m = Bitmap::zeros(w, h);
        for y in y1..y2 {
            m.data[y * w + x1..y * w + x2].fill(1);
        }
        boxes.push([x1 as f32, y1 as f32, x2 as f32, y2 as f32]);
        masks.push(m);
    }
    Ok(DetSample {
        image,
        labels: (0..INSTANCES).collect(),
        boxes,
        masks,
        ignore_boxes: Vec::new(),
        meta: ImageMeta::new(i as u64, path.to_path_buf(), (h, w)),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let paths = Arc::new(write_jpegs(dir.path())?);
    let configs: Vec<DetTransformConfig> = serde_json::from_str(PIPELINE)?;
    let pipeline = Arc::new(DetPipeline::new(&configs)?);
    let norm = pipeline.normalization().unwrap_or(Normalization::IMAGENET);
    let divisor = pipeline.size_divisor().unwrap_or(32);

    let (p, pl) = (Arc::clone(&paths), Arc::clone(&pipeline));
    let load = Arc::new(move |i: usize, rng: &mut StdRng| {
        let s = load_sample(&p[i], i)?;
        pl.apply(s, rng).map_err(|e| e.to_string())
    });
    let collate_fn = Arc::new(move |v: Vec<DetSample>| collate(v, &norm, divisor).map_err(|e| e.to_string()));
    let config = LoaderConfig { batch_size: 2, num_workers: 2, prefetch_batches: 2, shuffle: true, seed: 0 };
    let loader: Loader<DetBatch, String> = Loader::new(IMAGES, load, collate_fn, config)?;

    // Where the time goes, on this thread: decode, transforms, collate of pairs.
    let (mut t_decode, mut t_transform, mut t_collate) = (0f64, 0f64, 0f64);
    let mut pair = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let t = Instant::now();
        let s = load_sample(path, i)?;
        t_decode += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let s = pipeline.apply(s, &mut StdRng::seed_from_u64(i as u64))?;
        t_transform += t.elapsed().as_secs_f64();
        pair.push(s);
        if pair.len() == 2 {
            let t = Instant::now();
            collate(std::mem::take(&mut pair), &norm, divisor)?;
            t_collate += t.elapsed().as_secs_f64();
        }
    }
    let ms = |t: f64| 1e3 * t / IMAGES as f64;
    println!(
        "one thread, per image: decode + masks {:.1} ms, transforms {:.1} ms, collate {:.1} ms",
        ms(t_decode),
        ms(t_transform),
        ms(t_collate)
    );

    let start = Instant::now();
    let mut images = 0;
    let mut checksum = 0f64;
    for epoch in 0..EPOCHS {
        for batch in loader.epoch(epoch) {
            let batch = batch?;
            images += batch.shape[0];
            checksum += f64::from(batch.images[batch.images.len() / 3]);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{images} images ({EPOCHS} epochs x {IMAGES} 640x480 JPEGs, {INSTANCES} masks each) in {secs:.2} s: \
         {:.1} images/s (2 workers, batch 2; checksum {checksum:.3})",
        images as f64 / secs
    );
    Ok(())
}
