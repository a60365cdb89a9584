//! Detection transforms: parity with mmcv / cv2 / mmdet 2.11 on the fixtures made by
//! `tests/reference/make_transform_fixtures.py`, and invariants of the random policies.

use std::path::PathBuf;

use nextdet_datasets::collate::collate;
use nextdet_datasets::transforms::{
    crop_sample, flip_sample, rescale_size, resize_linear, resize_nearest, resize_sample, DetPipeline,
    DetTransformConfig, Normalization, TransformError,
};
use nextdet_datasets::{Bitmap, DetSample, ImageMeta, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::{Dtype, SafeTensors};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/transforms").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn u8_tensor(st: &SafeTensors, key: &str) -> (Vec<usize>, Vec<u8>) {
    let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(t.dtype(), Dtype::U8, "{key}");
    (t.shape().to_vec(), t.data().to_vec())
}

fn f32_tensor(st: &SafeTensors, key: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{key}");
    let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (t.shape().to_vec(), v)
}

fn i64_tensor(st: &SafeTensors, key: &str) -> Vec<i64> {
    let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn rescale_size_matches_mmcv() {
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&fixture("rescale_size.json")).unwrap();
    assert!(rows.len() > 100);
    for r in &rows {
        let g = |k: &str, i: usize| r[k][i].as_u64().unwrap() as usize;
        let (w, h, f) = rescale_size(g("size", 0), g("size", 1), [g("scale", 0), g("scale", 1)]);
        assert_eq!((w, h), (g("out", 0), g("out", 1)), "{r}");
        assert_eq!(f, r["factor"].as_f64().unwrap(), "{r}");
    }
}

/// cv2.INTER_LINEAR on uint8 and cv2.INTER_NEAREST on masks: required to be bit-exact.
#[test]
fn resize_matches_cv2_exactly() {
    let bytes = fixture("resize.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut checked = 0;
    for key in st.names() {
        let Some(rest) = key.strip_prefix("linear.") else { continue };
        let (name, size) = rest.split_once('.').unwrap();
        let (ow, oh) = size.split_once('x').unwrap();
        let (ow, oh): (usize, usize) = (ow.parse().unwrap(), oh.parse().unwrap());
        let (shape, data) = u8_tensor(&st, &format!("in.{name}"));
        let img = RgbImage::from_raw(shape[1], shape[0], data).unwrap();
        let (eshape, expected) = u8_tensor(&st, key);
        assert_eq!(eshape, vec![oh, ow, 3]);
        let got = resize_linear(&img, ow, oh);
        let diff = got.as_raw().iter().zip(&expected).map(|(&a, &b)| a.abs_diff(b)).max().unwrap();
        assert_eq!(diff, 0, "{key}: max diff {diff}");

        let (mshape, mdata) = u8_tensor(&st, &format!("mask_in.{name}"));
        let mask = Bitmap { width: mshape[1], height: mshape[0], data: mdata };
        let (_, mexpected) = u8_tensor(&st, &format!("nearest.{name}.{ow}x{oh}"));
        assert_eq!(resize_nearest(&mask, ow, oh).data, mexpected, "nearest.{name}.{ow}x{oh}");
        checked += 1;
    }
    assert!(checked >= 15, "{checked}");
}

/// COCO-sized resizes (640x480 to the paper's scales), compared on a strided subset.
#[test]
fn coco_sized_resize_matches_cv2_exactly() {
    let bytes = fixture("resize.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (w, h) = (640usize, 480usize);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                data.push((((7 * x + 13 * y + 101 * c) ^ ((x * y) >> 3)) & 255) as u8);
            }
        }
    }
    let big = RgbImage::from_raw(w, h, data).unwrap();
    let mask =
        Bitmap { width: w, height: h, data: big.as_raw().chunks_exact(3).map(|p| u8::from(p[0] > 127)).collect() };
    for (ow, oh, k) in [(1067usize, 800usize, 9usize), (853, 640, 7), (400, 300, 5)] {
        let got = resize_linear(&big, ow, oh);
        let (_, want) = u8_tensor(&st, &format!("big.linear.{ow}x{oh}.s{k}"));
        let strided: Vec<u8> = (0..oh)
            .step_by(k)
            .flat_map(|y| (0..ow).step_by(k).map(move |x| (y, x)))
            .flat_map(|(y, x)| got.pixel(x, y).unwrap())
            .collect();
        assert_eq!(strided, want, "{ow}x{oh}");
        let gm = resize_nearest(&mask, ow, oh);
        let (_, want) = u8_tensor(&st, &format!("big.nearest.{ow}x{oh}.s{k}"));
        let strided: Vec<u8> = (0..oh)
            .step_by(k)
            .flat_map(|y| (0..ow).step_by(k).map(move |x| (y, x)))
            .map(|(y, x)| gm.data[y * ow + x])
            .collect();
        assert_eq!(strided, want, "nearest {ow}x{oh}");
    }
}

