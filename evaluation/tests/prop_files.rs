//! Property test of the COCO file readers of `evaluate_files` (ground truth and results):
//! thousands of mutated copies of real files, byte mutations and structure-aware edits (a node
//! replaced by any JSON value, a member removed, an element duplicated), for boxes and masks.
//! Every one evaluates or gives an error, never a panic or an abort, with memory bounded by the
//! input's size. `NEXTDET_PROPTEST_CASES` sets the cases.

#[path = "../../tests/property/support.rs"]
mod support;

use nextdet_evaluation::{evaluate_files, IouType};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::cell::Cell;
use std::path::Path;
use support::{apply_json, bounded, config, json_edit, mutated};

/// Evaluates `gt` against `dt` (written to files), within 256 bytes per input byte plus 16 MiB
/// (the masks of the fixture's images, 640x427 at most, are decoded whole).
fn evaluate(dir: &Path, gt: &[u8], dt: &[u8], iou_type: IouType, ok: &Cell<usize>) {
    let (gt_path, dt_path) = (dir.join("gt.json"), dir.join("dt.json"));
    std::fs::write(&gt_path, gt).unwrap();
    std::fs::write(&dt_path, dt).unwrap();
    bounded("evaluate_files", gt.len() + dt.len(), 256, 16 << 20, || {
        if evaluate_files(&gt_path, &dt_path, iou_type).is_ok() {
            ok.set(ok.get() + 1);
        }
    });
}

#[test]
fn mutated_coco_files_evaluate_or_give_an_error() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/coco");
    let dir = tempfile::tempdir().unwrap();
    let read = |name: &str| std::fs::read(fixtures.join(name)).unwrap();
    let json = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).unwrap();
    let (gt, dt_bbox, dt_segm) = (read("gt.json"), read("dt_bbox.json"), read("dt_segm.json"));
    let ok = Cell::new(0);

    for (dt, iou_type) in [(&dt_bbox, IouType::Bbox), (&dt_segm, IouType::Segm)] {
        // Bytes of the results, then of the ground truth.
        let mut runner = TestRunner::new(config(150));
        runner
            .run(&mutated(dt.clone()), |bytes| {
                evaluate(dir.path(), &gt, &bytes, iou_type, &ok);
                Ok(())
            })
            .unwrap();
        let mut runner = TestRunner::new(config(150));
        runner
            .run(&mutated(gt.clone()), |bytes| {
                evaluate(dir.path(), &bytes, dt, iou_type, &ok);
                Ok(())
            })
            .unwrap();
        // Structure-aware edits of either file.
        let (gt_doc, dt_doc) = (json(&gt), json(dt));
        let edits = (prop::collection::vec(json_edit(), 1..4), any::<bool>());
        let mut runner = TestRunner::new(config(450));
        runner
            .run(&edits, |(edits, edit_gt)| {
                let (g, d) = if edit_gt {
                    (serde_json::to_vec(&apply_json(&gt_doc, &edits)).unwrap(), dt.clone())
                } else {
                    (gt.clone(), serde_json::to_vec(&apply_json(&dt_doc, &edits)).unwrap())
                };
                evaluate(dir.path(), &g, &d, iou_type, &ok);
                Ok(())
            })
            .unwrap();
    }
    eprintln!("{} of the mutated file pairs evaluated", ok.get());
}
