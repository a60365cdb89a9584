//! Parity with torchvision / PIL on the fixtures made by
//! `tests/reference/make_dataset_fixtures.py` (see that script for the key layout).
//!
//! Run with `--nocapture` to see the measured differences.

use std::path::PathBuf;

use nextdet_datasets::{load_rgb8, resize_rgb8, resize_rgb8_with_order, EvalTransform, Filter, PassOrder, RgbImage};
use safetensors::{Dtype, SafeTensors};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/datasets")
}

fn reference_bytes() -> Vec<u8> {
    let path = fixture_dir().join("reference.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn filter_of(name: &str) -> Filter {
    match name {
        "nearest" => Filter::Nearest,
        "bilinear" => Filter::Bilinear,
        "bicubic" => Filter::Bicubic,
        other => panic!("unknown filter {other}"),
    }
}

fn decoded(st: &SafeTensors<'_>, image_key: &str) -> RgbImage {
    let t = st.tensor(&format!("decoded.{image_key}")).unwrap();
    assert_eq!(t.dtype(), Dtype::U8);
    let s = t.shape();
    RgbImage::from_raw(s[1], s[0], t.data().to_vec()).unwrap()
}

fn f32s(st: &SafeTensors<'_>, key: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (t.shape().to_vec(), v)
}

fn f64s(st: &SafeTensors<'_>, key: &str) -> Vec<f64> {
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), Dtype::F64);
    t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
}

fn sorted_names(st: &SafeTensors<'_>) -> Vec<String> {
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    names
}

#[test]
fn resize_matches_pil_within_one_level() {
    let bytes = reference_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (mut cases, mut total, mut differing, mut worst) = (0, 0usize, 0usize, 0u8);
    for name in sorted_names(&st) {
        let Some(rest) = name.strip_prefix("resize.") else {
            continue;
        };
        let parts: Vec<&str> = rest.split('.').collect();
        let [image_key, filter, size] = parts[..] else {
            panic!("bad key {name}");
        };
        let (w, h) = size.split_once('x').unwrap();
        let (w, h): (usize, usize) = (w.parse().unwrap(), h.parse().unwrap());
        let input = decoded(&st, image_key);
        let out = resize_rgb8(&input, w, h, filter_of(filter));
        let expected = st.tensor(&name).unwrap();
        assert_eq!(expected.shape(), &[h, w, 3], "{name}");
        assert_eq!((out.width(), out.height()), (w, h), "{name}");
        let mut max = 0u8;
        let mut n_diff = 0;
        for (a, b) in out.as_raw().iter().zip(expected.data()) {
            let d = a.abs_diff(*b);
            max = max.max(d);
            n_diff += usize::from(d != 0);
        }
        println!(
            "{name}: {}x{} -> {w}x{h}: max |diff| {max}, {n_diff}/{} values differ",
            input.width(),
            input.height(),
            out.as_raw().len()
        );
        assert!(max <= 1, "{name}: max |diff| {max} > 1");
        cases += 1;
        total += out.as_raw().len();
        differing += n_diff;
        worst = worst.max(max);
    }
    assert!(cases >= 30, "only {cases} resize cases in the fixture");
    println!(
        "resize parity: {cases} cases, {total} values, max |diff| {worst}, {differing} differ \
         ({:.6}%)",
        100.0 * differing as f64 / total as f64
    );
}

/// Parses `<image>.<size>.<crop_pct>.<interp>` (crop_pct contains a '.').
fn parse_eval_case(case: &str) -> (String, EvalTransform) {
    let parts: Vec<&str> = case.split('.').collect();
    assert_eq!(parts.len(), 5, "bad eval case {case}");
    let mut t = EvalTransform::new(parts[1].parse().unwrap());
    t.crop_pct = format!("{}.{}", parts[2], parts[3]).parse().unwrap();
    t.interpolation = filter_of(parts[4]);
    (parts[0].to_string(), t)
}

/// Compares CHW outputs; `stride` subsamples ours as the fixture was. Returns the max |diff|.
fn compare_chw(name: &str, t: &EvalTransform, ours: &[f32], expected: &[f32], stride: usize) -> f32 {
    let s = t.input_size;
    let n = s.div_ceil(stride);
    assert_eq!(expected.len(), 3 * n * n, "{name}");
    let mut max = 0f32;
    for c in 0..3 {
        let tol = 1.0 / 255.0 / t.std[c] + 1e-5;
        for y in 0..n {
            for x in 0..n {
                let a = ours[(c * s + y * stride) * s + x * stride];
                let b = expected[(c * n + y) * n + x];
                let d = (a - b).abs();
                assert!(d <= tol, "{name}: c{c} y{y} x{x}: ours {a} vs torchvision {b}");
                max = max.max(d);
            }
        }
    }
    max
}

