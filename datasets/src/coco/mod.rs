//! COCO-format instance datasets, read with mmdetection 2.11's rules.
//!
//! [`CocoDataset::open`] parses an annotation file (`images`, `annotations`, `categories`) and
//! keeps, per image, what mmdetection's `CocoDataset._parse_ann_info` keeps:
//!
//! - annotations with a true `ignore` flag are dropped;
//! - so are boxes that do not overlap the image (`inter_w * inter_h == 0`), `area <= 0`,
//!   `w < 1` or `h < 1`, and unknown categories;
//! - boxes become `[x, y, x + w, y + h]` (no +1); `iscrowd` ones go to the ignore boxes.
//!
//! Categories sorted by id get the contiguous labels `0..K`. Images keep the file's order. With
//! [`CocoOptions::filter_empty_gt`] (training), images are filtered as mmdetection's
//! `_filter_imgs`: an image stays if at least one annotation of a known category refers to it
//! (any annotation: crowd, ignored or degenerate ones count too, as in mmdetection) and its
//! shorter side is at least [`CocoOptions::min_size`].
//!
//! Masks are full-image bitmaps: polygons are rasterized as pycocotools does
//! ([`nextdet_evaluation::polygons_to_mask`]) and RLEs (uncompressed `counts: [..]` or the
//! compressed string form) are decoded column-major, as mmdetection's `LoadAnnotations` with
//! `poly2mask=True`. The structure of every kept annotation is checked when the dataset is
//! opened, so a broken file fails at start, not hours into training.

mod json;
mod segmentation;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::image_io::{load_rgb8_with, DecodeConvention, ImageIoError};
use crate::sample::{Bitmap, DetSample, ImageMeta};
use json::RawFile;
use segmentation::check_segmentation;
pub use segmentation::Segmentation;

/// How a [`CocoDataset`] reads its annotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CocoOptions {
    /// Decode instance masks in [`CocoDataset::load`] (and check segmentations when opening).
    pub with_masks: bool,
    /// Drop images without annotations of a known category and images smaller than
    /// `min_size` (mmdetection does this for training sets).
    pub filter_empty_gt: bool,
    /// With `filter_empty_gt`, images whose shorter side is below this are dropped (mmdetection
    /// uses 32).
    pub min_size: usize,
}

impl CocoOptions {
    /// Training: masks, empty images and images under 32 px filtered out (mmdetection's defaults).
    pub const TRAIN: Self = Self { with_masks: true, filter_empty_gt: true, min_size: 32 };
    /// Evaluation: masks, every image kept.
    pub const TEST: Self = Self { with_masks: true, filter_empty_gt: false, min_size: 0 };
}

impl Default for CocoOptions {
    /// [`CocoOptions::TEST`]: nothing is filtered out.
    fn default() -> Self {
        Self::TEST
    }
}

