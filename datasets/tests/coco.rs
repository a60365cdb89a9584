//! `CocoDataset` against tests/fixtures/coco_dataset (made by
//! tests/reference/make_coco_dataset_fixtures.py): boxes, labels and crowd boxes as mmdetection
//! 2.11 parses them, the training filter as its `_filter_imgs`, and masks equal to pycocotools'
//! `annToMask`; then one error per kind of bad input, each naming the file and the item.

use std::path::{Path, PathBuf};

use nextdet_datasets::coco::{CocoDataset, CocoError, CocoOptions};
use nextdet_datasets::Bitmap;
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/coco_dataset")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn open(opts: CocoOptions) -> CocoDataset {
    let dir = fixture_dir();
    CocoDataset::open(&dir.join("instances.json"), &dir, opts).unwrap()
}

/// Row-major run lengths starting with zeros (the fixture's mask format).
fn row_major_runs(mask: &Bitmap) -> Vec<u64> {
    let mut runs = Vec::new();
    let (mut cur, mut run) = (0u8, 0u64);
    for &v in &mask.data {
        if v != cur {
            runs.push(run);
            run = 0;
            cur = v;
        }
        run += 1;
    }
    runs.push(run);
    runs
}

fn boxes(v: &Value) -> Vec<[f32; 4]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let b: Vec<f32> = b.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            [b[0], b[1], b[2], b[3]]
        })
        .collect()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// Checks every image of `ds` against the expected records, including decoding it.
fn check_against(ds: &CocoDataset, records: &Value, with_masks: bool) {
    let records = records.as_array().unwrap();
    assert_eq!(ds.len(), records.len());
    for (i, rec) in records.iter().enumerate() {
        let info = ds.image_info(i).unwrap();
        let id = rec["image_id"].as_u64().unwrap();
        assert_eq!(info.id, id);
        assert_eq!(info.file_name, rec["file_name"].as_str().unwrap());
        assert_eq!(info.width as u64, rec["width"].as_u64().unwrap());
        assert_eq!(info.height as u64, rec["height"].as_u64().unwrap());
        let ann = ds.annotations(i).unwrap();
        assert_eq!(ann.objects.iter().map(|o| o.ann_id).collect::<Vec<_>>(), u64s(&rec["ann_ids"]), "image {id}");

        let s = ds.load(i).unwrap();
        assert_eq!(s.boxes, boxes(&rec["boxes"]), "image {id} boxes");
        assert_eq!(s.labels.iter().map(|&l| l as u64).collect::<Vec<_>>(), u64s(&rec["labels"]), "image {id}");
        assert_eq!(s.ignore_boxes, boxes(&rec["ignore_boxes"]), "image {id} crowd boxes");
        assert_eq!((s.image.width(), s.image.height()), (info.width, info.height));
        let sum: u64 = s.image.as_raw().iter().map(|&v| v as u64).sum();
        assert_eq!(sum, rec["pixel_sum"].as_u64().unwrap(), "image {id} pixels");
        assert_eq!(s.meta.image_id, id);
        assert_eq!(s.meta.ori_size, (info.height, info.width));
        if with_masks {
            let want = rec["masks"].as_array().unwrap();
            assert_eq!(s.masks.len(), want.len());
            for (k, (m, w)) in s.masks.iter().zip(want).enumerate() {
                assert_eq!((m.width, m.height), (info.width, info.height));
                assert_eq!(row_major_runs(m), u64s(w), "image {id} mask {k}");
            }
        } else {
            assert!(s.masks.is_empty());
        }
    }
}

#[test]
fn evaluation_set_matches_mmdet_and_pycocotools() {
    let exp = expected();
    let ds = open(CocoOptions::TEST);
    assert_eq!(ds.cat_ids(), u64s(&exp["cat_ids"]).as_slice());
    let names: Vec<&str> = exp["class_names"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(ds.class_names(), names.as_slice());
    assert_eq!(ds.label_to_cat_id(2), Some(7));
    assert_eq!(ds.cat_id_to_label(3), Some(1));
    assert_eq!(ds.cat_id_to_label(99), None);
    check_against(&ds, &exp["test"], true);
    ds.validate_all().unwrap();
}

#[test]
fn training_filter_matches_mmdet() {
    let exp = expected();
    let ds = open(CocoOptions::TRAIN);
    check_against(&ds, &exp["train"], true);
    let flags: Vec<u8> = exp["train"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["width"].as_f64().unwrap() / r["height"].as_f64().unwrap() > 1.0) as u8)
        .collect();
    assert_eq!(ds.aspect_ratio_flags(), flags);
    // Without min_size the image under 32 px stays.
    let ds = open(CocoOptions { min_size: 0, ..CocoOptions::TRAIN });
    assert_eq!(ds.len(), exp["train"].as_array().unwrap().len() + 1);
}

