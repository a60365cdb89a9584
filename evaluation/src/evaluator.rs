//! COCO evaluation of detections held in memory, as mmdetection 2.11's `CocoDataset` does it
//! (`mmdet/datasets/coco.py`): results formatted by `_det2json` / `_segm2json`, evaluated by
//! pycocotools with `maxDets = [100, 300, 1000]` over every ground-truth image and category.
//!
//! Feed a [`CocoEvaluator`] the [`Detections`] of each image, then [`CocoEvaluator::evaluate`];
//! [`CocoEvaluator::write_results`] writes the same `<prefix>.bbox.json` / `<prefix>.segm.json`
//! files as mmdetection's `format_results`, for pycocotools or the COCO server.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::coco::{run_cocoeval, CocoStats, EvalError, IouType, MMDET_MAX_DETS};
use crate::detections::Detections;
use nextdet_structures::Rle;

/// One detection in COCO results form.
#[derive(Clone, Debug)]
struct Entry {
    /// `[x1, y1, x2 - x1, y2 - y1]` from the `f32` box, the differences taken in `f64` as
    /// mmdetection's `xyxy2xywh` does on `ndarray.tolist()` values.
    bbox: [f64; 4],
    /// The box score widened to `f64` (also the mask score, as mmdetection 2.11 uses it).
    score: f64,
    /// The ground-truth category id of the label.
    category_id: u64,
    /// The mask's compressed RLE `counts`, when the detector gave masks.
    counts: Option<String>,
}

/// Collects detections image by image and evaluates them against a COCO ground truth as
/// mmdetection 2.11 does.
///
/// Contiguous label `l` is category `cat_ids()[l]`, the ground truth's category ids in ascending
/// order: mmdetection's `cat_ids` for COCO (whose `categories` list is sorted) and the label order
/// of `nextdet_datasets::CocoDataset`. Every ground-truth image is evaluated, with or without
/// detections.
pub struct CocoEvaluator {
    gt_path: PathBuf,
    gt: Arc<hotcoco::COCO>,
    iou_types: Vec<IouType>,
    cat_ids: Vec<u64>,
    /// `(height, width)` and position in the ground truth of each image id.
    images: HashMap<u64, (u32, u32, usize)>,
    /// Per ground-truth image position, the detections added for it (grouped by label).
    entries: Vec<Option<Vec<Entry>>>,
}

impl CocoEvaluator {
    /// Reads the COCO ground truth once and prepares to evaluate `iou_types` (boxes and/or
    /// masks). With [`IouType::Segm`] every added image must carry masks.
    ///
    /// # Errors
    ///
    /// [`EvalError::GroundTruth`], naming the file, when it is missing or malformed, and
    /// [`EvalError::InvalidGroundTruth`] when pycocotools would refuse it; duplicate annotation
    /// ids count as pycocotools counts them.
    pub fn new(gt_ann_file: &Path, iou_types: &[IouType]) -> Result<Self, EvalError> {
        let gt = crate::coco_input::load_ground_truth(gt_ann_file, iou_types)?.coco;
        let mut cat_ids: Vec<u64> = gt.dataset.categories.iter().map(|c| c.id).collect();
        cat_ids.sort_unstable();
        let images =
            gt.dataset.images.iter().enumerate().map(|(pos, im)| (im.id, (im.height, im.width, pos))).collect();
        let entries = vec![None; gt.dataset.images.len()];
        let mut types = Vec::new();
        for &t in iou_types {
            if !types.contains(&t) {
                types.push(t);
            }
        }
        Ok(CocoEvaluator {
            gt_path: gt_ann_file.to_path_buf(),
            gt: Arc::new(gt),
            iou_types: types,
            cat_ids,
            images,
            entries,
        })
    }

    /// The category id of each contiguous label (ascending).
    pub fn cat_ids(&self) -> &[u64] {
        &self.cat_ids
    }

    /// The number of categories, i.e. of valid labels.
    pub fn num_classes(&self) -> usize {
        self.cat_ids.len()
    }

    /// The image ids of the ground truth, in its order (the order results are written in).
    pub fn image_ids(&self) -> Vec<u64> {
        self.gt.dataset.images.iter().map(|im| im.id).collect()
    }

