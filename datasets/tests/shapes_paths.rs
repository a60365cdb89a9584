//! The shapes generators name the target path when it cannot hold a dataset: a file where the
//! folder should be, or (for `check_new_dir`, what `make-shapes` checks) a folder that is not
//! empty.

use nextdet_datasets::shapes::{
    check_new_dir, ensure_classification, ensure_detection, make_classification, make_detection,
};

#[test]
fn a_file_in_place_of_the_folder_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("shapes");
    std::fs::write(&file, b"not a folder").unwrap();
    let want = format!("{}: exists and is not a folder; give a new folder for the dataset", file.display());
    let errors = [
        make_detection(&file, 1, 1, 0).map(drop),
        make_classification(&file, 1, 1, 0).map(drop),
        ensure_detection(&file).map(drop),
        ensure_classification(&file).map(drop),
        check_new_dir(&file),
    ];
    for err in errors {
        assert_eq!(err.unwrap_err().to_string(), want);
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a folder", "the file is untouched");
}

#[test]
fn new_dir_check_accepts_absent_and_empty_folders_only() {
    let tmp = tempfile::tempdir().unwrap();
    check_new_dir(&tmp.path().join("absent")).unwrap();
    check_new_dir(tmp.path()).unwrap();
    std::fs::write(tmp.path().join("x"), b"").unwrap();
    let err = check_new_dir(tmp.path()).unwrap_err().to_string();
    assert_eq!(err, format!("{}: the folder exists and is not empty; give a new folder", tmp.path().display()));
}