#[test]
fn boxes_without_masks() {
    let exp = expected();
    let ds = open(CocoOptions { with_masks: false, ..CocoOptions::TEST });
    check_against(&ds, &exp["test"], false);
}

// ---- bad input ----

/// Copies the fixture into a temporary folder, applies `edit` to the annotation JSON, and
/// returns the folder and the annotation file's path.
fn edited(edit: impl FnOnce(&mut Value)) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let ann = tmp.path().join("instances.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&ann).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&ann, serde_json::to_vec(&v).unwrap()).unwrap();
    (tmp, ann)
}

fn ann_mut(v: &mut Value, id: u64) -> &mut Value {
    v["annotations"].as_array_mut().unwrap().iter_mut().find(|a| a["id"] == id).unwrap()
}

fn open_err(tmp: &tempfile::TempDir, ann: &Path, opts: CocoOptions) -> String {
    match CocoDataset::open(ann, tmp.path(), opts) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_json_names_file_and_position() {
    let (tmp, ann) = edited(|_| {});
    let text = std::fs::read_to_string(&ann).unwrap();
    std::fs::write(&ann, &text[..text.len() / 2]).unwrap();
    let err = CocoDataset::open(&ann, tmp.path(), CocoOptions::TEST).unwrap_err();
    assert!(matches!(err, CocoError::Json { line: 1, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("instances.json") && msg.contains("column"), "{msg}");
    // Valid JSON without COCO's structure.
    std::fs::write(&ann, "{\"images\": [{\"id\": 1}], \"categories\": []}").unwrap();
    let msg = open_err(&tmp, &ann, CocoOptions::TEST);
    assert!(msg.contains("instances.json") && msg.contains("file_name"), "{msg}");
}

#[test]
fn missing_image_fails_validation_and_load() {
    let (tmp, ann) = edited(|_| {});
    std::fs::remove_file(tmp.path().join("b.png")).unwrap();
    let ds = CocoDataset::open(&ann, tmp.path(), CocoOptions::TEST).unwrap();
    let msg = ds.validate_all().unwrap_err().to_string();
    assert!(msg.contains("b.png") && msg.contains("image id 5") && msg.contains("1 image file"), "{msg}");
    let msg = ds.load(1).unwrap_err().to_string();
    assert!(msg.contains("b.png") && msg.contains("image id 5"), "{msg}");
    assert!(ds.load(0).is_ok());
}

#[test]
fn corrupt_image_names_file() {
    let (tmp, ann) = edited(|_| {});
    let png = std::fs::read(tmp.path().join("c.png")).unwrap();
    std::fs::write(tmp.path().join("c.png"), &png[..png.len() / 2]).unwrap();
    let ds = CocoDataset::open(&ann, tmp.path(), CocoOptions::TEST).unwrap();
    ds.validate_all().unwrap();
    let msg = ds.load(2).unwrap_err().to_string();
    assert!(msg.contains("c.png") && msg.contains("image id 20"), "{msg}");
}

#[test]
fn image_size_differing_from_json_is_an_error() {
    let (tmp, ann) = edited(|v| v["images"][2]["width"] = 70.into());
    let ds = CocoDataset::open(&ann, tmp.path(), CocoOptions::TEST).unwrap();
    let err = ds.load(2).unwrap_err();
    assert!(matches!(err, CocoError::SizeMismatch { actual_w: 72, json_w: 70, .. }), "{err}");
    assert!(err.to_string().contains("c.png"), "{err}");
}

#[test]
fn short_polygon_names_annotation() {
    let (tmp, ann) = edited(|v| ann_mut(v, 101)["segmentation"] = serde_json::json!([[1.0, 2.0, 3.0, 4.0]]));
    let msg = open_err(&tmp, &ann, CocoOptions::TEST);
    assert!(msg.contains("instances.json") && msg.contains("annotation id 101") && msg.contains("polygon"), "{msg}");
    // Without masks the segmentation is not used, so it is not checked.
    assert!(CocoDataset::open(&ann, tmp.path(), CocoOptions { with_masks: false, ..CocoOptions::TEST }).is_ok());
}

#[test]
fn rle_sum_mismatch_names_annotation() {
    let (tmp, ann) = edited(|v| ann_mut(v, 102)["segmentation"]["counts"].as_array_mut().unwrap().push(5.into()));
    let msg = open_err(&tmp, &ann, CocoOptions::TEST);
    assert!(msg.contains("annotation id 102") && msg.contains("sum to 3077"), "{msg}");
    // A compressed string cut inside a number.
    let (tmp, ann) = edited(|v| {
        let c = ann_mut(v, 103)["segmentation"]["counts"].as_str().unwrap().to_owned();
        ann_mut(v, 103)["segmentation"]["counts"] = format!("{c}o").into();
    });
    let msg = open_err(&tmp, &ann, CocoOptions::TEST);
    assert!(msg.contains("annotation id 103") && msg.contains("compressed RLE"), "{msg}");
    // An RLE of another size than its image.
    let (tmp, ann) = edited(|v| ann_mut(v, 102)["segmentation"]["size"] = serde_json::json!([64, 48]));
    let msg = open_err(&tmp, &ann, CocoOptions::TEST);
    assert!(msg.contains("annotation id 102") && msg.contains("RLE size"), "{msg}");
}

#[test]
fn bbox_arity_names_annotation() {
    let (tmp, ann) = edited(|v| ann_mut(v, 202)["bbox"] = serde_json::json!([1.0, 2.0, 3.0]));
    let msg = open_err(&tmp, &ann, CocoOptions::TEST);
    assert!(msg.contains("annotation id 202") && msg.contains("image id 5") && msg.contains("bbox"), "{msg}");
}

#[test]
fn duplicate_ids_are_errors() {
    let (tmp, ann) = edited(|v| ann_mut(v, 202)["id"] = 201.into());
    let msg = open_err(&tmp, &ann, CocoOptions::TEST);
    assert!(msg.contains("annotation id 201") && msg.contains("twice"), "{msg}");
    let (tmp, ann) = edited(|v| v["images"][1]["id"] = 11.into());
    let msg = open_err(&tmp, &ann, CocoOptions::TEST);
    assert!(msg.contains("image id 11") && msg.contains("twice"), "{msg}");
}

#[test]
fn empty_datasets_are_errors() {
    let (tmp, ann) = edited(|v| v["images"] = serde_json::json!([]));
    let msg = open_err(&tmp, &ann, CocoOptions::TEST);
    assert!(msg.contains("empty COCO dataset") && msg.contains("instances.json"), "{msg}");
    // Only images that the training filter drops.
    let (tmp, ann) = edited(|v| {
        let keep: Vec<Value> =
            v["images"].as_array().unwrap().iter().filter(|im| im["id"] == 8 || im["id"] == 9).cloned().collect();
        v["images"] = keep.into();
    });
    assert_eq!(CocoDataset::open(&ann, tmp.path(), CocoOptions::TEST).unwrap().len(), 2);
    let msg = open_err(&tmp, &ann, CocoOptions::TRAIN);
    assert!(msg.contains("no image is left after filtering"), "{msg}");
    let (tmp, ann) = edited(|v| v["categories"] = serde_json::json!([]));
    let msg = open_err(&tmp, &ann, CocoOptions::TEST);
    assert!(msg.contains("no categories"), "{msg}");
}

#[test]
fn out_of_range_index_is_an_error() {
    let ds = open(CocoOptions::TEST);
    assert!(ds.image_info(6).is_none());
    let msg = ds.load(6).unwrap_err().to_string();
    assert!(msg.contains("index 6") && msg.contains("6 images"), "{msg}");
}

#[test]
fn missing_annotation_file_is_an_error() {
    let dir = fixture_dir();
    let err = CocoDataset::open(&dir.join("nope.json"), &dir, CocoOptions::TEST).unwrap_err();
    assert!(err.to_string().contains("nope.json"), "{err}");
}
