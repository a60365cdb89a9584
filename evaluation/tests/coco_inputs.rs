//! Malformed and edge-case COCO inputs: refused where pycocotools refuses them (one line naming
//! the file), evaluated to pycocotools' numbers where it accepts them, duplicate annotation ids
//! included. Fixtures and pycocotools' outcome for each from
//! `tests/reference/make_coco_input_fixtures.py`.

use std::path::{Path, PathBuf};

use nextdet_evaluation::{evaluate_files, IouType, STAT_NAMES};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/coco_inputs")
}

fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap().as_array().unwrap().clone()
}

/// What nextdet should say for each refused case (pycocotools' exception is in the fixture).
fn expected_message(gt: &str, dt: &str) -> &'static str {
    match (gt, dt) {
        ("gt_list.json", _) => "gt_list.json: not a COCO ground truth pycocotools can evaluate: the ground truth must be a JSON object",
        ("gt_no_bbox.json", _) => "gt_no_bbox.json: not a COCO ground truth pycocotools can evaluate: annotation 3 (id 4, image 1) has no `bbox`",
        ("gt_no_segmentation.json", _) => "annotation 3 (id 4, image 1) has no `segmentation`",
        ("gt_no_area.json", _) => "annotation 3 (id 4, image 1) has no `area`",
        (_, "dt_object.json") => "dt_object.json: not COCO results pycocotools can evaluate: the results must be a JSON array of detections",
        (_, "dt_no_score.json") => "dt_no_score.json: not COCO results pycocotools can evaluate: detection 4 (image 1, category 1) has no `score`",
        (_, "dt_no_bbox.json") => "detection 5 has no `bbox` (the first detection has one, so every detection needs one)",
        (_, "dt_neither.json") => "the first detection has neither a `bbox` nor a `segmentation`",
        (_, "dt_polygons_no_bbox.json") => "detection 0: a `segmentation` without a `bbox` must be compressed RLE",
        (_, "dt_unknown_image.json") => "detection 2 is on image 999, which is not in the ground truth",
        (_, "dt_no_category_id.json") => "detection 1 has no `category_id`",
        (_, "dt_no_image_id.json") => "detection 1 has no `image_id`",
        other => panic!("no expected message for {other:?}"),
    }
}

#[test]
fn inputs_are_refused_or_evaluated_as_pycocotools_does() {
    let cases = cases();
    assert_eq!(cases.len(), 18);
    for case in cases {
        let (gt, dt) = (case["gt"].as_str().unwrap(), case["dt"].as_str().unwrap());
        let iou_type: IouType = case["iou_type"].as_str().unwrap().parse().unwrap();
        let got = evaluate_files(&fixtures().join(gt), &fixtures().join(dt), iou_type);
        if !case["accepted"].as_bool().unwrap() {
            let err = match got {
                Err(e) => e.to_string(),
                Ok(stats) => {
                    panic!("{gt} {dt}: pycocotools refuses it ({}), nextdet gave {:?}", case["error"], stats.stats)
                }
            };
            assert!(err.contains(expected_message(gt, dt)), "{gt} {dt}: {err}");
            assert!(!err.contains('\n'), "{err}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{gt} {dt} {iou_type}: pycocotools accepts it, nextdet says {e}"));
        let want: Vec<f64> = case["stats"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        for (i, (g, w)) in got.stats.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-9, "{gt} {dt} {iou_type} {}: nextdet {g} vs pycocotools {w}", STAT_NAMES[i]);
        }
        let want_cats = case["per_category"].as_array().unwrap();
        assert_eq!(got.per_category.len(), want_cats.len());
        for (g, w) in got.per_category.iter().zip(want_cats) {
            assert_eq!(g.id, w["id"].as_u64().unwrap());
            let w_ap = w["ap"].as_f64().unwrap();
            assert!((g.ap - w_ap).abs() < 1e-9, "{gt} {dt} {iou_type} category {}: {} vs {w_ap}", g.id, g.ap);
        }
    }
}
