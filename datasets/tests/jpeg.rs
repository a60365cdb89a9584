//! JPEG decoding compared with PIL and OpenCV (both libjpeg-turbo) on the fixtures written by
//! `tests/reference/make_jpeg_fixtures.py`: every decoded byte must be identical. Also the
//! rejected kinds, corrupt data, and the other formats staying on the `image` crate path.

use std::fs;
use std::path::{Path, PathBuf};

use nextdet_datasets::image_io::{apply_exif_orientation, decode_rgb8_with, load_rgb8_with, DecodeConvention};
use nextdet_datasets::{decode_rgb8, load_rgb8, ImageIoError, RgbImage};
use safetensors::{Dtype, SafeTensors};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/jpeg").join(name)
}

fn reference_bytes() -> Vec<u8> {
    let path = fixture("reference.safetensors");
    fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn image(st: &SafeTensors<'_>, key: &str) -> RgbImage {
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), Dtype::U8);
    let s = t.shape();
    assert_eq!(s.len(), 3);
    RgbImage::from_raw(s[1], s[0], t.data().to_vec()).unwrap()
}

/// The fixture names that have reference arrays under `prefix` (`pil.` or `cv2.`).
fn names(st: &SafeTensors<'_>, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = st.names().iter().filter_map(|n| n.strip_prefix(prefix).map(str::to_string)).collect();
    v.sort();
    v
}

