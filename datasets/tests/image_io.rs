//! Decoding errors: missing, corrupt, truncated and unsupported files each name the file.

use std::fs;
use std::path::{Path, PathBuf};

use nextdet_datasets::{decode_rgb8, load_rgb8, EvalTransform, ImageIoError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/datasets").join(name)
}

fn assert_names(e: &ImageIoError, path: &Path) {
    assert_eq!(e.path(), path);
    assert!(e.to_string().contains(&*path.to_string_lossy()), "message does not name {}: {e}", path.display());
}

#[test]
fn decodes_fixtures() {
    let png = load_rgb8(fixture("small_37x23.png")).unwrap();
    assert_eq!((png.width(), png.height(), png.as_raw().len()), (37, 23, 37 * 23 * 3));
    let jpg = load_rgb8(fixture("medium_300x200.jpg")).unwrap();
    assert_eq!((jpg.width(), jpg.height()), (300, 200));
    // Content, not the extension, decides the format.
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("actually_png.jpg");
    fs::copy(fixture("small_37x23.png"), &renamed).unwrap();
    assert_eq!(load_rgb8(&renamed).unwrap(), png);
    // And the whole eval pipeline runs from a file.
    let out = EvalTransform::new(224).apply(&jpg).unwrap();
    assert_eq!(out.len(), 3 * 224 * 224);
}

#[test]
fn missing_file() {
    let path = PathBuf::from("/definitely/not/here/img.jpg");
    let e = load_rgb8(&path).unwrap_err();
    assert!(matches!(e, ImageIoError::NotFound { .. }), "{e:?}");
    assert_names(&e, &path);
}

#[test]
fn garbage_bytes_in_jpg() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.jpg");
    fs::write(&path, b"this is not an image at all, just some bytes \x00\x01\x02").unwrap();
    let e = load_rgb8(&path).unwrap_err();
    assert!(matches!(e, ImageIoError::Corrupt { .. }), "{e:?}");
    assert_names(&e, &path);

    let empty = dir.path().join("empty.png");
    fs::write(&empty, b"").unwrap();
    let e = load_rgb8(&empty).unwrap_err();
    assert!(matches!(e, ImageIoError::Corrupt { .. }), "{e:?}");
    assert_names(&e, &empty);

    // A JPEG header followed by garbage.
    let bad = dir.path().join("bad_header.jpeg");
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    bytes.extend_from_slice(&[0x42; 100]);
    fs::write(&bad, &bytes).unwrap();
    let e = load_rgb8(&bad).unwrap_err();
    assert!(matches!(e, ImageIoError::Corrupt { .. }), "{e:?}");
    assert_names(&e, &bad);
}

#[test]
fn truncated_jpeg_is_an_error() {
    let full = fs::read(fixture("medium_300x200.jpg")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Cut in the middle of the scan, right before the end-of-image marker, and in the header.
    for cut in [full.len() / 2, full.len() - 2, full.len() - 1, 300, 20] {
        let path = dir.path().join(format!("cut_{cut}.jpg"));
        fs::write(&path, &full[..cut]).unwrap();
        let e = load_rgb8(&path).unwrap_err();
        assert!(matches!(e, ImageIoError::Corrupt { .. }), "cut {cut}: {e:?}");
        assert_names(&e, &path);
        println!("cut at {cut}: {e}");
    }
    // Data after the end-of-image marker is fine.
    let mut extra = full.clone();
    extra.extend_from_slice(b"trailing bytes some writers append");
    assert!(decode_rgb8(&extra, "with_trailer.jpg").is_ok());
}

#[test]
fn truncated_png_is_an_error() {
    let full = fs::read(fixture("small_37x23.png")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.png");
    fs::write(&path, &full[..full.len() / 2]).unwrap();
    let e = load_rgb8(&path).unwrap_err();
    assert!(matches!(e, ImageIoError::Corrupt { .. }), "{e:?}");
    assert_names(&e, &path);
}

#[test]
fn unsupported_formats() {
    let dir = tempfile::tempdir().unwrap();
    // A GIF header: recognized, but not a supported format.
    let gif = dir.path().join("anim.gif");
    fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    let e = load_rgb8(&gif).unwrap_err();
    assert!(matches!(e, ImageIoError::Unsupported { .. }), "{e:?}");
    assert_names(&e, &gif);
    // Unrecognized content with an extension that names no image format.
    let txt = dir.path().join("notes.xyz");
    fs::write(&txt, b"hello").unwrap();
    let e = load_rgb8(&txt).unwrap_err();
    assert!(matches!(e, ImageIoError::Unsupported { .. }), "{e:?}");
    assert_names(&e, &txt);
}
