//! COCO evaluation of results files, identical to pycocotools' `COCOeval` (REFERENCE.md 7.10).
//!
//! The ground truth and the results are COCO JSON files as pycocotools reads them: the results
//! are a list of `{image_id, category_id, bbox, score}` (plus `segmentation` as RLE or polygons
//! for masks), or an object with an `annotations` list. The evaluation is hotcoco's
//! pycocotools-compatible `COCOeval` with the default parameters (IoU 0.50:0.95, 101 recall
//! points, `maxDets = [1, 10, 100]`, the small/medium/large area ranges).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

/// The names of the 12 COCO summary numbers, in pycocotools' `stats` order.
pub const STAT_NAMES: [&str; 12] =
    ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"];

/// What is matched: boxes or instance masks (pycocotools' `iouType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IouType {
    /// Box IoU on the results' `bbox` (`[x, y, w, h]`).
    Bbox,
    /// Mask IoU on the results' `segmentation` (RLE or polygons).
    Segm,
}

impl IouType {
    /// The name pycocotools uses: `"bbox"` or `"segm"`.
    pub fn as_str(self) -> &'static str {
        match self {
            IouType::Bbox => "bbox",
            IouType::Segm => "segm",
        }
    }

    fn to_hotcoco(self) -> hotcoco::IouType {
        match self {
            IouType::Bbox => hotcoco::IouType::Bbox,
            IouType::Segm => hotcoco::IouType::Segm,
        }
    }
}

impl fmt::Display for IouType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IouType {
    type Err = EvalError;

    /// Parses `"bbox"` or `"segm"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bbox" => Ok(IouType::Bbox),
            "segm" => Ok(IouType::Segm),
            other => Err(EvalError::UnknownIouType(other.to_string())),
        }
    }
}

/// One row of the per-category AP table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CategoryAp {
    /// The category id in the ground truth.
    pub id: u64,
    /// The category name in the ground truth.
    pub name: String,
    /// AP@[.50:.95] for this category at area `all` and 100 detections per image (what
    /// mmdetection's `classwise` table shows); `-1.0` when the category has no ground truth.
    pub ap: f64,
}

/// The result of one COCO evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CocoStats {
    /// What was matched.
    pub iou_type: IouType,
    /// pycocotools' `COCOeval.stats`, in the order of [`STAT_NAMES`]: AP, AP50, AP75, APs, APm,
    /// APl, AR1, AR10, AR100, ARs, ARm, ARl. `-1.0` where pycocotools gives `-1` (no ground truth
    /// in that area range).
    pub stats: [f64; 12],
    /// AP per ground-truth category, in ascending category id order.
    pub per_category: Vec<CategoryAp>,
}

impl CocoStats {
    /// The summary numbers paired with their names ([`STAT_NAMES`]).
    pub fn named(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        STAT_NAMES.iter().copied().zip(self.stats.iter().copied())
    }

    /// The 12 lines pycocotools' `COCOeval.summarize()` prints, without a trailing newline.
    pub fn summary_lines(&self) -> Vec<String> {
        // (is AP, IoU label, area label, maxDets) for each of the 12 numbers.
        const ROWS: [(bool, &str, &str, u32); 12] = [
            (true, "0.50:0.95", "all", 100),
            (true, "0.50", "all", 100),
            (true, "0.75", "all", 100),
            (true, "0.50:0.95", "small", 100),
            (true, "0.50:0.95", "medium", 100),
            (true, "0.50:0.95", "large", 100),
            (false, "0.50:0.95", "all", 1),
            (false, "0.50:0.95", "all", 10),
            (false, "0.50:0.95", "all", 100),
            (false, "0.50:0.95", "small", 100),
            (false, "0.50:0.95", "medium", 100),
            (false, "0.50:0.95", "large", 100),
        ];
        ROWS.iter()
            .zip(self.stats.iter())
            .map(|(&(ap, iou, area, max_dets), value)| {
                let title = if ap { "Average Precision  (AP)" } else { "Average Recall     (AR)" };
                format!(" {title} @[ IoU={iou:<9} | area={area:>6} | maxDets={max_dets:>3} ] = {value:.3}")
            })
            .collect()
    }
}

