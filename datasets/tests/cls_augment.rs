//! The ImageNet training augmentation against timm / Pillow / torchvision, on fixtures made by
//! `tests/reference/make_cls_augment_fixtures.py` (see it for the layout), plus statistics of the
//! random parts. Run with `--nocapture` to see the measured differences.

use std::path::PathBuf;

use nextdet_datasets::cls_augment::{
    center_fallback, color_jitter_fixed, hflip, random_erasing, random_resized_crop_params, resized_crop,
    ClsTrainTransform, ClsTrainTransformConfig, CropBox, EraseMode,
};
use nextdet_datasets::mixup::{
    cutmix_box, mix_batch, mixup_targets, sample_beta, smooth_one_hot, MixParams, Mixup, MixupConfig, MixupError,
};
use nextdet_datasets::rand_augment::{RandAugment, RandAugmentOp, IMAGENET_MEAN_FILL};
use nextdet_datasets::{Filter, RgbImage};
use rand::rngs::StdRng;
use rand::SeedableRng;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cls_augment")
}

struct Fixture {
    bytes: Vec<u8>,
    cases: Value,
}

fn fixture() -> Fixture {
    let dir = fixture_dir();
    let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors");
    let cases = serde_json::from_slice(&std::fs::read(dir.join("cases.json")).expect("cases.json")).unwrap();
    Fixture { bytes, cases }
}

fn image(st: &SafeTensors<'_>, key: &str) -> RgbImage {
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), Dtype::U8, "{key}");
    let s = t.shape();
    RgbImage::from_raw(s[1], s[0], t.data().to_vec()).unwrap()
}

fn f32s(st: &SafeTensors<'_>, key: &str) -> Vec<f32> {
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), Dtype::F32, "{key}");
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// (max difference, number of differing bytes)
fn diff(a: &RgbImage, b: &RgbImage) -> (u8, usize) {
    assert_eq!((a.width(), a.height()), (b.width(), b.height()));
    a.as_raw().iter().zip(b.as_raw()).fold((0, 0), |(m, n), (x, y)| (m.max(x.abs_diff(*y)), n + usize::from(x != y)))
}

