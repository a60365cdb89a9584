//! The synthetic shapes datasets: annotations equal what is drawn (area = the decoded mask's
//! pixel count, bbox = its tight box, masks disjoint and one colour each), the files open as a
//! `CocoDataset` / `ImageFolder`, and a seed gives byte-identical files.

use std::collections::BTreeSet;
use std::path::Path;

use nextdet_datasets::coco::{CocoDataset, CocoOptions};
use nextdet_datasets::shapes::{
    ensure_classification, ensure_detection, make_classification, make_detection, ShapesError, CATEGORIES,
    CLASSIFICATION_MARKER, CLASSIFICATION_VERSION,
};
use nextdet_datasets::{Bitmap, ImageFolder};
use nextdet_evaluation::Rle;
use serde_json::Value;

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `[x, y, w, h]` of the set pixels, as pycocotools' `toBbox`.
fn tight_box(m: &Bitmap) -> [f64; 4] {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..m.height {
        for x in 0..m.width {
            if m.data[y * m.width + x] != 0 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    [x0 as f64, y0 as f64, (x1 - x0 + 1) as f64, (y1 - y0 + 1) as f64]
}

fn bbox_of(ann: &Value) -> [f64; 4] {
    let b: Vec<f64> = ann["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    [b[0], b[1], b[2], b[3]]
}

#[test]
fn detection_annotations_equal_drawn_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let summary = make_detection(tmp.path(), 40, 6, 7).unwrap();
    assert_eq!((summary.train_images, summary.val_images), (40, 6));
    let ann_file = tmp.path().join("annotations/instances_train.json");
    let json = read_json(&ann_file);
    let anns = json["annotations"].as_array().unwrap();
    let crowds: Vec<&Value> = anns.iter().filter(|a| a["iscrowd"] == 1).collect();
    assert_eq!(anns.len() - crowds.len(), summary.train_instances);
    assert!(!crowds.is_empty(), "40 images should hold a crowd");
    let n_rle = anns.iter().filter(|a| a["iscrowd"] == 0 && a["segmentation"].is_object()).count();
    let n_poly = anns.iter().filter(|a| a["segmentation"].is_array()).count();
    assert!(n_rle > 0 && n_poly > 0, "{n_rle} occluded, {n_poly} whole");
    let cats: BTreeSet<u64> = anns.iter().map(|a| a["category_id"].as_u64().unwrap()).collect();
    assert_eq!(cats.len(), CATEGORIES.len());

    let ds = CocoDataset::open(&ann_file, &tmp.path().join("train"), CocoOptions::TEST).unwrap();
    assert_eq!(ds.len(), 40);
    assert_eq!(ds.class_names(), CATEGORIES.map(String::from).as_slice());
    let (mut min_rel, mut max_rel) = (f64::MAX, 0f64);
    for i in 0..ds.len() {
        let s = ds.load(i).unwrap();
        let info = ds.image_info(i).unwrap();
        assert!((160..=320).contains(&info.width) && (160..=320).contains(&info.height));
        let objects = &ds.annotations(i).unwrap().objects;
        let mut covered = vec![0u8; info.width * info.height];
        for (obj, mask) in objects.iter().zip(&s.masks) {
            let ann = anns.iter().find(|a| a["id"] == obj.ann_id).unwrap();
            let area = mask.area();
            assert_eq!(ann["area"].as_f64().unwrap(), area as f64, "annotation {}", obj.ann_id);
            let bbox = bbox_of(ann);
            assert_eq!(bbox, tight_box(mask), "annotation {}", obj.ann_id);
            assert_eq!(obj.bbox, [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]].map(|v| v as f32));
            let short = info.width.min(info.height) as f64;
            min_rel = min_rel.min(bbox[2].max(bbox[3]) / short);
            max_rel = max_rel.max(bbox[2].max(bbox[3]) / short);
            // The drawn pixels under the mask are one fill colour with +-8 noise.
            for c in 0..3 {
                let vals =
                    mask.data.iter().enumerate().filter(|(_, &m)| m != 0).map(|(p, _)| s.image.as_raw()[p * 3 + c]);
                let (lo, hi) = vals.fold((255u8, 0u8), |(lo, hi), v| (lo.min(v), hi.max(v)));
                assert!(hi - lo <= 16, "annotation {} channel {c}: {lo}..{hi}", obj.ann_id);
            }
            for (c, &m) in covered.iter_mut().zip(&mask.data) {
                assert!(!(*c != 0 && m != 0), "visible masks overlap in image {}", info.id);
                *c |= m;
            }
        }
        assert!(s.masks.len() <= 6);
    }
    assert!(min_rel < 0.2 && max_rel > 0.4, "object sizes {min_rel}..{max_rel} of the short side");

    for crowd in crowds {
        let img = json["images"].as_array().unwrap().iter().find(|im| im["id"] == crowd["image_id"]).unwrap();
        let (w, h) = (img["width"].as_u64().unwrap() as usize, img["height"].as_u64().unwrap() as usize);
        let counts: Vec<u32> =
            crowd["segmentation"]["counts"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(counts.iter().map(|&c| c as usize).sum::<usize>(), w * h);
        let mask = Bitmap::from_rle(&Rle::from_column_major_counts(h as u32, w as u32, counts).unwrap());
        assert_eq!(crowd["area"].as_f64().unwrap(), mask.area() as f64);
        assert_eq!(bbox_of(crowd), tight_box(&mask));
    }
    // Occluded instances' compressed RLEs decode to their area too (checked above via load);
    // make sure the strings are pycocotools' alphabet.
    for a in anns.iter().filter(|a| a["iscrowd"] == 0 && a["segmentation"].is_object()) {
        let size = &a["segmentation"]["size"];
        let (h, w) = (size[0].as_u64().unwrap() as usize, size[1].as_u64().unwrap() as usize);
        Rle::from_counts_string(a["segmentation"]["counts"].as_str().unwrap(), h as u32, w as u32).unwrap();
    }
    // The validation split opens too.
    let val = CocoDataset::open(
        &tmp.path().join("annotations/instances_val.json"),
        &tmp.path().join("val"),
        CocoOptions::TEST,
    )
    .unwrap();
    val.validate_all().unwrap();
    assert_eq!(val.len(), 6);
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_seed_gives_identical_files() {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_detection(a.path(), 5, 2, 3).unwrap();
    make_detection(b.path(), 5, 2, 3).unwrap();
    make_detection(c.path(), 5, 2, 4).unwrap();
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert_eq!(fa.len(), 5 + 2 + 2);
    assert!(fa == fb, "same seed, different files");
    assert!(fa != fc, "different seeds, same files");
    make_classification(a.path().join("cls").as_path(), 2, 1, 3).unwrap();
    make_classification(b.path().join("cls").as_path(), 2, 1, 3).unwrap();
    assert!(files(&a.path().join("cls")) == files(&b.path().join("cls")));
}

#[test]
fn classification_set_is_an_image_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let summary = make_classification(tmp.path(), 3, 2, 0).unwrap();
    assert_eq!((summary.train_images, summary.val_images), (15, 10));
    let train = ImageFolder::open(tmp.path().join("train")).unwrap();
    let mut sorted = CATEGORIES.map(String::from).to_vec();
    sorted.sort();
    assert_eq!(train.classes(), sorted.as_slice());
    assert_eq!(train.len(), 15);
    for i in 0..train.len() {
        let (img, _) = train.load(i).unwrap().unwrap();
        assert!((64..=96).contains(&img.width()) && img.width() == img.height());
    }
    let marker = std::fs::read_to_string(tmp.path().join(CLASSIFICATION_MARKER)).unwrap();
    assert_eq!(marker.trim_end(), CLASSIFICATION_VERSION);
    assert_eq!(ImageFolder::open(tmp.path().join("val")).unwrap().len(), 10);
}

#[test]
fn ensure_generates_once_and_refuses_foreign_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let det = tmp.path().join("shapes_det");
    assert!(ensure_detection(&det).unwrap());
    assert!(!ensure_detection(&det).unwrap());
    let json = read_json(&det.join("annotations/instances_train.json"));
    assert_eq!(json["images"].as_array().unwrap().len(), nextdet_datasets::shapes::DEFAULT_DETECTION_TRAIN);
    let cls = tmp.path().join("shapes_cls");
    assert!(ensure_classification(&cls).unwrap());
    assert!(!ensure_classification(&cls).unwrap());
    let n_train = ImageFolder::open(cls.join("train")).unwrap().len();
    assert_eq!(n_train, CATEGORIES.len() * nextdet_datasets::shapes::DEFAULT_CLASSIFICATION_TRAIN_PER_CLASS);
    // Nothing half-written is left next to them.
    let names: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let err = ensure_detection(&foreign).unwrap_err();
    assert!(matches!(err, ShapesError::Incomplete { .. }) && err.to_string().contains("foreign"), "{err}");
    assert!(foreign.join("notes.txt").exists());
}

#[test]
fn ensure_classification_refuses_a_set_from_another_generator() {
    let tmp = tempfile::tempdir().unwrap();
    let cls = tmp.path().join("shapes_cls");
    for split in ["train", "val"] {
        for class in CATEGORIES {
            std::fs::create_dir_all(cls.join(split).join(class)).unwrap();
        }
    }
    // As an earlier generator left it: complete folders, no marker.
    let err = ensure_classification(&cls).unwrap_err();
    assert!(matches!(err, ShapesError::Incomplete { .. }) && err.to_string().contains(CLASSIFICATION_MARKER), "{err}");
    std::fs::write(cls.join(CLASSIFICATION_MARKER), "nextdet shapes classification v1\n").unwrap();
    assert!(ensure_classification(&cls).is_err());
    std::fs::write(cls.join(CLASSIFICATION_MARKER), format!("{CLASSIFICATION_VERSION}\n")).unwrap();
    assert!(!ensure_classification(&cls).unwrap());
}
