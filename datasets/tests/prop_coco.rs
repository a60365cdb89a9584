//! Property test of the COCO annotation parser (`CocoDataset::open`, then `load` of every image):
//! thousands of mutated copies of a real annotation file, byte mutations and structure-aware
//! edits (a node replaced by any JSON value, a member removed, an element duplicated). Every one
//! opens or gives an error, never a panic or an abort, with memory bounded by the input's size
//! (the images themselves are the fixture's small PNGs). `NEXTDET_PROPTEST_CASES` sets the cases.

#[path = "../../tests/property/support.rs"]
mod support;

use nextdet_datasets::coco::{CocoDataset, CocoOptions};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::cell::Cell;
use std::path::Path;
use support::{apply_json, bounded, config, json_edit, mutated};

/// Opens the annotation file `bytes` and loads every image of it, within 64 bytes per input
/// byte plus 8 MiB (the decoded fixture images and their masks).
fn open_and_load(dir: &Path, bytes: &[u8], opened: &Cell<usize>) {
    let ann = dir.join("instances.json");
    std::fs::write(&ann, bytes).unwrap();
    bounded("CocoDataset", bytes.len(), 64, 8 << 20, || {
        for opts in [CocoOptions::TEST, CocoOptions::default()] {
            if let Ok(ds) = CocoDataset::open(&ann, dir, opts) {
                opened.set(opened.get() + 1);
                for i in 0..ds.len() {
                    let _ = ds.load(i);
                }
            }
        }
    });
}

#[test]
fn mutated_annotation_files_open_or_give_an_error() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/coco_dataset");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let seed = std::fs::read(fixtures.join("instances.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&seed).unwrap();
    let opened = Cell::new(0);

    let mut runner = TestRunner::new(config(1000));
    runner
        .run(&mutated(seed), |bytes| {
            open_and_load(dir.path(), &bytes, &opened);
            Ok(())
        })
        .unwrap();

    let mut runner = TestRunner::new(config(3000));
    runner
        .run(&prop::collection::vec(json_edit(), 1..4), |edits| {
            let bytes = serde_json::to_vec(&apply_json(&doc, &edits)).unwrap();
            open_and_load(dir.path(), &bytes, &opened);
            Ok(())
        })
        .unwrap();
    eprintln!("{} of the mutated annotation files opened", opened.get());
}