    /// How many images have detections added so far.
    pub fn num_added(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    /// Adds the detections of one image, converted to COCO results (boxes to `xywh`, labels to
    /// category ids, masks compressed). Within the image they are ordered by label, keeping the
    /// given order inside a label, as mmdetection's per-class result lists are.
    ///
    /// # Errors
    ///
    /// [`EvalError::LabelOutOfRange`] for a label without a category,
    /// [`EvalError::UnknownImage`] for an image not in the ground truth,
    /// [`EvalError::DuplicateImage`] when the image was already added, and
    /// [`EvalError::BadDetections`] for lists of different lengths, a non-finite box or score,
    /// missing masks when masks are evaluated, or a mask that does not match the image size.
    pub fn add(&mut self, dets: &Detections) -> Result<(), EvalError> {
        let image_id = dets.image_id;
        let &(height, width, pos) =
            self.images.get(&image_id).ok_or_else(|| EvalError::UnknownImage { image_id, gt: self.gt_path.clone() })?;
        if self.entries[pos].is_some() {
            return Err(EvalError::DuplicateImage { image_id });
        }
        let bad = |reason: String| EvalError::BadDetections { image_id, reason };
        let n = dets.boxes.len();
        if dets.scores.len() != n || dets.labels.len() != n {
            return Err(bad(format!(
                "{n} boxes, {} scores and {} labels; they must be equally many",
                dets.scores.len(),
                dets.labels.len()
            )));
        }
        let masks = dets.masks.as_deref();
        match masks {
            Some(m) if m.len() != n => return Err(bad(format!("{n} boxes but {} masks", m.len()))),
            None if n > 0 && self.iou_types.contains(&IouType::Segm) => {
                return Err(bad("mask (segm) evaluation needs masks, but the detections have none".into()))
            }
            _ => {}
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| dets.labels[i]);
        let mut entries = Vec::with_capacity(n);
        for i in order {
            let label = dets.labels[i];
            let category_id = *self.cat_ids.get(label).ok_or(EvalError::LabelOutOfRange {
                image_id,
                index: i,
                label,
                num_classes: self.cat_ids.len(),
            })?;
            let b = dets.boxes[i];
            if b.iter().any(|v| !v.is_finite()) || !dets.scores[i].is_finite() {
                return Err(bad(format!("detection {i} has a non-finite box or score")));
            }
            let (x1, y1, x2, y2) = (f64::from(b[0]), f64::from(b[1]), f64::from(b[2]), f64::from(b[3]));
            let counts = match masks {
                Some(m) => Some(mask_counts(&m[i], height, width).map_err(|e| bad(format!("mask {i}: {e}")))?),
                None => None,
            };
            entries.push(Entry {
                bbox: [x1, y1, x2 - x1, y2 - y1],
                score: f64::from(dets.scores[i]),
                category_id,
                counts,
            });
        }
        self.entries[pos] = Some(entries);
        Ok(())
    }

    /// Adds the detections of several images; see [`add`](Self::add).
    pub fn extend<'a>(&mut self, dets: impl IntoIterator<Item = &'a Detections>) -> Result<(), EvalError> {
        dets.into_iter().try_for_each(|d| self.add(d))
    }

