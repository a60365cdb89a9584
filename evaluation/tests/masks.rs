//! Polygon rasterization equals pycocotools' `frPyObjects` + `merge` + `decode` on non-square
//! images (fixture: `tests/reference/make_polygon_fixtures.py`), and bad polygons are errors.

use nextdet_evaluation::{polygons_to_mask, MaskError};

#[test]
fn polygons_rasterize_exactly_as_pycocotools() {
    let path = format!("{}/../tests/fixtures/coco/polygons.json", env!("CARGO_MANIFEST_DIR"));
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 6);
    for (i, case) in cases.iter().enumerate() {
        let (h, w) = (case["height"].as_u64().unwrap() as u32, case["width"].as_u64().unwrap() as u32);
        assert_ne!(h, w, "the fixture's images are not square");
        let polygons: Vec<Vec<f64>> = serde_json::from_value(case["polygons"].clone()).unwrap();
        let mask = polygons_to_mask(&polygons, h, w).unwrap();
        let ours: Vec<u64> = mask.iter().enumerate().filter(|(_, &v)| v != 0).map(|(j, _)| j as u64).collect();
        let want: Vec<u64> = serde_json::from_value(case["foreground"].clone()).unwrap();
        assert_eq!(ours, want, "case {i} ({h}x{w})");
        assert_eq!(ours.len() as u64, case["area"].as_u64().unwrap(), "case {i} area");
    }
}

#[test]
fn bad_polygons_are_errors() {
    let short = polygons_to_mask(&[vec![1.0, 2.0, 3.0, 4.0]], 10, 20).unwrap_err();
    assert_eq!(short, MaskError::ShortPolygon { index: 0, len: 4 });
    assert!(short.to_string().contains("at least 6"));
    let nan = polygons_to_mask(&[vec![0.0, 0.0, 5.0, 0.0, 5.0, 5.0], vec![0.0, f64::NAN, 1.0, 1.0, 2.0, 2.0]], 10, 20);
    assert_eq!(nan.unwrap_err(), MaskError::NonFinite { index: 1 });
    assert!(matches!(polygons_to_mask(&[vec![0.0, 0.0, 5.0, 0.0, 5.0, 5.0]], 0, 20), Err(MaskError::Size { .. })));
}