fn load_stage(st: &SafeTensors, stage: &str) -> DetSample {
    let (shape, data) = u8_tensor(st, &format!("{stage}.img"));
    let (h, w) = (shape[0], shape[1]);
    let image = RgbImage::from_raw(w, h, data).unwrap();
    let boxes4 = |k: &str| f32_tensor(st, k).1.chunks_exact(4).map(|b| [b[0], b[1], b[2], b[3]]).collect::<Vec<_>>();
    let (mshape, mdata) = u8_tensor(st, &format!("{stage}.masks"));
    let masks = mdata
        .chunks_exact(mshape[1] * mshape[2])
        .map(|d| Bitmap { width: mshape[2], height: mshape[1], data: d.to_vec() })
        .collect();
    let mut meta = ImageMeta::new(1, PathBuf::from(format!("{stage}.jpg")), (h, w));
    let sf = f32_tensor(st, &format!("{stage}.scale_factor")).1;
    meta.scale_factor = [sf[0], sf[1]];
    DetSample {
        image,
        boxes: boxes4(&format!("{stage}.boxes")),
        labels: i64_tensor(st, &format!("{stage}.labels")).into_iter().map(|l| l as usize).collect(),
        masks,
        ignore_boxes: boxes4(&format!("{stage}.ignore")),
        meta,
    }
}

fn assert_same(got: &DetSample, want: &DetSample, what: &str) {
    assert_eq!((got.image.width(), got.image.height()), (want.image.width(), want.image.height()), "{what} size");
    assert_eq!(got.image.as_raw(), want.image.as_raw(), "{what} image");
    assert_eq!(got.labels, want.labels, "{what} labels");
    assert_eq!(got.masks, want.masks, "{what} masks");
    for (field, g, w) in [("boxes", &got.boxes, &want.boxes), ("ignore", &got.ignore_boxes, &want.ignore_boxes)] {
        assert_eq!(g.len(), w.len(), "{what} {field}");
        for (a, b) in g.iter().zip(w.iter()) {
            for k in 0..4 {
                assert!((a[k] - b[k]).abs() <= 1e-4, "{what} {field}: {a:?} vs {b:?}");
            }
        }
    }
    assert_eq!(got.meta.scale_factor, want.meta.scale_factor, "{what} scale_factor");
    assert_eq!(got.meta.img_size, (want.image.height(), want.image.width()), "{what} img_size");
}

/// Resize (keep ratio and warp), flip, crop and normalize+pad against the script's mmdet chain.
#[test]
fn fixed_chain_matches_mmdet() {
    let bytes = fixture("pipeline.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let src = load_stage(&st, "src");
    let resized = resize_sample(src.clone(), [100, 60], true);
    assert_same(&resized, &load_stage(&st, "resized"), "resized");
    let warped = resize_sample(src, [70, 50], false);
    assert_same(&warped, &load_stage(&st, "warped"), "warped");
    let flipped = flip_sample(resized);
    assert!(flipped.meta.flipped);
    assert_same(&flipped, &load_stage(&st, "flipped"), "flipped");
    let (cropped, any) = crop_sample(flipped, 9, 5, 50, 40).unwrap();
    assert!(any);
    assert_same(&cropped, &load_stage(&st, "cropped"), "cropped");

    let batch = collate(vec![cropped], &Normalization::IMAGENET, 32).unwrap();
    let (shape, want) = f32_tensor(&st, "batch");
    assert_eq!(batch.shape.to_vec(), shape);
    let diff = batch.images.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-5, "batch max diff {diff}");
    assert_eq!(batch.samples[0].masks[0].width, 64);
    assert_eq!(batch.samples[0].meta.pad_size, (64, 64));
}