/// Why a COCO dataset could not be opened or an image could not be loaded. Every variant names
/// the annotation file or the image file, and the item (annotation id, image id).
#[derive(Debug, thiserror::Error)]
pub enum CocoError {
    /// The annotation file could not be read.
    #[error("cannot read COCO annotation file {}: {source}", path.display())]
    Io {
        /// The annotation file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The annotation file is not valid JSON or does not have COCO's structure.
    #[error("malformed COCO annotation file {} at line {line}, column {column}: {message}", path.display())]
    Json {
        /// The annotation file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// An image entry is invalid (duplicate id, empty size).
    #[error("{}: image id {image_id}: {reason}", ann_file.display())]
    InvalidImage {
        /// The annotation file.
        ann_file: PathBuf,
        /// The image's id.
        image_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// A category entry is invalid (its id appears twice, so labels would be ambiguous).
    #[error("{}: category id {category_id}: {reason}", ann_file.display())]
    InvalidCategory {
        /// The annotation file.
        ann_file: PathBuf,
        /// The category's id.
        category_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// An annotation is invalid (box arity, missing area, bad polygon or RLE).
    #[error("{}: annotation id {ann_id} (image id {image_id}): {reason}", ann_file.display())]
    InvalidAnnotation {
        /// The annotation file.
        ann_file: PathBuf,
        /// The annotation's id.
        ann_id: u64,
        /// The image it belongs to.
        image_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file has no categories, no images, or none are left after filtering.
    #[error("empty COCO dataset {}: {reason}", ann_file.display())]
    Empty {
        /// The annotation file.
        ann_file: PathBuf,
        /// Why it is empty.
        reason: String,
    },
    /// Image files listed in the annotation file do not exist.
    #[error(
        "{count} image file(s) listed in {} are missing, the first: {} (image id {image_id})",
        ann_file.display(),
        first.display()
    )]
    MissingImages {
        /// The annotation file.
        ann_file: PathBuf,
        /// How many are missing.
        count: usize,
        /// The first missing file.
        first: PathBuf,
        /// The id of that image.
        image_id: u64,
    },
    /// An image file could not be decoded.
    #[error("image id {image_id}: {source}")]
    Image {
        /// The image's id.
        image_id: u64,
        /// The decoding error (names the file).
        #[source]
        source: ImageIoError,
    },
    /// The decoded image does not have the size the annotation file says.
    #[error(
        "image {} (image id {image_id}) is {actual_w}x{actual_h} (w x h) but {} says {json_w}x{json_h}",
        file.display(),
        ann_file.display()
    )]
    SizeMismatch {
        /// The image file.
        file: PathBuf,
        /// The annotation file.
        ann_file: PathBuf,
        /// The image's id.
        image_id: u64,
        /// Width in the annotation file.
        json_w: usize,
        /// Height in the annotation file.
        json_h: usize,
        /// Decoded width.
        actual_w: usize,
        /// Decoded height.
        actual_h: usize,
    },
    /// `load` was asked for an index past the end.
    #[error("image index {index} is out of range for {} ({len} images)", ann_file.display())]
    OutOfRange {
        /// The annotation file.
        ann_file: PathBuf,
        /// The index asked for.
        index: usize,
        /// The dataset's length.
        len: usize,
    },
}

/// One image of the dataset, as the annotation file describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// COCO `id`.
    pub id: u64,
    /// `file_name` as written in the annotation file.
    pub file_name: String,
    /// The image directory joined with `file_name`.
    pub path: PathBuf,
    /// `width` in the annotation file.
    pub width: usize,
    /// `height` in the annotation file.
    pub height: usize,
}

/// A kept, non-crowd object of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoObject {
    /// COCO annotation `id`.
    pub ann_id: u64,
    /// `[x, y, x + w, y + h]`.
    pub bbox: [f32; 4],
    /// Contiguous label.
    pub label: usize,
    /// The segmentation (`None` when masks are not loaded).
    pub segmentation: Option<Segmentation>,
}

/// The parsed ground truth of one image (what mmdetection's `get_ann_info` returns).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageAnnotations {
    /// Kept non-crowd objects, in the annotation file's order.
    pub objects: Vec<CocoObject>,
    /// Boxes `[x1, y1, x2, y2]` of kept crowd annotations (`gt_bboxes_ignore`).
    pub ignore_boxes: Vec<[f32; 4]>,
}

/// A COCO-format detection / instance segmentation dataset; see the module documentation.
#[derive(Clone, Debug)]
pub struct CocoDataset {
    ann_file: PathBuf,
    options: CocoOptions,
    cat_ids: Vec<u64>,
    class_names: Vec<String>,
    images: Vec<ImageInfo>,
    annotations: Vec<ImageAnnotations>,
}