/// Why an evaluation failed. Every file problem names the file.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The ground-truth file is missing, unreadable or not a valid COCO annotation file.
    #[error("cannot load the COCO ground truth {}: {source}", path.display())]
    GroundTruth {
        /// The file that was read.
        path: PathBuf,
        /// What went wrong (I/O or JSON).
        #[source]
        source: hotcoco::Error,
    },
    /// The results file is missing, unreadable, not valid COCO results JSON, or inconsistent
    /// with the ground truth (for example a NaN score).
    #[error("cannot load the COCO results {}: {source}", path.display())]
    Results {
        /// The file that was read.
        path: PathBuf,
        /// What went wrong (I/O, JSON or content).
        #[source]
        source: hotcoco::Error,
    },
    /// The evaluation itself failed (for example a mask result without a `segmentation`).
    #[error("COCO {iou_type} evaluation of {} failed: {source}", path.display())]
    Evaluate {
        /// What was matched.
        iou_type: IouType,
        /// The results file being evaluated.
        path: PathBuf,
        /// hotcoco's error.
        #[source]
        source: hotcoco::Error,
    },
    /// An IoU type other than `bbox` or `segm` was asked for.
    #[error("unknown IoU type `{0}` (expected `bbox` or `segm`)")]
    UnknownIouType(String),
}

/// Evaluates the COCO results file `dt` against the COCO ground truth `gt`, as pycocotools'
/// `COCOeval(COCO(gt), COCO(gt).loadRes(dt), iou_type)` followed by `evaluate()`,
/// `accumulate()` and `summarize()`, and returns the 12 numbers and the per-category AP.
///
/// An empty results list is not an error (pycocotools' `loadRes` fails on it): every category
/// with ground truth then scores 0 and area ranges without ground truth give `-1`.
///
/// # Errors
///
/// [`EvalError::GroundTruth`] or [`EvalError::Results`], naming the file, when it is missing or
/// malformed; [`EvalError::Evaluate`] when the results cannot be matched as `iou_type`.
pub fn evaluate_files(gt: &Path, dt: &Path, iou_type: IouType) -> Result<CocoStats, EvalError> {
    let coco_gt = hotcoco::COCO::new(gt).map_err(|source| EvalError::GroundTruth { path: gt.to_path_buf(), source })?;
    let coco_dt = coco_gt.load_res(dt).map_err(|source| EvalError::Results { path: dt.to_path_buf(), source })?;
    let mut ev = hotcoco::COCOeval::new(coco_gt, coco_dt, iou_type.to_hotcoco());
    ev.evaluate().map_err(|source| EvalError::Evaluate { iou_type, path: dt.to_path_buf(), source })?;
    ev.accumulate();
    // `summarize_lines` computes the stats without printing (`summarize` prints to stdout).
    let _ = ev.summarize_lines();
    let raw = ev.stats().unwrap_or(&[]);
    let mut stats = [-1.0; 12];
    for (slot, value) in stats.iter_mut().zip(raw) {
        *slot = *value;
    }
    let per_category = per_category_ap(&ev);
    Ok(CocoStats { iou_type, stats, per_category })
}

/// AP@[.50:.95] per category at area `all` and the largest `maxDets`, as mmdetection's
/// `classwise` table computes it: the mean of the precision entries that are not `-1`.
fn per_category_ap(ev: &hotcoco::COCOeval) -> Vec<CategoryAp> {
    let Some(acc) = ev.accumulated() else {
        return Vec::new();
    };
    let area = ev.params.all_area_idx();
    let max_det = ev.params.max_det_idx();
    let mut rows: Vec<CategoryAp> = acc
        .cat_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| {
            let (mut sum, mut count) = (0.0, 0usize);
            for t in 0..acc.shape.t {
                for r in 0..acc.shape.r {
                    let p = acc.precision[acc.precision_idx(t, r, k, area, max_det)];
                    if p > -1.0 {
                        sum += p;
                        count += 1;
                    }
                }
            }
            let ap = if count == 0 { -1.0 } else { sum / count as f64 };
            let name = ev.coco_gt().get_cat(id).map(|c| c.name.clone()).unwrap_or_default();
            CategoryAp { id, name, ap }
        })
        .collect();
    rows.sort_by_key(|row| row.id);
    rows
}