fn paper_train_pipeline() -> Vec<DetTransformConfig> {
    let json = r#"[
        {"type": "RandomFlip", "flip_ratio": 0.5},
        {"type": "AutoAugment", "policies": [
            [{"type": "Resize", "img_scale": [[480, 1333], [512, 1333], [544, 1333], [576, 1333], [608, 1333],
              [640, 1333], [672, 1333], [704, 1333], [736, 1333], [768, 1333], [800, 1333]],
              "multiscale_mode": "value", "keep_ratio": true}],
            [{"type": "Resize", "img_scale": [[400, 1333], [500, 1333], [600, 1333]], "multiscale_mode": "value",
              "keep_ratio": true},
             {"type": "RandomCrop", "crop_type": "absolute_range", "crop_size": [384, 600],
              "allow_negative_crop": true},
             {"type": "Resize", "img_scale": [[480, 1333], [512, 1333], [544, 1333], [576, 1333], [608, 1333],
              [640, 1333], [672, 1333], [704, 1333], [736, 1333], [768, 1333], [800, 1333]],
              "multiscale_mode": "value", "override": true, "keep_ratio": true}]
        ]},
        {"type": "Normalize", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "to_rgb": true},
        {"type": "Pad", "size_divisor": 32}
    ]"#;
    serde_json::from_str(json).unwrap()
}