#[test]
fn eval_transform_matches_torchvision() {
    let bytes = reference_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut checked = 0;
    for name in sorted_names(&st) {
        let (case, stride) = if let Some(case) = name.strip_prefix("eval.") {
            (case.to_string(), 1)
        } else if let Some(rest) = name.strip_prefix("eval_strided.") {
            let (case, s) = rest.rsplit_once(".s").unwrap();
            (case.to_string(), s.parse().unwrap())
        } else {
            continue;
        };
        let (image_key, t) = parse_eval_case(&case);
        let input = decoded(&st, &image_key);
        let ours = t.apply(&input).unwrap();
        assert_eq!(ours.len(), 3 * t.input_size * t.input_size);
        let (shape, expected) = f32s(&st, &name);
        assert_eq!(shape[0], 3, "{name}");
        let max = compare_chw(&name, &t, &ours, &expected, stride);
        let mut line = format!(
            "{name}: {}x{} -> resize {:?}{} : max |diff| {max:.3e}",
            input.width(),
            input.height(),
            t.resized_size(input.width(), input.height()),
            if t.warps() { " (warp)" } else { " + center crop" },
        );
        if stride > 1 {
            // The whole output through its sum and sum of squares.
            let sums = f64s(&st, &format!("eval_sums.{case}"));
            let s: f64 = ours.iter().map(|&v| f64::from(v)).sum();
            let s2: f64 = ours.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            line += &format!(", full-output sum {s:.6} vs {:.6}, sum sq {s2:.6} vs {:.6}", sums[0], sums[1]);
            // One level on one value moves the sum by at most 1/255/0.224 = 0.0175.
            assert!((s - sums[0]).abs() < 0.02, "{name}: sum {s} vs {}", sums[0]);
            assert!((s2 - sums[1]).abs() < 0.2 + 1e-6 * sums[1].abs(), "{name}: sum of squares {s2} vs {}", sums[1]);
        }
        println!("{line}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} eval cases in the fixture");
}

#[test]
fn png_decodes_exactly_like_pil() {
    let bytes = reference_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ours = load_rgb8(fixture_dir().join("small_37x23.png")).unwrap();
    assert_eq!(ours, decoded(&st, "small_37x23_png"));
}

/// JPEG files decode to exactly PIL's pixels (libjpeg-turbo's islow IDCT, fancy upsampling and
/// color tables); `tests/jpeg.rs` covers every sampling and coding kind.
#[test]
fn jpeg_decodes_as_pil() {
    let bytes = reference_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for (file, key) in [("small_29x41.jpg", "small_29x41_jpg"), ("medium_300x200.jpg", "medium_300x200_jpg")] {
        let ours = load_rgb8(fixture_dir().join(file)).unwrap();
        assert_eq!(ours, decoded(&st, key), "{file}");
    }
}

/// Pillow 13 changed the pass order for resizes that shrink the height much more than the width;
/// elsewhere the legacy order must give the same result.
#[test]
fn legacy_pass_order() {
    let bytes = reference_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (mut same, mut changed) = (0, 0);
    for name in sorted_names(&st) {
        let Some(rest) = name.strip_prefix("resize.") else {
            continue;
        };
        let parts: Vec<&str> = rest.split('.').collect();
        if parts[1] == "nearest" {
            continue;
        }
        let (w, h) = parts[2].split_once('x').unwrap();
        let (w, h): (usize, usize) = (w.parse().unwrap(), h.parse().unwrap());
        let input = decoded(&st, parts[0]);
        let filter = filter_of(parts[1]);
        let legacy = resize_rgb8_with_order(&input, w, h, filter, PassOrder::HorizontalFirst);
        let current = resize_rgb8(&input, w, h, filter);
        let dh = input.height() as i64 - h as i64;
        let dw = input.width() as i64 - w as i64;
        if dh > 0 && dh > 2 * dw {
            let max = legacy.as_raw().iter().zip(current.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            println!("{name}: vertical pass first in Pillow 13; legacy order differs by {max}");
            changed += 1;
        } else {
            assert_eq!(legacy, current, "{name}");
            same += 1;
        }
    }
    assert!(changed >= 5 && same >= 15, "{changed} vertical-first cases, {same} others");
}

/// End to end from the file for the lossless PNG: decode, transform, compare.
#[test]
fn eval_transform_from_png_file() {
    let bytes = reference_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let name = "eval.small_37x23_png.32.0.875.bicubic";
    let (_, t) = parse_eval_case(name.strip_prefix("eval.").unwrap());
    let img = load_rgb8(fixture_dir().join("small_37x23.png")).unwrap();
    let ours = t.apply(&img).unwrap();
    let (_, expected) = f32s(&st, name);
    compare_chw(name, &t, &ours, &expected, 1);
}