/// Compares our decode of every fixture with the reference reader's; reports each mismatch.
fn check_all(prefix: &str, convention: DecodeConvention) {
    let bytes = reference_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let names = names(&st, prefix);
    // 20 kinds of file plus 8 EXIF orientations.
    assert_eq!(names.len(), 28, "{names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let path = fixture(&format!("{name}.jpg"));
        let ours = load_rgb8_with(&path, convention).unwrap_or_else(|e| panic!("{e}"));
        let want = image(&st, &format!("{prefix}{name}"));
        if (ours.width(), ours.height()) != (want.width(), want.height()) {
            failures.push(format!(
                "{name}: {}x{} instead of {}x{}",
                ours.width(),
                ours.height(),
                want.width(),
                want.height()
            ));
            continue;
        }
        let diffs: Vec<u8> = ours.as_raw().iter().zip(want.as_raw()).map(|(a, b)| a.abs_diff(*b)).collect();
        let n = diffs.iter().filter(|&&d| d != 0).count();
        if n != 0 {
            let max = diffs.iter().max().unwrap();
            failures.push(format!("{name}: {n} of {} values differ, by up to {max}", diffs.len()));
        }
    }
    println!("{} of {} fixtures decode identically to {prefix}", names.len() - failures.len(), names.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn identical_to_pil() {
    check_all("pil.", DecodeConvention::Pil);
}

#[test]
fn identical_to_opencv() {
    check_all("cv2.", DecodeConvention::OpenCv);
}

#[test]
fn default_functions_follow_pil() {
    let bytes = reference_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for name in ["exif_orientation_6", "cmyk", "ycc420"] {
        let path = fixture(&format!("{name}.jpg"));
        let want = image(&st, &format!("pil.{name}"));
        assert_eq!(load_rgb8(&path).unwrap(), want, "{name}");
        assert_eq!(decode_rgb8(&fs::read(&path).unwrap(), &path).unwrap(), want, "{name}");
    }
}

#[test]
fn exif_orientation_values_outside_1_to_8_change_nothing() {
    // The pixel layouts of orientations 2-8 are checked against OpenCV's decodes above.
    let data: Vec<u8> = (0..18u8).collect();
    let img = RgbImage::from_raw(3, 2, data).unwrap();
    for o in [0, 1, 9, 0xFFFF] {
        assert_eq!(apply_exif_orientation(&img, o), img, "orientation {o}");
    }
    for o in 5..=8 {
        let out = apply_exif_orientation(&img, o);
        assert_eq!((out.width(), out.height()), (2, 3), "orientation {o}");
    }
}

fn assert_names(e: &ImageIoError, path: &Path) {
    assert_eq!(e.path(), path);
    assert!(e.to_string().contains(&*path.to_string_lossy()), "message does not name {}: {e}", path.display());
}

#[test]
fn rejected_kinds_are_unsupported() {
    let bytes = reference_bytes();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("the reference has metadata");
    let rejected = meta.get("rejected").expect("metadata lists the rejected files");
    let mut n = 0;
    for name in rejected.split(',') {
        let path = fixture(&format!("{name}.jpg"));
        for convention in [DecodeConvention::Pil, DecodeConvention::OpenCv] {
            let e = load_rgb8_with(&path, convention).unwrap_err();
            assert!(matches!(e, ImageIoError::Unsupported { .. }), "{name}: {e:?}");
            assert_names(&e, &path);
            println!("{e}");
        }
        n += 1;
    }
    assert_eq!(n, 3);
}

/// Offset of the first byte of entropy-coded data (after the first SOS segment).
fn scan_start(data: &[u8]) -> usize {
    let mut i = 2;
    loop {
        assert_eq!(data[i], 0xFF);
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        if data[i + 1] == 0xDA {
            return i + 2 + len;
        }
        i += 2 + len;
    }
}

fn expect_corrupt(bytes: &[u8], name: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    for convention in [DecodeConvention::Pil, DecodeConvention::OpenCv] {
        let e = load_rgb8_with(&path, convention).unwrap_err();
        assert!(matches!(e, ImageIoError::Corrupt { .. }), "{name}: {e:?}");
        assert_names(&e, &path);
        assert!(e.to_string().contains(what), "{name}: {e}");
    }
    println!("{name}: {}", load_rgb8(&path).unwrap_err());
}

#[test]
fn corrupt_scans_are_errors() {
    let good = fs::read(fixture("ycc420.jpg")).unwrap();
    let start = scan_start(&good);
    let eoi = good.len() - 2;
    assert_eq!(&good[eoi..], &[0xFF, 0xD9]);

    // The scan's data cut in half, the end-of-image marker kept: the last blocks have no data.
    let mut cut = good[..start + (eoi - start) / 2].to_vec();
    cut.extend_from_slice(&[0xFF, 0xD9]);
    expect_corrupt(&cut, "short_scan.jpg", "ends before the last block");

    // All-ones bits (stuffed 0xFF bytes) are no Huffman code.
    let mut ones = good[..start].to_vec();
    for _ in 0..64 {
        ones.extend_from_slice(&[0xFF, 0x00]);
    }
    ones.extend_from_slice(&good[eoi..]);
    expect_corrupt(&ones, "bad_code.jpg", "bad Huffman code");

    // A restart marker out of sequence.
    let mut rst = fs::read(fixture("ycc420_optimized_restarts.jpg")).unwrap();
    let at = (scan_start(&rst)..rst.len() - 1).find(|&i| rst[i] == 0xFF && rst[i + 1] == 0xD0).unwrap();
    rst[at + 1] = 0xD3;
    expect_corrupt(&rst, "bad_restart.jpg", "restart marker RST0");

    // The same data decodes when intact (the cases above fail for the reason given).
    assert!(decode_rgb8(&good, "good.jpg").is_ok());
    assert!(decode_rgb8(&fs::read(fixture("ycc420_optimized_restarts.jpg")).unwrap(), "good.jpg").is_ok());
}

#[test]
fn damaged_files_never_panic() {
    // Every single-byte change of the header and the first part of the scan, of a baseline and
    // a progressive file: an image or an error naming the file, never a panic.
    for name in ["ycc420_optimized_restarts", "ycc422_progressive"] {
        let good = fs::read(fixture(&format!("{name}.jpg"))).unwrap();
        let end = (scan_start(&good) + 64).min(good.len());
        let (mut ok, mut err) = (0, 0);
        for i in 2..end {
            for value in [0x00, 0x01, 0x7F, 0xFF, good[i] ^ 0x10] {
                let mut bad = good.clone();
                bad[i] = value;
                match decode_rgb8_with(&bad, "damaged.jpg", DecodeConvention::OpenCv) {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        assert!(e.to_string().contains("damaged.jpg"), "{e}");
                        err += 1;
                    }
                }
            }
        }
        println!("{name}: {ok} damaged versions decode, {err} are errors");
        assert!(err > 0 && ok > 0);
    }
}

#[test]
fn repeated_decodes_are_identical() {
    // Decoders reuse per-thread buffers: sizes and kinds in turn, each compared with a first decode.
    let names = ["ycc444_progressive_restarts", "ycc420_1x1", "gray", "ycc411", "cmyk", "ycc440"];
    let first: Vec<RgbImage> = names.iter().map(|n| load_rgb8(fixture(&format!("{n}.jpg"))).unwrap()).collect();
    for _ in 0..2 {
        for (n, want) in names.iter().rev().zip(first.iter().rev()) {
            assert_eq!(&load_rgb8(fixture(&format!("{n}.jpg"))).unwrap(), want, "{n}");
        }
    }
}

#[test]
fn other_formats_stay_on_the_image_crate() {
    use image::ImageEncoder;
    let (w, h) = (13u32, 7u32);
    let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
    let want = RgbImage::from_raw(w as usize, h as usize, pixels.clone()).unwrap();
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(&pixels, w, h, image::ExtendedColorType::Rgb8).unwrap();
    let mut bmp = Vec::new();
    image::codecs::bmp::BmpEncoder::new(&mut bmp).write_image(&pixels, w, h, image::ExtendedColorType::Rgb8).unwrap();
    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
        .write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    for (bytes, name) in [(&png, "a.png"), (&bmp, "a.bmp"), (&webp, "a.webp")] {
        for convention in [DecodeConvention::Pil, DecodeConvention::OpenCv] {
            assert_eq!(decode_rgb8_with(bytes, name, convention).unwrap(), want, "{name} {convention:?}");
        }
    }
    // And the committed PNG fixture decodes the same under both conventions.
    let png_fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/datasets/small_37x23.png");
    assert_eq!(load_rgb8_with(&png_fixture, DecodeConvention::OpenCv).unwrap(), load_rgb8(&png_fixture).unwrap());
}
