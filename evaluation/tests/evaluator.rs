//! The in-memory COCO evaluator and RLE strings against pycocotools / mmdetection 2.11 on the
//! committed fixtures (`tests/fixtures/coco_evaluator/`, written by
//! `tests/reference/make_coco_evaluator_fixtures.py`).

use std::path::{Path, PathBuf};

use nextdet_evaluation::{
    CocoEvaluator, CocoStats, Detections, EvalError, IouType, Rle, RleError, MMDET_MAX_DETS, STAT_NAMES,
};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/coco_evaluator")
}

fn read_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn detections() -> Vec<Detections> {
    serde_json::from_value(read_json("detections.json")).unwrap()
}

fn evaluator(iou_types: &[IouType]) -> CocoEvaluator {
    CocoEvaluator::new(&fixtures().join("gt.json"), iou_types).unwrap()
}

fn filled() -> CocoEvaluator {
    let mut ev = evaluator(&[IouType::Bbox, IouType::Segm]);
    ev.extend(&detections()).unwrap();
    ev
}

#[test]
fn rle_strings_equal_pycocotools_encode() {
    let cases = read_json("rle.json");
    for (i, case) in cases.as_array().unwrap().iter().enumerate() {
        let (h, w) = (case["height"].as_u64().unwrap() as u32, case["width"].as_u64().unwrap() as u32);
        let counts: Vec<u32> = serde_json::from_value(case["counts"].clone()).unwrap();
        let string = case["string"].as_str().unwrap();
        let rle = Rle::from_column_major_counts(h, w, counts.clone()).unwrap();
        assert_eq!(rle.counts_string(), string, "case {i}: compressed string");
        assert_eq!(rle.area(), case["area"].as_u64().unwrap(), "case {i}: area");
        assert_eq!(rle.to_coco_json(), json!({"size": [h, w], "counts": string}), "case {i}");
        let decoded = Rle::from_counts_string(string, h, w).unwrap();
        assert_eq!(decoded, rle, "case {i}: decoded string");
        let ones: Vec<usize> = serde_json::from_value(case["row_major_ones"].clone()).unwrap();
        let mask = rle.to_row_major_mask();
        let got: Vec<usize> = mask.iter().enumerate().filter(|(_, &v)| v == 1).map(|(p, _)| p).collect();
        assert_eq!(got, ones, "case {i}: decoded pixels");
        assert_eq!(Rle::from_row_major_mask(&mask, h, w).unwrap(), rle, "case {i}: re-encoded mask");
    }
}

#[test]
fn rle_rejects_malformed_input() {
    let err = Rle::from_column_major_counts(2, 3, vec![1, 2]).unwrap_err();
    assert_eq!(err, RleError::Length { height: 2, width: 3, sum: 3, expected: 6 });
    assert!(err.to_string().contains("2x3"), "{err}");
    // '0' + 0x20 says more groups follow, but the string ends.
    assert!(matches!(Rle::from_counts_string("P", 1, 1), Err(RleError::Counts { position: 1, .. })));
    // A character below '0'.
    assert!(matches!(Rle::from_counts_string("1 ", 1, 1), Err(RleError::Counts { position: 1, .. })));
    // Valid characters, runs not covering the image.
    assert!(matches!(Rle::from_counts_string("3", 1, 1), Err(RleError::Length { .. })));
    // A negative run: the second character is a lone sign group, -16.
    assert!(matches!(Rle::from_counts_string("1@", 1, 1), Err(RleError::Counts { .. })));
    // Longer than any 32-bit run.
    assert!(matches!(Rle::from_counts_string("ooooooooooooo1", 1, 1), Err(RleError::Counts { .. })));
    assert!(matches!(Rle::from_row_major_mask(&[0, 1], 2, 2), Err(RleError::MaskSize { len: 2, .. })));
}