#[test]
fn config_parses_and_validates() {
    let p = DetPipeline::new(&paper_train_pipeline()).unwrap();
    assert_eq!(p.normalization(), Some(Normalization::IMAGENET));
    assert_eq!(p.size_divisor(), Some(32));

    let unknown = r#"[{"type": "RandomFlip", "flip_ratio": 0.5, "direction": "vertical"}]"#;
    let e = serde_json::from_str::<Vec<DetTransformConfig>>(unknown).unwrap_err().to_string();
    assert!(e.contains("direction"), "{e}");
    let unknown_type = r#"[{"type": "Mosaic"}]"#;
    assert!(serde_json::from_str::<Vec<DetTransformConfig>>(unknown_type).is_err());

    let bad: Vec<DetTransformConfig> = serde_json::from_str(
        r#"[{"type": "AutoAugment", "policies": [[{"type": "RandomCrop", "crop_type": "absolute_range",
            "crop_size": [600, 384]}]]}]"#,
    )
    .unwrap();
    let e = DetPipeline::new(&bad).unwrap_err().to_string();
    assert!(e.contains("pipeline[0] (AutoAugment).policies[0][0] (RandomCrop)"), "{e}");
    let single: Vec<DetTransformConfig> =
        serde_json::from_str(r#"[{"type": "Resize", "img_scale": [1333, 800], "keep_ratio": true}]"#).unwrap();
    assert!(matches!(&single[0], DetTransformConfig::Resize { img_scale, .. } if img_scale == &vec![[1333, 800]]));
    let range3: Vec<DetTransformConfig> =
        serde_json::from_str(r#"[{"type": "Resize", "img_scale": [[1, 2], [3, 4], [5, 6]]}]"#).unwrap();
    assert!(DetPipeline::new(&range3).unwrap_err().to_string().contains("range"));
}

/// A random sample whose boxes are the tight boxes (x2 = last column + 1) of rectangle masks.
fn random_sample(rng: &mut StdRng) -> DetSample {
    let w = rng.gen_range(40..200);
    let h = rng.gen_range(40..200);
    let data = (0..w * h * 3).map(|_| rng.gen()).collect();
    let image = RgbImage::from_raw(w, h, data).unwrap();
    let n = rng.gen_range(0..6);
    let mut boxes = Vec::new();
    let mut masks = Vec::new();
    for _ in 0..n {
        let (x1, y1) = (rng.gen_range(0..w - 1), rng.gen_range(0..h - 1));
        let (x2, y2) = (rng.gen_range(x1 + 1..=w), rng.gen_range(y1 + 1..=h));
        let mut m = Bitmap::zeros(w, h);
        for y in y1..y2 {
            m.data[y * w + x1..y * w + x2].fill(1);
        }
        boxes.push([x1 as f32, y1 as f32, x2 as f32, y2 as f32]);
        masks.push(m);
    }
    DetSample {
        image,
        labels: (0..n).collect(),
        boxes,
        masks,
        ignore_boxes: vec![[1.0, 2.0, 5.5, 7.25]],
        meta: ImageMeta::new(0, PathBuf::from("random.jpg"), (h, w)),
    }
}

/// `[x1, y1, x2, y2]` of the set pixels, `None` if the mask is empty.
fn tight_box(m: &Bitmap) -> Option<[f32; 4]> {
    let mut b: Option<[usize; 4]> = None;
    for y in 0..m.height {
        for x in 0..m.width {
            if m.data[y * m.width + x] != 0 {
                let t = b.get_or_insert([x, y, x + 1, y + 1]);
                *t = [t[0].min(x), t[1].min(y), t[2].max(x + 1), t[3].max(y + 1)];
            }
        }
    }
    b.map(|t| t.map(|v| v as f32))
}

/// `tol`: allowed distance between a box and its mask's tight box (1 px per nearest resize).
fn check_invariants(s: &DetSample, what: &str, tol: f32) {
    let (w, h) = (s.image.width(), s.image.height());
    assert_eq!(s.meta.img_size, (h, w), "{what}");
    assert_eq!(s.boxes.len(), s.labels.len(), "{what}");
    assert_eq!(s.boxes.len(), s.masks.len(), "{what}");
    for (b, m) in s.boxes.iter().zip(&s.masks) {
        assert_eq!((m.width, m.height), (w, h), "{what}: mask size");
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w as f32 && b[3] <= h as f32, "{what}: {b:?} in {w}x{h}");
        assert!(b[2] > b[0] && b[3] > b[1], "{what}: empty box kept {b:?}");
        match tight_box(m) {
            Some(t) => {
                for k in 0..4 {
                    assert!((t[k] - b[k]).abs() <= tol, "{what}: box {b:?} vs mask's tight box {t:?}");
                }
            }
            // A sliver under one pixel can keep its box and lose its pixels to the resize.
            None => assert!(b[2] - b[0] < 1.0 || b[3] - b[1] < 1.0, "{what}: box {b:?} with an empty mask"),
        }
    }
}

#[test]
fn random_policies_keep_boxes_and_masks_consistent() {
    let configs = paper_train_pipeline();
    let pipeline = DetPipeline::new(&configs).unwrap();
    let mut sizes = std::collections::BTreeSet::new();
    for seed in 0..60u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let s = random_sample(&mut rng);
        check_invariants(&s, "input", 0.0);
        let out = pipeline.apply(s.clone(), &mut rng).unwrap();
        // resize-crop-resize: the first resize's pixel error is scaled by the second resize.
        let tol = 1.0 + out.meta.scale_factor[0].max(out.meta.scale_factor[1]);
        check_invariants(&out, &format!("seed {seed}"), tol);
        let (h, w) = out.meta.img_size;
        assert!(h.min(w) <= 800 && h.max(w) <= 1333, "seed {seed}: {w}x{h}");
        assert_eq!(out.meta.pad_size, (h.div_ceil(32) * 32, w.div_ceil(32) * 32));
        sizes.insert((h, w));

        // The individual geometric steps.
        let resized = resize_sample(s.clone(), [rng.gen_range(50..300), rng.gen_range(50..300)], true);
        check_invariants(&resized, &format!("seed {seed} resize"), 1.0);
        let warped = resize_sample(s.clone(), [rng.gen_range(20..300), rng.gen_range(20..300)], false);
        check_invariants(&warped, &format!("seed {seed} warp"), 1.0);
        let (cw, ch) = (rng.gen_range(1..=s.image.width()), rng.gen_range(1..=s.image.height()));
        let (x, y) = (rng.gen_range(0..=s.image.width() - cw), rng.gen_range(0..=s.image.height() - ch));
        let (cropped, _) = crop_sample(s.clone(), x, y, cw, ch).unwrap();
        check_invariants(&cropped, &format!("seed {seed} crop"), 0.0);
        let flipped = flip_sample(s.clone());
        check_invariants(&flipped, &format!("seed {seed} flip"), 0.0);
        assert_eq!(flip_sample(flipped), s, "seed {seed}: flip twice");
    }
    assert!(sizes.len() > 10, "the policies should produce varied sizes: {sizes:?}");
}

