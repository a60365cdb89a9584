//! COCO evaluation against pycocotools' numbers on the committed fixtures
//! (`tests/fixtures/coco/`, written by `tests/reference/make_coco_eval_fixtures.py`).

use std::path::{Path, PathBuf};

use nextdet_evaluation::{evaluate_files, EvalError, IouType};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/coco")
}

fn expected(results: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all[results].clone()
}

/// Stats and per-category AP equal pycocotools' within 1e-9.
fn check(results: &str, iou_type: IouType) {
    let got = evaluate_files(&fixtures().join("gt.json"), &fixtures().join(results), iou_type)
        .unwrap_or_else(|e| panic!("{results}: {e}"));
    let want = expected(results);
    assert_eq!(want["iou_type"], iou_type.as_str());
    let want_stats: Vec<f64> = want["stats"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(want_stats.len(), 12);
    for (i, (g, w)) in got.stats.iter().zip(&want_stats).enumerate() {
        assert!(
            (g - w).abs() < 1e-9,
            "{results} {iou_type} stat {} ({i}): nextdet {g} vs pycocotools {w}",
            nextdet_evaluation::STAT_NAMES[i]
        );
    }
    let want_cats = want["per_category"].as_array().unwrap();
    assert_eq!(got.per_category.len(), want_cats.len());
    for (g, w) in got.per_category.iter().zip(want_cats) {
        assert_eq!(g.id, w["id"].as_u64().unwrap());
        assert_eq!(g.name, w["name"].as_str().unwrap());
        let w_ap = w["ap"].as_f64().unwrap();
        assert!((g.ap - w_ap).abs() < 1e-9, "{results} category {}: {} vs {w_ap}", g.name, g.ap);
    }
    // The layout of pycocotools' summary.
    let lines = got.summary_lines();
    assert_eq!(lines.len(), 12);
    assert_eq!(
        lines[0],
        format!(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = {:.3}", want_stats[0])
    );
    assert_eq!(
        lines[6],
        format!(" Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = {:.3}", want_stats[6])
    );
}

#[test]
fn bbox_stats_equal_pycocotools() {
    check("dt_bbox.json", IouType::Bbox);
}

#[test]
fn segm_stats_equal_pycocotools_with_boxes_kept() {
    check("dt_segm.json", IouType::Segm);
}

#[test]
fn segm_stats_equal_pycocotools_without_boxes() {
    check("dt_segm_nobbox.json", IouType::Segm);
}

#[test]
fn empty_results_give_zero_and_minus_one_not_a_panic() {
    for iou_type in [IouType::Bbox, IouType::Segm] {
        let got = evaluate_files(&fixtures().join("gt.json"), &fixtures().join("dt_empty.json"), iou_type).unwrap();
        for (name, value) in got.named() {
            assert!(value == 0.0 || value == -1.0, "{iou_type} {name} = {value}");
        }
        assert_eq!(got.stats[0], 0.0);
        assert!(got.per_category.iter().all(|c| c.ap == 0.0));
    }
}

#[test]
fn malformed_results_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken_results.json");
    std::fs::write(&bad, "[{\"image_id\": 1, \"category_id\": ").unwrap();
    let err = evaluate_files(&fixtures().join("gt.json"), &bad, IouType::Bbox).unwrap_err();
    assert!(matches!(err, EvalError::Results { .. }), "{err:?}");
    assert!(err.to_string().contains("broken_results.json"), "{err}");
}

#[test]
fn malformed_ground_truth_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken_gt.json");
    std::fs::write(&bad, "{\"images\": [").unwrap();
    let err = evaluate_files(&bad, &fixtures().join("dt_bbox.json"), IouType::Bbox).unwrap_err();
    assert!(matches!(err, EvalError::GroundTruth { .. }), "{err:?}");
    assert!(err.to_string().contains("broken_gt.json"), "{err}");
}

#[test]
fn missing_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no_such_results.json");
    let err = evaluate_files(&fixtures().join("gt.json"), &missing, IouType::Segm).unwrap_err();
    assert!(err.to_string().contains("no_such_results.json"), "{err}");
    let missing_gt = dir.path().join("no_such_gt.json");
    let err = evaluate_files(&missing_gt, &fixtures().join("dt_bbox.json"), IouType::Bbox).unwrap_err();
    assert!(err.to_string().contains("no_such_gt.json"), "{err}");
}

#[test]
fn iou_type_parses_bbox_and_segm_only() {
    assert_eq!("bbox".parse::<IouType>().unwrap(), IouType::Bbox);
    assert_eq!("segm".parse::<IouType>().unwrap(), IouType::Segm);
    let err = "keypoints".parse::<IouType>().unwrap_err();
    assert!(err.to_string().contains("keypoints"));
}
