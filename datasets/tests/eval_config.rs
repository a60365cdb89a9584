//! `EvalTransform` as a config section: defaults, overrides, unknown keys.

use nextdet_datasets::classification::{IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD};
use nextdet_datasets::{EvalTransform, Filter, RgbImage};

#[test]
fn defaults_from_a_minimal_section() {
    let t: EvalTransform = serde_json::from_str(r#"{"input_size": 224}"#).unwrap();
    assert_eq!(t, EvalTransform::new(224));
    assert_eq!(t.crop_pct, 0.875);
    assert_eq!(t.interpolation, Filter::Bicubic);
    assert_eq!(t.mean, IMAGENET_DEFAULT_MEAN);
    assert_eq!(t.std, IMAGENET_DEFAULT_STD);
    assert_eq!(t.resize_short_side(), 256);
    assert!(!t.warps());
    assert!(EvalTransform::new(384).warps());
}

#[test]
fn overrides_and_unknown_keys() {
    let t: EvalTransform = serde_json::from_str(
        r#"{"input_size": 288, "crop_pct": 1.0, "interpolation": "bilinear",
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}"#,
    )
    .unwrap();
    assert_eq!(t.interpolation, Filter::Bilinear);
    assert_eq!(t.resize_short_side(), 288);
    let e = serde_json::from_str::<EvalTransform>(r#"{"input_size": 224, "crop_pc": 0.9}"#).unwrap_err();
    assert!(e.to_string().contains("crop_pc"), "{e}");
    let e = serde_json::from_str::<EvalTransform>(r#"{"input_size": 224, "interpolation": "lanczos"}"#).unwrap_err();
    assert!(e.to_string().contains("lanczos"), "{e}");
    assert!(serde_json::from_str::<EvalTransform>(r#"{"crop_pct": 0.9}"#).is_err());
}

#[test]
fn output_shapes_and_layout() {
    // A 50x20 image with a constant colour: every output plane is constant.
    let img = RgbImage::from_raw(50, 20, [255u8, 0, 128].repeat(1000)).unwrap();
    for (size, resized) in [(16, (45, 18)), (384, (384, 384))] {
        let t = EvalTransform::new(size);
        assert_eq!(t.resized_size(50, 20), resized);
        let out = t.apply(&img).unwrap();
        assert_eq!(out.len(), 3 * size * size);
        assert_eq!(t.output_shape(), [3, size, size]);
        let plane = size * size;
        for (c, v) in [255.0f32, 0.0, 128.0].into_iter().enumerate() {
            let expected = (v / 255.0 - t.mean[c]) / t.std[c];
            assert!(out[c * plane..(c + 1) * plane].iter().all(|&x| x == expected));
        }
    }
}
