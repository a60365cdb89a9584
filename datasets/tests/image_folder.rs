//! `ImageFolder`: class discovery, ordering, labels and errors, on folders built in a temp dir.

use std::fs;
use std::path::Path;

use nextdet_datasets::{ImageFolder, ImageFolderError};

fn touch(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b"not decoded by open()").unwrap();
}

fn rel(ds: &ImageFolder, i: usize) -> (String, usize) {
    let (p, l) = ds.get(i).unwrap();
    let r = p.strip_prefix(ds.root()).unwrap().to_string_lossy().replace('\\', "/");
    (r, l)
}

#[test]
fn classes_and_samples_in_torchvision_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for f in [
        "zebra/b.png",
        "zebra/a.JPG",
        "zebra/c.txt", // not an image
        "zebra/noext",
        "Ant/x.webp",
        "Ant/10.jpeg",
        "Ant/2.bmp",
        "cat/sub/z.jpg",
        "cat/sub.d/y.jpg", // "cat/sub" sorts before "cat/sub.d" as a folder path
        "cat/a.PNG",
        "cat/m.Jpeg",
    ] {
        touch(&root.join(f));
    }
    fs::write(root.join("stray.jpg"), b"files at the root are not classes").unwrap();
    fs::create_dir_all(root.join("zebra/empty_sub")).unwrap();

    let ds = ImageFolder::open(root).unwrap();
    // Sorted by code point: upper case before lower case, as Python's sorted().
    assert_eq!(ds.classes(), ["Ant", "cat", "zebra"]);
    assert_eq!(ds.class_index("cat"), Some(1));
    assert_eq!(ds.class_index("dog"), None);
    let got: Vec<(String, usize)> = (0..ds.len()).map(|i| rel(&ds, i)).collect();
    let expected = [
        ("Ant/10.jpeg", 0),
        ("Ant/2.bmp", 0),
        ("Ant/x.webp", 0),
        ("cat/a.PNG", 1),
        ("cat/m.Jpeg", 1),
        ("cat/sub/z.jpg", 1),
        ("cat/sub.d/y.jpg", 1),
        ("zebra/a.JPG", 2),
        ("zebra/b.png", 2),
    ];
    let expected: Vec<(String, usize)> = expected.iter().map(|(p, l)| (p.to_string(), *l)).collect();
    assert_eq!(got, expected);
    assert_eq!(ds.len(), 9);
    assert!(!ds.is_empty());
    assert!(ds.get(9).is_none());
    assert_eq!(ds.samples().len(), 9);
}

#[test]
fn load_decodes_and_reports_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/datasets");
    fs::create_dir_all(dir.path().join("a")).unwrap();
    fs::copy(fixture.join("small_37x23.png"), dir.path().join("a/good.png")).unwrap();
    fs::write(dir.path().join("a/junk.jpg"), b"garbage").unwrap();
    let ds = ImageFolder::open(dir.path()).unwrap();
    let (img, label) = ds.load(0).unwrap().unwrap();
    assert_eq!((img.width(), img.height(), label), (37, 23, 0));
    let err = ds.load(1).unwrap().unwrap_err();
    assert!(err.to_string().contains("junk.jpg"), "{err}");
    assert!(ds.load(2).is_none());
}

#[test]
fn errors_name_the_folder() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("nope");
    let e = ImageFolder::open(&missing).unwrap_err();
    assert!(matches!(e, ImageFolderError::MissingRoot { .. }), "{e:?}");
    assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");

    let file = dir.path().join("file.txt");
    fs::write(&file, b"x").unwrap();
    let e = ImageFolder::open(&file).unwrap_err();
    assert!(matches!(e, ImageFolderError::NotADirectory { .. }), "{e:?}");
    assert!(e.to_string().contains("file.txt"), "{e}");

    let no_classes = dir.path().join("flat");
    touch(&no_classes.join("img.jpg"));
    let e = ImageFolder::open(&no_classes).unwrap_err();
    assert!(matches!(e, ImageFolderError::NoClasses { .. }), "{e:?}");
    assert!(e.to_string().contains("flat"), "{e}");

    let empty = dir.path().join("empty");
    touch(&empty.join("a/readme.txt"));
    fs::create_dir_all(empty.join("b/nested")).unwrap();
    let e = ImageFolder::open(&empty).unwrap_err();
    assert!(matches!(e, ImageFolderError::Empty { .. }), "{e:?}");
    assert!(e.to_string().contains("empty"), "{e}");

    let one_empty = dir.path().join("partial");
    touch(&one_empty.join("a/1.jpg"));
    fs::create_dir_all(one_empty.join("b")).unwrap();
    let e = ImageFolder::open(&one_empty).unwrap_err();
    assert!(matches!(e, ImageFolderError::EmptyClass { .. }), "{e:?}");
    let b = one_empty.join("b");
    assert!(e.to_string().contains(&*b.to_string_lossy()), "{e}");
}

#[cfg(unix)]
#[test]
fn symlinked_folders_are_followed_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    touch(&root.join("a/1.jpg"));
    touch(&dir.path().join("outside/2.png"));
    std::os::unix::fs::symlink(dir.path().join("outside"), root.join("a/link")).unwrap();
    // A loop back to the class folder must not recurse forever.
    std::os::unix::fs::symlink(root.join("a"), root.join("a/loop")).unwrap();
    let ds = ImageFolder::open(&root).unwrap();
    let got: Vec<String> = (0..ds.len()).map(|i| rel(&ds, i).0).collect();
    assert_eq!(got, ["a/1.jpg", "a/link/2.png"]);
}