impl CocoDataset {
    /// Reads and checks the annotation file; images are looked up under `img_dir` (nothing is
    /// decoded here; see [`CocoDataset::validate_all`] to check the image files exist).
    pub fn open(ann_file: &Path, img_dir: &Path, options: CocoOptions) -> Result<Self, CocoError> {
        let ann_path = ann_file.to_path_buf();
        let text = std::fs::read(ann_file).map_err(|source| CocoError::Io { path: ann_path.clone(), source })?;
        let raw: RawFile = serde_json::from_slice(&text).map_err(|e| CocoError::Json {
            path: ann_path.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        drop(text);
        let empty = |reason: &str| CocoError::Empty { ann_file: ann_path.clone(), reason: reason.into() };
        if raw.categories.is_empty() {
            return Err(empty("the file lists no categories"));
        }
        if raw.images.is_empty() {
            return Err(empty("the file lists no images"));
        }

        let mut cats: Vec<(u64, String)> = raw.categories.into_iter().map(|c| (c.id, c.name)).collect();
        cats.sort_by_key(|c| c.0);
        if let Some(pair) = cats.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(CocoError::InvalidCategory {
                ann_file: ann_path.clone(),
                category_id: pair[0].0,
                reason: format!("the category id appears twice (`{}` and `{}`)", pair[0].1, pair[1].1),
            });
        }
        let cat2label: HashMap<u64, usize> = cats.iter().enumerate().map(|(l, c)| (c.0, l)).collect();

        let mut index_of: HashMap<u64, usize> = HashMap::with_capacity(raw.images.len());
        let mut images = Vec::with_capacity(raw.images.len());
        for (i, im) in raw.images.into_iter().enumerate() {
            if index_of.insert(im.id, i).is_some() {
                return Err(CocoError::InvalidImage {
                    ann_file: ann_path.clone(),
                    image_id: im.id,
                    reason: "the image id appears twice".into(),
                });
            }
            if im.width == 0 || im.height == 0 {
                return Err(CocoError::InvalidImage {
                    ann_file: ann_path.clone(),
                    image_id: im.id,
                    reason: format!("image {} has an empty size {}x{}", im.file_name, im.width, im.height),
                });
            }
            images.push(ImageInfo {
                id: im.id,
                path: img_dir.join(&im.file_name),
                file_name: im.file_name,
                width: im.width,
                height: im.height,
            });
        }

        let mut annotations = vec![ImageAnnotations { objects: Vec::new(), ignore_boxes: Vec::new() }; images.len()];
        // mmdetection's `ids_in_cat & ids_with_ann`: images with an annotation of a known category.
        let mut has_known_cat = vec![false; images.len()];
        let mut seen_ann_ids = HashSet::with_capacity(raw.annotations.len());
        for ann in raw.annotations {
            // Annotations of images not in the file are never looked at (as pycocotools' index).
            let Some(&img_idx) = index_of.get(&ann.image_id) else { continue };
            let bad = |reason: String| CocoError::InvalidAnnotation {
                ann_file: ann_path.clone(),
                ann_id: ann.id,
                image_id: ann.image_id,
                reason,
            };
            if !seen_ann_ids.insert(ann.id) {
                return Err(bad("the annotation id appears twice".into()));
            }
            if cat2label.contains_key(&ann.category_id) {
                has_known_cat[img_idx] = true;
            }
            if ann.ignore {
                continue;
            }
            let info = &images[img_idx];
            let &[x1, y1, w, h] = ann.bbox.as_slice() else {
                return Err(bad(format!("bbox has {} numbers; [x, y, w, h] has 4", ann.bbox.len())));
            };
            let inter_w = (x1 + w).min(info.width as f64) - x1.max(0.0);
            let inter_h = (y1 + h).min(info.height as f64) - y1.max(0.0);
            if inter_w.max(0.0) * inter_h.max(0.0) == 0.0 {
                continue;
            }
            let Some(area) = ann.area else {
                return Err(bad("the annotation has no `area`".into()));
            };
            if area <= 0.0 || w < 1.0 || h < 1.0 {
                continue;
            }
            let Some(&label) = cat2label.get(&ann.category_id) else { continue };
            let bbox = [x1 as f32, y1 as f32, (x1 + w) as f32, (y1 + h) as f32];
            if ann.iscrowd {
                annotations[img_idx].ignore_boxes.push(bbox);
                continue;
            }
            let segmentation = if options.with_masks {
                let segm = ann.segmentation.as_ref().ok_or_else(|| bad("the annotation has no segmentation".into()))?;
                Some(check_segmentation(segm, info).map_err(bad)?)
            } else {
                None
            };
            annotations[img_idx].objects.push(CocoObject { ann_id: ann.id, bbox, label, segmentation });
        }

        if options.filter_empty_gt {
            let keep: Vec<bool> = images
                .iter()
                .zip(&has_known_cat)
                .map(|(im, &known)| known && im.width.min(im.height) >= options.min_size)
                .collect();
            let mut k = keep.iter();
            images.retain(|_| *k.next().unwrap_or(&false));
            let mut k = keep.iter();
            annotations.retain(|_| *k.next().unwrap_or(&false));
            if images.is_empty() {
                return Err(empty(&format!(
                    "no image is left after filtering (images need an annotation of a listed category \
                     and a shorter side of at least {} px)",
                    options.min_size
                )));
            }
        }

        Ok(Self {
            ann_file: ann_path,
            options,
            cat_ids: cats.iter().map(|c| c.0).collect(),
            class_names: cats.into_iter().map(|c| c.1).collect(),
            images,
            annotations,
        })
    }

    /// The annotation file this dataset was read from.
    pub fn ann_file(&self) -> &Path {
        &self.ann_file
    }

    /// The options it was opened with.
    pub fn options(&self) -> CocoOptions {
        self.options
    }

    /// Number of images (after filtering).
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// `true` if there are no images (never the case for an opened dataset).
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Number of categories (labels are `0..num_classes()`).
    pub fn num_classes(&self) -> usize {
        self.cat_ids.len()
    }

    /// COCO category ids in label order (sorted ascending).
    pub fn cat_ids(&self) -> &[u64] {
        &self.cat_ids
    }

    /// Category names in label order.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The COCO category id of a contiguous label (for writing results).
    pub fn label_to_cat_id(&self, label: usize) -> Option<u64> {
        self.cat_ids.get(label).copied()
    }

    /// The contiguous label of a COCO category id.
    pub fn cat_id_to_label(&self, cat_id: u64) -> Option<usize> {
        self.cat_ids.binary_search(&cat_id).ok()
    }

    /// Id, file and size of image `i`; `None` if `i >= len()`.
    pub fn image_info(&self, i: usize) -> Option<&ImageInfo> {
        self.images.get(i)
    }

    /// All images in dataset order.
    pub fn images(&self) -> &[ImageInfo] {
        &self.images
    }

    /// The parsed ground truth of image `i` (no decoding); `None` if `i >= len()`.
    pub fn annotations(&self, i: usize) -> Option<&ImageAnnotations> {
        self.annotations.get(i)
    }

    /// mmdetection's group flag per image: 1 if `width / height > 1`, else 0. Batches are drawn
    /// from one group so that padded images have similar shapes.
    pub fn aspect_ratio_flags(&self) -> Vec<u8> {
        self.images.iter().map(|im| (im.width as f64 / im.height as f64 > 1.0) as u8).collect()
    }

    /// Checks that every image file exists (existence only, cheap), so that a run fails at its
    /// start rather than when it reaches a missing file.
    pub fn validate_all(&self) -> Result<(), CocoError> {
        let missing: Vec<&ImageInfo> = self.images.iter().filter(|im| !im.path.is_file()).collect();
        match missing.first() {
            None => Ok(()),
            Some(first) => Err(CocoError::MissingImages {
                ann_file: self.ann_file.clone(),
                count: missing.len(),
                first: first.path.clone(),
                image_id: first.id,
            }),
        }
    }

    /// The full-image masks of image `i`'s objects, in the order of its boxes (empty without
    /// `with_masks`).
    pub fn masks(&self, i: usize) -> Result<Vec<Bitmap>, CocoError> {
        let info = self.info_or_err(i)?;
        let mut masks = Vec::new();
        for obj in &self.annotations[i].objects {
            let Some(segm) = &obj.segmentation else { continue };
            let bad = |reason: String| CocoError::InvalidAnnotation {
                ann_file: self.ann_file.clone(),
                ann_id: obj.ann_id,
                image_id: info.id,
                reason,
            };
            masks.push(segm.to_bitmap(info).map_err(bad)?);
        }
        Ok(masks)
    }

    /// Decodes image `i` and returns it with its boxes, labels, masks and crowd boxes.
    ///
    /// Errors: a missing, unreadable or corrupt image, or one whose size differs from the
    /// annotation file's.
    pub fn load(&self, i: usize) -> Result<DetSample, CocoError> {
        let info = self.info_or_err(i)?;
        // decoded as mmdetection reads images (cv2: a JPEG's EXIF orientation applied)
        let image = load_rgb8_with(&info.path, DecodeConvention::OpenCv)
            .map_err(|source| CocoError::Image { image_id: info.id, source })?;
        if image.width() != info.width || image.height() != info.height {
            return Err(CocoError::SizeMismatch {
                file: info.path.clone(),
                ann_file: self.ann_file.clone(),
                image_id: info.id,
                json_w: info.width,
                json_h: info.height,
                actual_w: image.width(),
                actual_h: image.height(),
            });
        }
        let ann = &self.annotations[i];
        Ok(DetSample {
            image,
            boxes: ann.objects.iter().map(|o| o.bbox).collect(),
            labels: ann.objects.iter().map(|o| o.label).collect(),
            masks: self.masks(i)?,
            ignore_boxes: ann.ignore_boxes.clone(),
            meta: ImageMeta::new(info.id, info.path.clone(), (info.height, info.width)),
        })
    }

    fn info_or_err(&self, i: usize) -> Result<&ImageInfo, CocoError> {
        self.images.get(i).ok_or_else(|| CocoError::OutOfRange {
            ann_file: self.ann_file.clone(),
            index: i,
            len: self.images.len(),
        })
    }
}