#[test]
fn label_order_is_the_sorted_category_ids() {
    let ev = evaluator(&[IouType::Bbox]);
    let want: Vec<u64> = serde_json::from_value(read_json("expected.json")["cat_ids"].clone()).unwrap();
    assert_eq!(ev.cat_ids(), want.as_slice());
    assert_eq!(ev.num_classes(), 5);
    assert_eq!(ev.image_ids(), vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn results_json_equals_mmdet_format_results() {
    let ev = filled();
    assert_eq!(ev.num_added(), 5);
    let want = read_json("expected.json");
    for iou_type in [IouType::Bbox, IouType::Segm] {
        let got = ev.results_json(iou_type);
        let want = &want["results"][iou_type.as_str()];
        assert_eq!(got.as_array().unwrap().len(), want.as_array().unwrap().len(), "{iou_type}");
        for (k, (g, w)) in got.as_array().unwrap().iter().zip(want.as_array().unwrap()).enumerate() {
            assert_eq!(g, w, "{iou_type} result {k}");
        }
    }
}

#[test]
fn results_do_not_depend_on_the_order_images_are_added() {
    let mut ev = evaluator(&[IouType::Bbox, IouType::Segm]);
    let mut dets = detections();
    dets.reverse();
    ev.extend(&dets).unwrap();
    assert_eq!(ev.results_json(IouType::Segm), filled().results_json(IouType::Segm));
}

fn check_stats(got: &CocoStats, want: &Value) {
    let iou_type = got.iou_type;
    let want_stats: Vec<f64> = serde_json::from_value(want["stats"].clone()).unwrap();
    assert_eq!(want_stats.len(), 12);
    for (i, (g, w)) in got.stats.iter().zip(&want_stats).enumerate() {
        assert!((g - w).abs() < 1e-9, "{iou_type} stat {} ({i}): nextdet {g} vs pycocotools {w}", STAT_NAMES[i]);
    }
    let want_cats = want["per_category"].as_array().unwrap();
    assert_eq!(got.per_category.len(), want_cats.len());
    for (g, w) in got.per_category.iter().zip(want_cats) {
        assert_eq!(g.id, w["id"].as_u64().unwrap());
        assert_eq!(g.name, w["name"].as_str().unwrap());
        let w_ap = w["ap"].as_f64().unwrap();
        assert!((g.ap - w_ap).abs() < 1e-9, "{iou_type} category {}: {} vs {w_ap}", g.name, g.ap);
    }
}

#[test]
fn stats_equal_pycocotools_with_mmdet_parameters() {
    let want = read_json("expected.json");
    let results = filled().evaluate().unwrap();
    assert_eq!(results.len(), 2);
    for (iou_type, stats) in &results {
        assert_eq!(*iou_type, stats.iou_type);
        assert_eq!(stats.max_dets, MMDET_MAX_DETS);
        check_stats(stats, &want[iou_type.as_str()]);
        // Category 9 has no ground truth anywhere: its detections leave it at -1.
        assert_eq!(stats.per_category.iter().find(|c| c.id == 9).unwrap().ap, -1.0);
        let lines = stats.summary_lines();
        assert!(lines[0].contains("maxDets=100 ]"), "{}", lines[0]);
        assert!(lines[1].contains("maxDets=1000 ]"), "{}", lines[1]);
        assert!(lines[7].contains("maxDets=300 ]"), "{}", lines[7]);
    }
    // The fixture makes the 100 and 1000 limits differ (a match ranked 110th among its image's
    // squares), so AP at 100 is not the AP at 1000.
    let bbox = &results[0].1;
    assert!(bbox.stats[6] < bbox.stats[7], "AR@100 {} vs AR@300 {}", bbox.stats[6], bbox.stats[7]);
}

#[test]
fn boxes_only_evaluator_ignores_masks() {
    let want = read_json("expected.json");
    let mut ev = evaluator(&[IouType::Bbox]);
    let mut dets = detections();
    for d in &mut dets {
        d.masks = None;
    }
    ev.extend(&dets).unwrap();
    let results = ev.evaluate().unwrap();
    assert_eq!(results.len(), 1);
    check_stats(&results[0].1, &want["bbox"]);
    assert_eq!(ev.results_json(IouType::Segm), json!([]));
}

#[test]
fn write_results_writes_mmdet_files() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("results");
    let written = filled().write_results(&prefix).unwrap();
    let want = read_json("expected.json");
    assert_eq!(written.len(), 2);
    for (iou_type, path) in written {
        assert_eq!(path, dir.path().join(format!("results.{iou_type}.json")));
        let got: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(got, want["results"][iou_type.as_str()], "{}", path.display());
    }
    // A missing folder is created (as `nextdet test --out new_dir/results.json` expects)...
    let nested = filled().write_results(&dir.path().join("new_dir/results")).unwrap();
    assert!(nested.iter().all(|(_, p)| p.is_file()), "{nested:?}");
    // ...and a folder that cannot be (a file is in the way) is one error naming the file.
    std::fs::write(dir.path().join("a_file"), b"x").unwrap();
    let err = filled().write_results(&dir.path().join("a_file/results")).unwrap_err();
    assert!(matches!(err, EvalError::Write { .. }), "{err:?}");
    assert!(err.to_string().contains("results.bbox.json"), "{err}");
}

#[test]
fn no_detections_give_zero_and_minus_one() {
    for (iou_type, stats) in evaluator(&[IouType::Bbox, IouType::Segm]).evaluate().unwrap() {
        for (name, value) in stats.named() {
            assert!(value == 0.0 || value == -1.0, "{iou_type} {name} = {value}");
        }
        assert_eq!(stats.stats[0], 0.0);
    }
}

fn one_detection(image_id: u64, label: usize) -> Detections {
    Detections {
        image_id,
        boxes: vec![[1.0, 2.0, 10.0, 12.0]],
        scores: vec![0.5],
        labels: vec![label],
        masks: Some(vec![Rle::from_column_major_counts(40, 50, vec![2000]).unwrap()]),
    }
}

#[test]
fn a_label_out_of_range_is_a_clear_error() {
    let mut ev = evaluator(&[IouType::Bbox]);
    let err = ev.add(&one_detection(6, 5)).unwrap_err();
    assert!(matches!(err, EvalError::LabelOutOfRange { image_id: 6, index: 0, label: 5, num_classes: 5 }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("image 6") && msg.contains("label 5") && msg.contains("5 categories"), "{msg}");
    // Nothing was added for the image, so it can be added once fixed.
    ev.add(&one_detection(6, 4)).unwrap();
}

#[test]
fn bad_detections_are_errors_not_panics() {
    let mut ev = evaluator(&[IouType::Bbox, IouType::Segm]);
    let err = ev.add(&one_detection(77, 0)).unwrap_err();
    assert!(matches!(err, EvalError::UnknownImage { image_id: 77, .. }), "{err:?}");
    assert!(err.to_string().contains("gt.json"), "{err}");

    let mut d = one_detection(6, 0);
    d.scores.push(0.1);
    let err = ev.add(&d).unwrap_err();
    assert!(err.to_string().contains("1 boxes, 2 scores and 1 labels"), "{err}");

    let mut d = one_detection(6, 0);
    d.masks = None;
    let err = ev.add(&d).unwrap_err();
    assert!(err.to_string().contains("needs masks"), "{err}");

    let mut d = one_detection(6, 0);
    d.masks = Some(vec![Rle::from_column_major_counts(50, 40, vec![2000]).unwrap()]);
    let err = ev.add(&d).unwrap_err();
    assert!(err.to_string().contains("50x40"), "{err}");

    let mut d = one_detection(6, 0);
    d.masks.as_mut().unwrap()[0].counts = vec![10, 10];
    assert!(matches!(ev.add(&d), Err(EvalError::BadDetections { image_id: 6, .. })));

    let mut d = one_detection(6, 0);
    d.scores[0] = f32::NAN;
    let err = ev.add(&d).unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");

    ev.add(&one_detection(6, 0)).unwrap();
    let err = ev.add(&one_detection(6, 0)).unwrap_err();
    assert!(matches!(err, EvalError::DuplicateImage { image_id: 6 }), "{err:?}");
}

#[test]
fn missing_ground_truth_names_the_file() {
    let err = CocoEvaluator::new(&fixtures().join("no_such_gt.json"), &[IouType::Bbox]).err().unwrap();
    assert!(matches!(err, EvalError::GroundTruth { .. }), "{err:?}");
    assert!(err.to_string().contains("no_such_gt.json"), "{err}");
}
