//! Property test of image decoding through the public API (`decode_rgb8`, and `load_rgb8` on a
//! file): thousands of mutated copies of a real PNG and a real JPEG decode to an image or give
//! an error, never a panic or an abort, with memory bounded by the input's size.
//! `NEXTDET_PROPTEST_CASES` sets the cases.

#[path = "../../tests/property/support.rs"]
mod support;

use nextdet_datasets::image_io::{decode_rgb8, load_rgb8};
use proptest::test_runner::TestRunner;
use std::cell::Cell;
use std::path::Path;
use support::{config, mutated, peak_during};

#[test]
fn mutated_images_decode_or_give_an_error() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/datasets");
    let dir = tempfile::tempdir().unwrap();
    let decoded = Cell::new(0);
    let worst = Cell::new((0usize, 0usize));
    for (name, cases) in [("small_37x23.png", 1000), ("small_29x41.jpg", 1000)] {
        let seed = std::fs::read(fixtures.join(name)).unwrap();
        let path = dir.path().join(name);
        let mut runner = TestRunner::new(config(cases));
        runner
            .run(&mutated(seed), |bytes| {
                let (result, peak) = peak_during(|| decode_rgb8(&bytes, &path).map(|im| im.as_raw().len()));
                if peak > worst.get().0 {
                    worst.set((peak, bytes.len()));
                }
                // The decoded image is part of the bound: a valid file may hold a large image of
                // few bytes. Everything else is bounded by the input.
                let out = result.as_ref().map_or(0, |&n| n);
                let bound = 64 * bytes.len() + 2 * out + (4 << 20);
                assert!(peak <= bound, "{name}: {peak} bytes held for a {}-byte input (bound {bound})", bytes.len());
                if result.is_ok() {
                    decoded.set(decoded.get() + 1);
                }
                std::fs::write(&path, &bytes).unwrap();
                let _ = load_rgb8(&path);
                Ok(())
            })
            .unwrap();
    }
    eprintln!(
        "{} of the mutated images decoded; the most memory held was {} bytes, for a {}-byte input",
        decoded.get(),
        worst.get().0,
        worst.get().1
    );
}