#[test]
fn rejections_and_misuse_are_errors() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut s = random_sample(&mut rng);
    s.boxes.clear();
    s.labels.clear();
    s.masks.clear();
    let crop: Vec<DetTransformConfig> =
        serde_json::from_str(r#"[{"type": "RandomCrop", "crop_type": "relative", "crop_size": [0.5, 0.5]}]"#).unwrap();
    let e = DetPipeline::new(&crop).unwrap().apply(s.clone(), &mut rng).unwrap_err();
    assert!(matches!(e, TransformError::Rejected { .. }), "{e}");
    assert!(e.to_string().contains("random.jpg"));

    let twice: Vec<DetTransformConfig> = serde_json::from_str(
        r#"[{"type": "Resize", "img_scale": [[60, 40]]}, {"type": "Resize", "img_scale": [[30, 20]]}]"#,
    )
    .unwrap();
    assert!(DetPipeline::new(&twice).unwrap().apply(s.clone(), &mut rng).is_err());

    let mut bad = random_sample(&mut rng);
    bad.labels.push(1);
    let e = DetPipeline::new(&[]).unwrap().apply(bad, &mut rng).unwrap_err();
    assert!(matches!(e, TransformError::BadSample { .. }), "{e}");
}

#[test]
fn collate_pads_to_the_batch_maximum_in_normalized_space() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut a = random_sample(&mut rng);
    let mut b = random_sample(&mut rng);
    a = resize_sample(a, [70, 45], false);
    b = resize_sample(b, [33, 97], false);
    for (s, to_rgb) in [(&a, true), (&b, false)] {
        let norm = Normalization { to_rgb, ..Normalization::IMAGENET };
        let batch = collate(vec![a.clone(), b.clone()], &norm, 32).unwrap();
        assert_eq!(batch.shape, [2, 3, 128, 96]);
        let i = usize::from(!std::ptr::eq(s, &a));
        let plane = 128 * 96;
        let img = &batch.images[i * 3 * plane..(i + 1) * 3 * plane];
        let (w, h) = (s.image.width(), s.image.height());
        for c in 0..3 {
            let src_c = if to_rgb { c } else { 2 - c };
            for (y, x) in [(0, 0), (h - 1, w - 1), (h / 2, w / 3)] {
                let v = f32::from(s.image.pixel(x, y).unwrap()[src_c]);
                let want = (v - norm.mean[c]) / norm.std[c];
                assert!((img[c * plane + y * 96 + x] - want).abs() < 1e-5);
            }
            // Padding is exactly zero after normalization, right of and below the image.
            assert_eq!(img[c * plane + (h - 1) * 96 + w], 0.0);
            assert_eq!(img[c * plane + 127 * 96], 0.0);
        }
        for (m, orig) in batch.samples[i].masks.iter().zip(&s.masks) {
            assert_eq!((m.width, m.height), (96, 128));
            assert_eq!(m.area(), orig.area());
        }
        assert_eq!(batch.samples[i].boxes, s.boxes);
        assert_eq!(batch.metas().len(), 2);
    }
    assert!(collate(Vec::new(), &Normalization::IMAGENET, 32).is_err());
}