#[test]
fn rand_augment_ops_equal_pil() {
    let f = fixture();
    let st = SafeTensors::deserialize(&f.bytes).unwrap();
    let fill: Vec<u8> = f.cases["fill"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
    assert_eq!(fill, IMAGENET_MEAN_FILL);
    let mut failures = Vec::new();
    let mut n = 0;
    for case in f.cases["ops"].as_array().unwrap() {
        let name = case["op"].as_str().unwrap();
        let op = RandAugmentOp::from_name(name).unwrap_or_else(|| panic!("unknown op {name}"));
        let arg = case["arg"].as_f64().unwrap_or(0.0);
        let input = image(&st, &format!("image.{}", case["image"].as_str().unwrap()));
        let out = op.apply(&input, arg, IMAGENET_MEAN_FILL);
        let expected = image(&st, case["key"].as_str().unwrap());
        let (max, count) = diff(&out, &expected);
        if max != 0 {
            failures.push(format!("{name}({arg}) on {}: max diff {max} in {count} bytes", case["image"]));
        }
        n += 1;
    }
    println!("{n} op cases, {} differ", failures.len());
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn level_to_arg_equals_timm() {
    let f = fixture();
    let mut n = 0;
    for case in f.cases["levels"].as_array().unwrap() {
        let name = case["op"].as_str().unwrap();
        let op = RandAugmentOp::from_name(name).unwrap();
        let m = case["magnitude"].as_f64().unwrap();
        let negate = case["negate"].as_bool().unwrap();
        let got = op.level_to_arg(m, negate, 0.45);
        let want = case["arg"].as_f64().unwrap();
        assert_eq!(got, want, "{name} m={m} negate={negate}");
        n += 1;
    }
    assert!(n > 100, "{n}");
}

#[test]
fn resized_crop_equals_torchvision() {
    let f = fixture();
    let st = SafeTensors::deserialize(&f.bytes).unwrap();
    for case in f.cases["crops"].as_array().unwrap() {
        let u = |k: &str| case[k].as_u64().unwrap() as usize;
        let input = image(&st, &format!("image.{}", case["image"].as_str().unwrap()));
        let b = CropBox { top: u("top"), left: u("left"), height: u("height"), width: u("width") };
        let out = resized_crop(&input, b, u("out_w"), u("out_h"), Filter::Bicubic);
        let expected = image(&st, case["key"].as_str().unwrap());
        let (max, count) = diff(&out, &expected);
        println!("crop {b:?} -> {}x{}: max diff {max} in {count} bytes", u("out_w"), u("out_h"));
        assert_eq!(max, 0, "{b:?}");
    }
}

#[test]
fn crop_fallback_equals_timm() {
    let f = fixture();
    for case in f.cases["rrc_fallback"].as_array().unwrap() {
        let u = |k: &str| case[k].as_u64().unwrap() as usize;
        let pair = |k: &str| {
            let a = case[k].as_array().unwrap();
            [a[0].as_f64().unwrap(), a[1].as_f64().unwrap()]
        };
        let want = CropBox { top: u("top"), left: u("left"), height: u("crop_h"), width: u("crop_w") };
        assert_eq!(center_fallback(u("width"), u("height"), pair("ratio")), want);
        // With an area fraction above 1 every attempt fails, as in the Python case.
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(random_resized_crop_params(u("width"), u("height"), pair("scale"), pair("ratio"), &mut rng), want);
    }
}

#[test]
fn mixup_and_cutmix_equal_timm() {
    let f = fixture();
    let st = SafeTensors::deserialize(&f.bytes).unwrap();
    let x0 = f32s(&st, "mix.x");
    let shape = [4, 3, 9, 11];
    let labels: Vec<usize> =
        f.cases["labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let k = f.cases["classes"].as_u64().unwrap() as usize;
    for case in f.cases["mix"].as_array().unwrap() {
        let key = case["key"].as_str().unwrap();
        let want_lam = case["lam"].as_f64().unwrap();
        let params = if case["mode"] == "mixup" {
            MixParams { lam: case["lam_in"].as_f64().unwrap(), cutmix: None }
        } else {
            let (cy, cx) = (case["cy"].as_u64().unwrap() as usize, case["cx"].as_u64().unwrap() as usize);
            let (b, lam) = cutmix_box(9, 11, case["lam_in"].as_f64().unwrap(), cy, cx, true);
            let want: Vec<usize> =
                case["box"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            assert_eq!([b.yl, b.yh, b.xl, b.xh].to_vec(), want, "{key}");
            MixParams { lam, cutmix: Some(b) }
        };
        assert_eq!(params.lam, want_lam, "{key}");
        let mut x = x0.clone();
        mix_batch(&mut x, shape, &params).unwrap();
        assert_eq!(x, f32s(&st, &format!("{key}.x")), "{key}: mixed batch");
        let t = mixup_targets(&labels, k, params.lam, 0.1).unwrap();
        assert_eq!(t, f32s(&st, &format!("{key}.target")), "{key}: targets");
    }
    for s in [0.0, 0.1, 0.3] {
        assert_eq!(smooth_one_hot(&labels, k, s).unwrap(), f32s(&st, &format!("smooth.{s:?}")), "smoothing {s}");
    }
}

#[test]
fn mixup_rejects_bad_input() {
    let m = Mixup::new(MixupConfig::new(5)).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let mut x = vec![0f32; 3 * 2 * 2 * 2];
    assert_eq!(m.apply(&mut x, [3, 2, 2, 2], &[0, 1, 2], &mut rng), Err(MixupError::OddBatch(3)));
    let mut x = vec![0f32; 2 * 8];
    assert!(matches!(m.apply(&mut x, [2, 2, 2, 2], &[0, 5], &mut rng), Err(MixupError::LabelOutOfRange { .. })));
    assert!(matches!(m.apply(&mut x, [2, 2, 2, 3], &[0, 1], &mut rng), Err(MixupError::Shape(_))));
    let mut c = MixupConfig::new(5);
    c.switch_prob = 1.5;
    assert!(Mixup::new(c).is_err());
    let c: Result<MixupConfig, _> = serde_json::from_str(r#"{"num_classes": 3, "mixup": 1}"#);
    assert!(c.is_err());
}

#[test]
fn mixup_statistics() {
    // Beta(0.8, 0.8) has mean 0.5 and variance 1 / (4 * 2.6) ~ 0.0962; Beta(1, 1) is uniform.
    let mut rng = StdRng::seed_from_u64(7);
    let n = 20000;
    for (a, var) in [(0.8, 0.25 / 2.6), (1.0, 1.0 / 12.0)] {
        let draws: Vec<f64> = (0..n).map(|_| sample_beta(&mut rng, a, a)).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let v = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n as f64;
        println!("Beta({a}, {a}): mean {mean:.4}, var {v:.4} (want 0.5, {var:.4})");
        assert!((mean - 0.5).abs() < 0.01 && (v - var).abs() < 0.005, "a={a}: {mean} {v}");
    }
    let m = Mixup::new(MixupConfig::new(10)).unwrap();
    let (mut cut, mut lam_sum) = (0, 0.0);
    for _ in 0..4000 {
        let p = m.sample_params(32, 24, &mut rng);
        assert!((0.0..=1.0).contains(&p.lam));
        if let Some(b) = p.cutmix {
            cut += 1;
            let area = ((b.yh - b.yl) * (b.xh - b.xl)) as f64;
            assert!((p.lam - (1.0 - area / (32.0 * 24.0))).abs() < 1e-12);
        }
        lam_sum += p.lam;
    }
    println!("cutmix in {cut} of 4000 batches, mean lam {:.3}", lam_sum / 4000.0);
    assert!((1800..=2200).contains(&cut), "{cut}");
    // Targets of a mixed batch are distributions.
    let mut x = vec![1f32; 4 * 3 * 8 * 8];
    let t = m.apply(&mut x, [4, 3, 8, 8], &[0, 3, 9, 3], &mut rng).unwrap();
    for row in t.chunks_exact(10) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn erasing_frequency_and_boxes() {
    let mut rng = StdRng::seed_from_u64(3);
    let (c, h, w) = (3, 40, 30);
    let mut erased = 0;
    for _ in 0..2000 {
        let mut t = vec![9f32; c * h * w];
        let boxes = random_erasing(&mut t, [c, h, w], 0.25, EraseMode::Pixel, 1, &mut rng);
        assert!(boxes.len() <= 1);
        let changed = t.iter().filter(|&&v| v != 9.0).count();
        if let Some(b) = boxes.first() {
            erased += 1;
            let frac = (b.height * b.width) as f64 / (h * w) as f64;
            assert!(b.height < h && b.width < w && b.top + b.height <= h && b.left + b.width <= w);
            assert!((0.015..=0.34).contains(&frac), "area fraction {frac}");
            assert_eq!(changed, c * b.height * b.width);
        } else {
            assert_eq!(changed, 0);
        }
    }
    println!("erased {erased} of 2000 (want ~500)");
    // Binomial(2000, 0.25): sd ~19.4, so +-80 is beyond 4 sd.
    assert!((420..=580).contains(&erased), "{erased}");
    // Pixel noise is standard normal.
    let mut t = vec![0f32; 3 * 200 * 200];
    let boxes = random_erasing(&mut t, [3, 200, 200], 1.0, EraseMode::Pixel, 1, &mut rng);
    let b = boxes[0];
    let vals: Vec<f64> = t.iter().filter(|&&v| v != 0.0).map(|&v| f64::from(v)).collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
    println!("erased box {b:?}: noise mean {mean:.3}, var {var:.3}");
    assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.1);
}

#[test]
fn random_resized_crop_statistics() {
    let mut rng = StdRng::seed_from_u64(11);
    let (w, h) = (160usize, 120usize);
    let (mut log_ratio_sum, mut n) = (0.0, 0);
    for _ in 0..3000 {
        let b = random_resized_crop_params(w, h, [0.08, 1.0], [0.75, 4.0 / 3.0], &mut rng);
        assert!(b.top + b.height <= h && b.left + b.width <= w);
        let frac = (b.width * b.height) as f64 / (w * h) as f64;
        // Rounding the sides to pixels moves the fraction a little outside the sampled range.
        assert!((0.07..=1.0).contains(&frac), "area fraction {frac} of {b:?}");
        let r = b.width as f64 / b.height as f64;
        assert!((0.70..=1.42).contains(&r), "aspect {r} of {b:?}");
        log_ratio_sum += r.ln();
        n += 1;
    }
    println!("mean log aspect {:.4} over all crops (rejections bias it)", log_ratio_sum / n as f64);
    // With small areas every first attempt fits, so the draws are the sampled distributions:
    // area fraction uniform in [0.08, 0.3] (mean 0.19), log aspect uniform on a symmetric range.
    let (mut frac_sum, mut log_sum) = (0.0, 0.0);
    for _ in 0..n {
        let b = random_resized_crop_params(w, h, [0.08, 0.3], [0.75, 4.0 / 3.0], &mut rng);
        frac_sum += (b.width * b.height) as f64 / (w * h) as f64;
        log_sum += (b.width as f64 / b.height as f64).ln();
    }
    let (frac, lr) = (frac_sum / n as f64, log_sum / n as f64);
    println!("small areas: mean area fraction {frac:.4} (0.19), mean log aspect {lr:.4} (0)");
    assert!((frac - 0.19).abs() < 0.005 && lr.abs() < 0.01, "{frac} {lr}");
}

#[test]
fn full_transform_shapes_and_errors() {
    let cfg: ClsTrainTransformConfig = serde_json::from_str(r#"{"input_size": 32}"#).unwrap();
    assert_eq!(cfg.auto_augment.as_deref(), Some("rand-m9-mstd0.5-inc1"));
    assert_eq!((cfg.reprob, cfg.recount, cfg.remode), (0.25, 1, EraseMode::Pixel));
    let t = ClsTrainTransform::new(cfg).unwrap();
    assert_eq!(t.color_jitter(), None, "timm drops colour jitter when RandAugment is on");
    let no_aa = ClsTrainTransformConfig { auto_augment: None, ..Default::default() };
    assert_eq!(ClsTrainTransform::new(no_aa).unwrap().color_jitter(), Some(0.4));
    let data: Vec<u8> = (0..50 * 40 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let img = RgbImage::from_raw(50, 40, data).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..50 {
        let out = t.apply(&img, &mut rng).unwrap();
        assert_eq!(out.len(), 3 * 32 * 32);
        assert!(out.iter().all(|v| v.is_finite()));
    }
    assert!(t.apply(&RgbImage::zeros(0, 4), &mut rng).is_err());
    let bad: Result<ClsTrainTransformConfig, _> = serde_json::from_str(r#"{"input_sz": 32}"#);
    assert!(bad.is_err());
    let c = ClsTrainTransformConfig { auto_augment: Some("rand-x".into()), ..Default::default() };
    assert!(ClsTrainTransform::new(c).is_ok(), "sections without a number are ignored, as in timm");
    let c = ClsTrainTransformConfig { auto_augment: Some("rand-z1".into()), ..Default::default() };
    assert!(ClsTrainTransform::new(c).is_err());
    let c = ClsTrainTransformConfig { hflip: 2.0, ..Default::default() };
    assert!(ClsTrainTransform::new(c).is_err());
}

#[test]
fn hflip_mirrors() {
    let img = RgbImage::from_raw(3, 1, (0..9).collect()).unwrap();
    assert_eq!(hflip(&img).as_raw(), &[6, 7, 8, 3, 4, 5, 0, 1, 2]);
}

#[test]
fn rand_augment_magnitudes_and_identity() {
    let ra = RandAugment::from_spec("rand-m9-mstd0.5-inc1", IMAGENET_MEAN_FILL).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let ms: Vec<f64> = (0..5000).map(|_| ra.sample_magnitude(&mut rng)).collect();
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    assert!(ms.iter().all(|&m| (0.0..=10.0).contains(&m)));
    let at_max = ms.iter().filter(|&&m| m == 10.0).count();
    println!("magnitude mean {mean:.3}, clamped to 10 in {at_max} of 5000 (P(N(9,0.5) > 10) = 2.3%)");
    assert!((mean - 8.99).abs() < 0.03 && (60..=180).contains(&at_max));
    // p = 0: nothing is applied.
    let none = RandAugment::from_spec("rand-m9-p0", IMAGENET_MEAN_FILL).unwrap();
    let img = RgbImage::from_raw(4, 3, (0..36).map(|v| v * 7).collect()).unwrap();
    assert_eq!(none.apply(&img, &mut rng), img);
}

#[test]
fn color_jitter_steps_equal_torchvision() {
    let f = fixture();
    let st = SafeTensors::deserialize(&f.bytes).unwrap();
    let cases = f.cases["jitter"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let order: Vec<usize> =
            case["order"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let fs: Vec<f64> = case["factors"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let input = image(&st, &format!("image.{}", case["image"].as_str().unwrap()));
        let out = color_jitter_fixed(&input, &order, [fs[0], fs[1], fs[2]]);
        let (max, count) = diff(&out, &image(&st, case["key"].as_str().unwrap()));
        assert_eq!(max, 0, "order {order:?} factors {fs:?}: {count} bytes differ");
    }
}

#[test]
fn posterize_zero_bits_is_black() {
    // timm's PosterizeIncreasing at magnitude 10 keeps 0 bits; Pillow < 10 (ConvNeXt's) applied
    // the mask `~(2**8 - 1)`, i.e. black. Pillow 13 raises instead, so there is no fixture.
    let img = RgbImage::from_raw(2, 1, vec![255, 128, 7, 1, 0, 200]).unwrap();
    let out = RandAugmentOp::PosterizeIncreasing.apply(&img, 0.0, IMAGENET_MEAN_FILL);
    assert_eq!(out.as_raw(), &[0; 6]);
    assert_eq!(RandAugmentOp::PosterizeIncreasing.level_to_arg(10.0, false, 0.45), 0.0);
}

/// Timing only: `cargo test -p nextdet-datasets --release --test cls_augment -- --ignored --nocapture`.
#[test]
#[ignore]
fn time_full_transform() {
    let t = ClsTrainTransform::new(ClsTrainTransformConfig::default()).unwrap();
    let data: Vec<u8> = (0..500 * 375 * 3).map(|i| ((i * 7919) % 253) as u8).collect();
    let img = RgbImage::from_raw(500, 375, data).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let n = 200;
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(t.apply(&img, &mut rng).unwrap());
    }
    println!("500x375 -> 224: {:.2} ms per image (one thread)", start.elapsed().as_secs_f64() * 1e3 / n as f64);
}