    /// The detections of the ground truth's images in order, paired with their image id.
    fn added(&self) -> impl Iterator<Item = (u64, &Entry)> + '_ {
        self.gt
            .dataset
            .images
            .iter()
            .zip(&self.entries)
            .filter_map(|(im, e)| e.as_ref().map(|e| (im, e)))
            .flat_map(|(im, e)| e.iter().map(move |entry| (im.id, entry)))
    }

    /// The results list mmdetection 2.11 writes for `iou_type`: for boxes
    /// `{image_id, bbox: [x, y, w, h], score, category_id}`; for masks the same (the box is
    /// kept) plus `segmentation: {size: [h, w], counts}` in compressed RLE. Detections without
    /// masks are left out of the mask list.
    pub fn results_json(&self, iou_type: IouType) -> serde_json::Value {
        let list = self
            .added()
            .filter_map(|(image_id, e)| {
                let mut item =
                    json!({"image_id": image_id, "bbox": e.bbox, "score": e.score, "category_id": e.category_id});
                if iou_type == IouType::Segm {
                    let (h, w) = self.image_size(image_id);
                    item["segmentation"] = json!({"size": [h, w], "counts": e.counts.as_ref()?});
                }
                Some(item)
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// Writes `<prefix>.bbox.json`, and `<prefix>.segm.json` when masks are evaluated, as
    /// mmdetection's `format_results(results, jsonfile_prefix)` does (creating the prefix's folder
    /// when missing), and returns the files written.
    ///
    /// # Errors
    ///
    /// [`EvalError::Write`] naming the file that could not be written.
    pub fn write_results(&self, path_prefix: &Path) -> Result<Vec<(IouType, PathBuf)>, EvalError> {
        let mut kinds = vec![IouType::Bbox];
        if self.iou_types.contains(&IouType::Segm) {
            kinds.push(IouType::Segm);
        }
        let mut written = Vec::new();
        for kind in kinds {
            let mut name = path_prefix.as_os_str().to_owned();
            name.push(format!(".{kind}.json"));
            let path = PathBuf::from(name);
            let write = || -> std::io::Result<()> {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
                serde_json::to_writer(&mut file, &self.results_json(kind))?;
                file.flush()
            };
            write().map_err(|source| EvalError::Write { path: path.clone(), source })?;
            written.push((kind, path));
        }
        Ok(written)
    }

    /// Evaluates the added detections for each IoU type given to [`new`](Self::new), as
    /// mmdetection 2.11's `CocoDataset.evaluate`: pycocotools' `COCOeval` on every ground-truth
    /// image and category with `maxDets = [100, 300, 1000]` ([`MMDET_MAX_DETS`]), so AP is at
    /// 100 detections per image and AP50/AP75/APs/APm/APl at 1000. Segm results keep their
    /// boxes, so a detection's area range comes from its box (as mmdetection 2.11 writes segm results). Detections of
    /// a category without ground truth change nothing, as in pycocotools; no detections at all
    /// give 0 (and -1 where there is no ground truth).
    ///
    /// # Errors
    ///
    /// [`EvalError::EvaluateDetections`] when hotcoco cannot match them.
    pub fn evaluate(&self) -> Result<Vec<(IouType, CocoStats)>, EvalError> {
        self.iou_types
            .iter()
            .map(|&iou_type| {
                let err = |source| EvalError::EvaluateDetections { iou_type, gt: self.gt_path.clone(), source };
                let anns = self.annotations(iou_type);
                let dt = self.gt.load_res_anns(anns).map_err(err)?;
                let stats = run_cocoeval(Arc::clone(&self.gt), dt, iou_type, MMDET_MAX_DETS).map_err(err)?;
                Ok((iou_type, stats))
            })
            .collect()
    }

    /// The results of [`results_json`](Self::results_json) as hotcoco annotations.
    fn annotations(&self, iou_type: IouType) -> Vec<hotcoco::Annotation> {
        self.added()
            .filter_map(|(image_id, e)| {
                let segmentation = match iou_type {
                    IouType::Bbox => None,
                    IouType::Segm => {
                        let (h, w) = self.image_size(image_id);
                        Some(hotcoco::Segmentation::CompressedRle { size: [h, w], counts: e.counts.clone()? })
                    }
                };
                Some(hotcoco::Annotation {
                    image_id,
                    category_id: e.category_id,
                    bbox: Some(e.bbox),
                    score: Some(e.score),
                    segmentation,
                    ..Default::default()
                })
            })
            .collect()
    }

    /// `(height, width)` of a ground-truth image (only called for added images).
    fn image_size(&self, image_id: u64) -> (u32, u32) {
        self.images.get(&image_id).map_or((0, 0), |&(h, w, _)| (h, w))
    }
}

/// The compressed counts of a mask after checking it covers the `height x width` image.
fn mask_counts(mask: &Rle, height: u32, width: u32) -> Result<String, String> {
    if (mask.height, mask.width) != (height, width) {
        return Err(format!("it is {}x{} but the image is {height}x{width} (height x width)", mask.height, mask.width));
    }
    mask.validate().map_err(|e| e.to_string())?;
    Ok(mask.counts_string())
}
