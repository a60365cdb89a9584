//! Property test of the checkpoint readers (`weights::read_checkpoint`): thousands of mutated
//! copies of a `.pth` torch wrote and of a safetensors file, whole-file byte mutations and
//! mutations of the pickle and the storages inside a well-formed archive (so that the zip layer's
//! checksums do not reject them first). Every one gives tensors or an error, never a panic or an
//! abort, with memory bounded by the input's size. `NEXTDET_PROPTEST_CASES` sets the cases.

#[path = "../../tests/property/support.rs"]
mod support;

use nextdet_backbones::weights::read_checkpoint;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::io::{Read, Write};
use std::path::Path;
use support::{apply, bounded, config, mutated, mutation};

fn fixture(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel)
}

/// The entries of a zip archive, in order.
fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().to_string(), data)
        })
        .collect()
}

fn write_zip(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

/// Reads `bytes` as a checkpoint file: an error or tensors, within 64 bytes per input byte plus
/// 4 MiB. Counts the files read without an error in `ok`.
fn read(path: &Path, bytes: &[u8], ok: &std::cell::Cell<usize>) {
    std::fs::write(path, bytes).unwrap();
    bounded("read_checkpoint", bytes.len(), 64, 4 << 20, || {
        if read_checkpoint(path).is_ok() {
            ok.set(ok.get() + 1);
        }
    });
}

#[test]
fn mutated_checkpoints_give_tensors_or_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::cell::Cell::new(0);
    let pth_seed = std::fs::read(fixture("checkpoints/dtypes_views.pth")).unwrap();
    let parts = entries(&fixture("checkpoints/dtypes_views.pth"));

    // The .pth as a whole file.
    let path = dir.path().join("m.pth");
    let mut runner = TestRunner::new(config(600));
    runner
        .run(&mutated(pth_seed), |bytes| {
            read(&path, &bytes, &ok);
            Ok(())
        })
        .unwrap();

    // The pickle and the storages of a well-formed archive.
    let pkl = parts.iter().position(|(n, _)| n.ends_with("data.pkl")).unwrap();
    let strategy = (prop::collection::vec(mutation(), 1..8), prop::collection::vec((any::<usize>(), 0usize..64), 0..3));
    let path = dir.path().join("s.pth");
    let mut runner = TestRunner::new(config(1000));
    runner
        .run(&strategy, |(pickle_edits, storage_edits)| {
            let mut parts = parts.clone();
            parts[pkl].1 = apply(&parts[pkl].1, &pickle_edits);
            for (which, len) in storage_edits {
                let n = parts.len();
                let data = &mut parts[which % n].1;
                data.resize(len.min(data.len() + 8), 0xff);
            }
            write_zip(&path, &parts);
            let bytes = std::fs::read(&path).unwrap();
            read(&path, &bytes, &ok);
            Ok(())
        })
        .unwrap();

    // A safetensors file with a header, metadata and tensors of several types.
    let seed_path = dir.path().join("seed.safetensors");
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = [
        ("a", candle_core::Tensor::arange(0f32, 24., &candle_core::Device::Cpu).unwrap().reshape((2, 3, 4)).unwrap()),
        ("b", candle_core::Tensor::new(&[1i64, -2, 3], &candle_core::Device::Cpu).unwrap()),
        ("c", candle_core::Tensor::new(&[0.5f64], &candle_core::Device::Cpu).unwrap()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    candle_core::safetensors::save(&tensors, &seed_path).unwrap();
    let path = dir.path().join("m.safetensors");
    let mut runner = TestRunner::new(config(600));
    runner
        .run(&mutated(std::fs::read(&seed_path).unwrap()), |bytes| {
            read(&path, &bytes, &ok);
            Ok(())
        })
        .unwrap();
    eprintln!("{} of the mutated checkpoints read without an error", ok.get());
}
