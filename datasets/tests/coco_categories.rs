//! A COCO annotation file that lists a category id twice is an error naming the file and the id
//! (labels are assigned per category id, so the second entry would silently merge into the
//! first or shift every label after it).

use std::path::Path;

use nextdet_datasets::coco::{CocoDataset, CocoOptions};
use serde_json::Value;

#[test]
fn duplicate_category_ids_are_errors_naming_file_and_id() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/coco_dataset");
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let ann = tmp.path().join("instances.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&ann).unwrap()).unwrap();
    let cats = v["categories"].as_array_mut().unwrap();
    let mut twin = cats[0].clone();
    let id = twin["id"].as_u64().unwrap();
    twin["name"] = "twin".into();
    cats.push(twin);
    std::fs::write(&ann, serde_json::to_vec(&v).unwrap()).unwrap();
    let first = cats_name(&v, 0);
    for opts in [CocoOptions::TEST, CocoOptions::default()] {
        let err = match CocoDataset::open(&ann, tmp.path(), opts) {
            Ok(ds) => panic!("accepted, with {} classes", ds.num_classes()),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            err,
            format!("{}: category id {id}: the category id appears twice (`{first}` and `twin`)", ann.display())
        );
    }
}

fn cats_name(v: &Value, i: usize) -> String {
    v["categories"][i]["name"].as_str().unwrap().to_string()
}
