//! The built-in synthetic datasets, generated on first use: a path under `data/shapes_cls*` is
//! the shapes classification set (an ImageFolder), any other path under `data/shapes*` the
//! shapes detection set (COCO format). One rule for every command and config.

use anyhow::{Context, Result};
use nextdet_datasets::shapes;
use std::path::Path;
use std::sync::Mutex;

/// Which built-in set a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// `data/shapes_cls*`: the shapes ImageFolder.
    Classification,
    /// Other `data/shapes*` folders: the shapes COCO set.
    Detection,
}

/// The built-in dataset folder `path` lies in (a folder named `shapes*` directly inside a folder
/// named `data`), and which set it is.
pub fn builtin_root(path: &Path) -> Option<(&Path, Builtin)> {
    let mut dir = path;
    loop {
        let name = dir.file_name().and_then(|n| n.to_str())?;
        let parent = dir.parent()?;
        if name.starts_with("shapes") && parent.file_name().and_then(|n| n.to_str()) == Some("data") {
            let kind = if name.starts_with("shapes_cls") { Builtin::Classification } else { Builtin::Detection };
            return Some((dir, kind));
        }
        dir = parent;
    }
}

/// Generates the built-in set `path` lies in when it is missing (and checks a classification
/// set's generator version); does nothing for other paths. One thread of the process generates
/// at a time, so the ranks of a run in threads find the set their first rank made.
pub fn ensure_builtin(path: &Path) -> Result<()> {
    static GENERATING: Mutex<()> = Mutex::new(());
    let Some((root, kind)) = builtin_root(path) else { return Ok(()) };
    let _one_at_a_time = GENERATING.lock().unwrap_or_else(|e| e.into_inner());
    match kind {
        Builtin::Classification => shapes::ensure_classification(root).map(drop),
        Builtin::Detection => shapes::ensure_detection(root).map(drop),
    }
    .with_context(|| format!("generating the built-in shapes set in {}", root.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shapes_folders_under_data_are_builtin() {
        let p = Path::new("data/shapes/annotations/instances_train.json");
        assert_eq!(builtin_root(p), Some((Path::new("data/shapes"), Builtin::Detection)));
        let p = Path::new("./data/shapes_cls/train");
        assert_eq!(builtin_root(p), Some((Path::new("./data/shapes_cls"), Builtin::Classification)));
        let p = Path::new("/abs/data/shapes_big/val");
        assert_eq!(builtin_root(p), Some((Path::new("/abs/data/shapes_big"), Builtin::Detection)));
        assert_eq!(builtin_root(Path::new("data/coco/annotations/x.json")), None);
        assert_eq!(builtin_root(Path::new("shapes/train")), None);
        assert_eq!(builtin_root(Path::new("other/data2/shapes/train")), None);
    }
}