#[test]
fn mmdet_shaped_test_pipeline() {
    let json = r#"[
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations", "with_bbox": true, "with_mask": true},
        {"type": "MultiScaleFlipAug", "img_scale": [1333, 800], "flip": false, "transforms": [
            {"type": "Resize", "keep_ratio": true},
            {"type": "RandomFlip", "flip_ratio": 0.5},
            {"type": "Normalize", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "to_rgb": true},
            {"type": "Pad", "size_divisor": 32},
            {"type": "ImageToTensor", "keys": ["img"]},
            {"type": "Collect", "keys": ["img"]}
        ]},
        {"type": "DefaultFormatBundle"},
        {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels", "gt_masks"]}
    ]"#;
    let configs: Vec<DetTransformConfig> = serde_json::from_str(json).unwrap();
    let p = DetPipeline::new(&configs).unwrap();
    assert_eq!(p.with_mask(), Some(true));
    assert_eq!(p.normalization(), Some(Normalization::IMAGENET));
    let mut s = random_sample(&mut StdRng::seed_from_u64(1));
    s.image = RgbImage::zeros(640, 480);
    s.masks = s.masks.iter().map(|_| Bitmap::zeros(640, 480)).collect();
    for seed in 0..8 {
        let out = p.apply(s.clone(), &mut StdRng::seed_from_u64(seed)).unwrap();
        assert_eq!(out.meta.img_size, (800, 1067));
        assert_eq!(out.meta.pad_size, (800, 1088));
        assert!(!out.meta.flipped, "MultiScaleFlipAug with flip: false never flips");
    }

    let bad =
        |json: &str| DetPipeline::new(&serde_json::from_str::<Vec<DetTransformConfig>>(json).unwrap()).unwrap_err();
    let e = bad(r#"[{"type": "MultiScaleFlipAug", "img_scale": [1333, 800], "flip": true, "transforms": []}]"#);
    assert!(e.to_string().contains("pipeline[0] (MultiScaleFlipAug)"), "{e}");
    let e = bad(r#"[{"type": "Resize", "keep_ratio": true}]"#);
    assert!(e.to_string().contains("img_scale"), "{e}");
}

/// The paper's training pipeline as it is written in a YAML config (mmdet's shape).
#[test]
fn paper_pipeline_from_yaml() {
    let yaml = r#"
- {type: LoadImageFromFile}
- {type: LoadAnnotations, with_bbox: true, with_mask: true}
- {type: RandomFlip, flip_ratio: 0.5}
- type: AutoAugment
  policies:
    - - type: Resize
        img_scale: [[480, 1333], [512, 1333], [544, 1333], [576, 1333], [608, 1333], [640, 1333],
                    [672, 1333], [704, 1333], [736, 1333], [768, 1333], [800, 1333]]
        multiscale_mode: value
        keep_ratio: true
    - - {type: Resize, img_scale: [[400, 1333], [500, 1333], [600, 1333]], multiscale_mode: value, keep_ratio: true}
      - {type: RandomCrop, crop_type: absolute_range, crop_size: [384, 600], allow_negative_crop: true}
      - type: Resize
        img_scale: [[480, 1333], [512, 1333], [544, 1333], [576, 1333], [608, 1333], [640, 1333],
                    [672, 1333], [704, 1333], [736, 1333], [768, 1333], [800, 1333]]
        multiscale_mode: value
        override: true
        keep_ratio: true
- {type: Normalize, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], to_rgb: true}
- {type: Pad, size_divisor: 32}
- {type: DefaultFormatBundle}
- {type: Collect, keys: [img, gt_bboxes, gt_labels, gt_masks]}
"#;
    let configs: Vec<DetTransformConfig> = serde_yaml::from_str(yaml).unwrap();
    let from_json = paper_train_pipeline();
    assert_eq!(&configs[2..6], &from_json[..]);
    let p = DetPipeline::new(&configs).unwrap();
    assert_eq!((p.with_mask(), p.size_divisor()), (Some(true), Some(32)));

    let typo = "- {type: Pad, size_divisr: 32}";
    let e = serde_yaml::from_str::<Vec<DetTransformConfig>>(typo).unwrap_err().to_string();
    assert!(e.contains("size_divisr"), "{e}");
}
