//! A classification dataset laid out as torchvision's `ImageFolder`: one sub-folder per class.
//!
//! ```text
//! root/dog/xxx.png
//! root/dog/nested/xxy.jpeg
//! root/cat/123.jpg
//! ```
//!
//! Class names are the sub-folder names sorted (by Unicode code point, as Python's `sorted`), and
//! labels are their indices in that order. Within a class, folders are walked recursively
//! (following symbolic links) and, as torchvision does, visited in sorted order of their path,
//! each folder's files in sorted order of their name. A file is an image when its extension is
//! `jpg`, `jpeg`, `png`, `bmp` or `webp`, in any case.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::image_io::{load_rgb8, ImageIoError, RgbImage};

/// Extensions (lower case, without the dot) that [`ImageFolder`] accepts as images.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

/// Why an [`ImageFolder`] could not be opened. Every variant names the folder.
#[derive(Debug, thiserror::Error)]
pub enum ImageFolderError {
    /// The root folder does not exist.
    #[error("dataset folder not found: {}", root.display())]
    MissingRoot {
        /// The root that was asked for.
        root: PathBuf,
    },
    /// The root exists but is not a folder.
    #[error("dataset root is not a folder: {}", root.display())]
    NotADirectory {
        /// The root that was asked for.
        root: PathBuf,
    },
    /// The root has no sub-folders, so there are no classes.
    #[error("no class folders in {}: expected one sub-folder per class", root.display())]
    NoClasses {
        /// The root folder.
        root: PathBuf,
    },
    /// A class folder holds no image files.
    #[error(
        "class folder {} holds no images (extensions: jpg, jpeg, png, bmp, webp)",
        folder.display()
    )]
    EmptyClass {
        /// The class's folder.
        folder: PathBuf,
    },
    /// There are class folders but not a single image in any of them.
    #[error("no images in dataset folder {} (extensions: jpg, jpeg, png, bmp, webp)", root.display())]
    Empty {
        /// The root folder.
        root: PathBuf,
    },
    /// A folder could not be listed.
    #[error("cannot read folder {}: {source}", folder.display())]
    Io {
        /// The folder being read.
        folder: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// An image-classification dataset read from a folder tree; see the module documentation.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
}

/// `true` if the file name has one of [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn io_err(folder: &Path) -> impl FnOnce(std::io::Error) -> ImageFolderError + '_ {
    move |source| ImageFolderError::Io { folder: folder.to_path_buf(), source }
}

/// Sorted `(sub-folder names, image file names)` of one folder. Entries that are neither (broken
/// links, sockets) are skipped; folder-ness follows symbolic links.
fn list_folder(folder: &Path) -> Result<(Vec<String>, Vec<String>), ImageFolderError> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(io_err(folder))? {
        let entry = entry.map_err(io_err(folder))?;
        let path = entry.path();
        // Names that are not valid Unicode cannot be sorted as Python sorts them; keep them in a
        // lossy form only for the ordering, the path itself stays exact.
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            dirs.push(name);
        } else if meta.is_file() && is_image_file(&path) {
            files.push(name);
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

/// All images under `class_dir`, in torchvision's order: folders by path, files by name.
fn walk_class(class_dir: &Path) -> Result<Vec<PathBuf>, ImageFolderError> {
    // (path string used for sorting, path, image file names)
    let mut folders: Vec<(String, PathBuf, Vec<String>)> = Vec::new();
    let mut stack = vec![class_dir.to_path_buf()];
    let mut seen = HashSet::new();
    while let Some(dir) = stack.pop() {
        // Following links can revisit a folder (or loop); visit each real folder once.
        let real = std::fs::canonicalize(&dir).map_err(io_err(&dir))?;
        if !seen.insert(real) {
            continue;
        }
        let (subdirs, files) = list_folder(&dir)?;
        stack.extend(subdirs.iter().map(|d| dir.join(d)));
        folders.push((dir.to_string_lossy().into_owned(), dir, files));
    }
    folders.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(folders.into_iter().flat_map(|(_, dir, files)| files.into_iter().map(move |f| dir.join(f))).collect())
}

impl ImageFolder {
    /// Scans `root`: classes from its sub-folders, samples from the images below each.
    ///
    /// Errors: the root is missing or not a folder, it has no sub-folders, a class folder has no
    /// images (torchvision refuses this too), or a folder cannot be read.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, ImageFolderError> {
        let root = root.as_ref().to_path_buf();
        let meta = match std::fs::metadata(&root) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ImageFolderError::MissingRoot { root }),
            Err(source) => return Err(ImageFolderError::Io { folder: root, source }),
        };
        if !meta.is_dir() {
            return Err(ImageFolderError::NotADirectory { root });
        }
        let (classes, _) = list_folder(&root)?;
        if classes.is_empty() {
            return Err(ImageFolderError::NoClasses { root });
        }
        let mut samples = Vec::new();
        let mut empty_class = None;
        for (label, class) in classes.iter().enumerate() {
            let folder = root.join(class);
            let images = walk_class(&folder)?;
            if images.is_empty() && empty_class.is_none() {
                empty_class = Some(folder);
            }
            samples.extend(images.into_iter().map(|p| (p, label)));
        }
        if samples.is_empty() {
            return Err(ImageFolderError::Empty { root });
        }
        if let Some(folder) = empty_class {
            return Err(ImageFolderError::EmptyClass { folder });
        }
        Ok(Self { root, classes, samples })
    }

    /// The root folder this dataset was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// `true` if there are no images (never the case for an opened dataset).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Class names; a label is an index into this list.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The label of a class name, if it is one.
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == name)
    }

    /// Path and label of image `i`; `None` if `i >= len()`.
    pub fn get(&self, i: usize) -> Option<(PathBuf, usize)> {
        self.samples.get(i).cloned()
    }

    /// All `(path, label)` pairs in dataset order.
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }

    /// Decodes image `i` to RGB and returns it with its label; `None` if `i >= len()`.
    pub fn load(&self, i: usize) -> Option<Result<(RgbImage, usize), ImageIoError>> {
        let (path, label) = self.samples.get(i)?;
        Some(load_rgb8(path).map(|img| (img, *label)))
    }
}
