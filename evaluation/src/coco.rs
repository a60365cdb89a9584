//! COCO evaluation of results files, identical to pycocotools' `COCOeval` (`pycocotools/cocoeval.py`).
//!
//! The ground truth and the results are COCO JSON files as pycocotools reads them: the results
//! are a list of `{image_id, category_id, bbox, score}` (plus `segmentation` as RLE or polygons
//! for masks); what pycocotools refuses is refused (`coco_input.rs`). The matching and accumulation are
//! hotcoco's pycocotools-compatible `COCOeval` (IoU 0.50:0.95, 101 recall points, the
//! small/medium/large area ranges); the 12 summary numbers are then read off the accumulated
//! precision/recall exactly as pycocotools' `summarize()` does, which matters for a `maxDets`
//! other than the default `[1, 10, 100]`: with mmdetection's `[100, 300, 1000]` pycocotools reports
//! AP@[.50:.95] at 100 detections but AP50/AP75/APs/APm/APl and ARs/ARm/ARl at 1000.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

/// The names of the 12 COCO summary numbers, in pycocotools' `stats` order.
pub const STAT_NAMES: [&str; 12] =
    ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"];

/// pycocotools' default `COCOeval.params.maxDets` (what `evaluate_files` uses).
pub const COCO_MAX_DETS: [usize; 3] = [1, 10, 100];

/// The `maxDets` mmdetection 2.11's `CocoDataset.evaluate` sets (its `proposal_nums`), used by
/// [`crate::CocoEvaluator`] to reproduce the paper's numbers (mmdetection 2.11's `mmdet/datasets/coco.py`).
pub const MMDET_MAX_DETS: [usize; 3] = [100, 300, 1000];

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

    pub(crate) fn to_hotcoco(self) -> hotcoco::IouType {
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
    /// AP@[.50:.95] for this category at area `all` and the largest `maxDets` (100 by default,
    /// 1000 with mmdetection's parameters), what mmdetection's `classwise` table shows; `-1.0`
    /// when the category has no ground truth (mmdetection prints `nan`).
    pub ap: f64,
}

/// The result of one COCO evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CocoStats {
    /// What was matched.
    pub iou_type: IouType,
    /// pycocotools' `COCOeval.stats`, in the order of [`STAT_NAMES`]: AP, AP50, AP75, APs, APm,
    /// APl, AR1, AR10, AR100, ARs, ARm, ARl. `-1.0` where pycocotools gives `-1` (no ground truth
    /// in that area range). The names assume the default `maxDets`; see `max_dets`.
    pub stats: [f64; 12],
    /// The sorted `maxDets` the evaluation used: [`COCO_MAX_DETS`] or [`MMDET_MAX_DETS`].
    /// pycocotools' stats 0 uses 100 detections, stats 1-5 and 8-11 the third entry, stats 6
    /// and 7 the first and second.
    pub max_dets: [usize; 3],
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
        // (is AP, IoU label, area label, which maxDets) for each of the 12 numbers; `None` is
        // pycocotools' fixed 100 of `_summarize`'s default argument.
        const ROWS: [(bool, &str, &str, Option<usize>); 12] = [
            (true, "0.50:0.95", "all", None),
            (true, "0.50", "all", Some(2)),
            (true, "0.75", "all", Some(2)),
            (true, "0.50:0.95", "small", Some(2)),
            (true, "0.50:0.95", "medium", Some(2)),
            (true, "0.50:0.95", "large", Some(2)),
            (false, "0.50:0.95", "all", Some(0)),
            (false, "0.50:0.95", "all", Some(1)),
            (false, "0.50:0.95", "all", Some(2)),
            (false, "0.50:0.95", "small", Some(2)),
            (false, "0.50:0.95", "medium", Some(2)),
            (false, "0.50:0.95", "large", Some(2)),
        ];
        ROWS.iter()
            .zip(self.stats.iter())
            .map(|(&(ap, iou, area, slot), value)| {
                let max_dets = slot.map_or(100, |i| self.max_dets[i]);
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
    /// The ground truth is valid JSON but not what pycocotools evaluates: not an object, an
    /// item without an `id`, an evaluated annotation without `area`, `bbox` or `segmentation`
    /// (see `coco_input.rs` for the rules).
    #[error("{}: not a COCO ground truth pycocotools can evaluate: {reason}", path.display())]
    InvalidGroundTruth {
        /// The ground-truth file.
        path: PathBuf,
        /// What is wrong, naming the item.
        reason: String,
    },
    /// The results are valid JSON but not what pycocotools' `loadRes` and `COCOeval` accept: not
    /// a list, a detection without `image_id`, `category_id`, `score` or its box or mask, or on
    /// an image the ground truth does not have.
    #[error("{}: not COCO results pycocotools can evaluate: {reason}", path.display())]
    InvalidResults {
        /// The results file.
        path: PathBuf,
        /// What is wrong, naming the detection.
        reason: String,
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
    /// A detection's contiguous label has no category: the ground truth has `num_classes`.
    #[error(
        "image {image_id}: detection {index} has label {label}, but the ground truth has {num_classes} \
         categories (labels 0..{num_classes})"
    )]
    LabelOutOfRange {
        /// The image of the detections.
        image_id: u64,
        /// The detection's position in its image.
        index: usize,
        /// The label given.
        label: usize,
        /// The number of ground-truth categories.
        num_classes: usize,
    },
    /// Detections name an image that is not in the ground truth (pycocotools' `loadRes` refuses
    /// them too).
    #[error("detections for image {image_id}, which is not in the ground truth {}", gt.display())]
    UnknownImage {
        /// The image id given.
        image_id: u64,
        /// The ground-truth file.
        gt: PathBuf,
    },
    /// The same image was added twice.
    #[error("detections for image {image_id} were already added")]
    DuplicateImage {
        /// The image id given twice.
        image_id: u64,
    },
    /// The detections of one image are inconsistent or unusable (list lengths, a non-finite
    /// number, a missing mask, a mask of the wrong size or with broken runs).
    #[error("image {image_id}: {reason}")]
    BadDetections {
        /// The image of the detections.
        image_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// Matching the in-memory detections failed.
    #[error("COCO {iou_type} evaluation of the detections against {} failed: {source}", gt.display())]
    EvaluateDetections {
        /// What was matched.
        iou_type: IouType,
        /// The ground-truth file.
        gt: PathBuf,
        /// hotcoco's error.
        #[source]
        source: hotcoco::Error,
    },
    /// A results file could not be written.
    #[error("cannot write the COCO results {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The I/O or JSON error.
        #[source]
        source: std::io::Error,
    },
}

/// Evaluates the COCO results file `dt` against the COCO ground truth `gt`, as pycocotools'
/// `COCOeval(COCO(gt), COCO(gt).loadRes(dt), iou_type)` followed by `evaluate()`,
/// `accumulate()` and `summarize()` with the default parameters ([`COCO_MAX_DETS`]), and returns
/// the 12 numbers and the per-category AP.
///
/// An empty results list is not an error (pycocotools' `loadRes` fails on it): every category
/// with ground truth then scores 0 and area ranges without ground truth give `-1`.
///
/// Input pycocotools refuses is refused here too, with one message naming the file and the item
/// (a results object instead of a list, a detection without `score`, `bbox` or `segmentation`, a
/// ground-truth annotation without `bbox`, ...), and duplicate annotation ids are evaluated as
/// pycocotools evaluates them (`coco_input.rs` has the rules).
///
/// # Errors
///
/// [`EvalError::GroundTruth`] or [`EvalError::Results`], naming the file, when it is missing or
/// not JSON; [`EvalError::InvalidGroundTruth`] or [`EvalError::InvalidResults`] when pycocotools
/// would refuse it; [`EvalError::Evaluate`] when the results cannot be matched as `iou_type`.
pub fn evaluate_files(gt: &Path, dt: &Path, iou_type: IouType) -> Result<CocoStats, EvalError> {
    let ground_truth = crate::coco_input::load_ground_truth(gt, &[iou_type])?;
    let coco_dt = crate::coco_input::load_results(&ground_truth, dt)?;
    run_cocoeval(Arc::new(ground_truth.coco), coco_dt, iou_type, COCO_MAX_DETS).map_err(|source| EvalError::Evaluate {
        iou_type,
        path: dt.to_path_buf(),
        source,
    })
}

/// Runs hotcoco's `COCOeval` over every ground-truth image and category with the sorted
/// `max_dets`, then summarizes as pycocotools does.
pub(crate) fn run_cocoeval(
    coco_gt: Arc<hotcoco::COCO>,
    coco_dt: hotcoco::COCO,
    iou_type: IouType,
    max_dets: [usize; 3],
) -> Result<CocoStats, hotcoco::Error> {
    let img_ids: Vec<u64> = coco_gt.dataset.images.iter().map(|im| im.id).collect();
    let cat_ids: Vec<u64> = coco_gt.dataset.categories.iter().map(|c| c.id).collect();
    let mut ev = hotcoco::COCOeval::new(coco_gt, coco_dt, iou_type.to_hotcoco());
    ev.params.img_ids = img_ids;
    ev.params.cat_ids = cat_ids;
    ev.params.max_dets = max_dets.to_vec();
    ev.evaluate()?;
    ev.accumulate();
    Ok(summarize(&ev, iou_type, max_dets))
}

/// The mean of the values above -1 (pycocotools' `np.mean(s[s > -1])`), or -1 when none is.
fn mean_of_valid(values: impl Iterator<Item = f64>, scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend(values.filter(|&v| v > -1.0));
    if scratch.is_empty() {
        -1.0
    } else {
        numpy_pairwise_sum(scratch) / scratch.len() as f64
    }
}

/// A sum in the order numpy's `add.reduce` uses on a contiguous float64 array, so that means
/// agree with `np.mean` to the last bit: serial below 8 values, eight interleaved partial sums up
/// to 128, and above that the two halves (split at a multiple of 8) summed recursively.
fn numpy_pairwise_sum(v: &[f64]) -> f64 {
    let n = v.len();
    if n < 8 {
        return v.iter().fold(0.0, |acc, &x| acc + x);
    }
    if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&v[..8]);
        let whole = n - n % 8;
        for chunk in v[8..whole].chunks_exact(8) {
            for (acc, &x) in r.iter_mut().zip(chunk) {
                *acc += x;
            }
        }
        let head = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        return v[whole..].iter().fold(head, |acc, &x| acc + x);
    }
    let split = n / 2 - (n / 2) % 8;
    numpy_pairwise_sum(&v[..split]) + numpy_pairwise_sum(&v[split..])
}

/// pycocotools' `summarize()` for boxes and masks on an accumulated evaluation: the 12 numbers
/// with the detection limits it uses for each (`None` = its default argument, 100), averaged
/// over the precision `[T, R, K]` or recall `[T, K]` slice in numpy's flattening order.
fn summarize(ev: &hotcoco::COCOeval, iou_type: IouType, max_dets: [usize; 3]) -> CocoStats {
    let Some(acc) = ev.accumulated() else {
        return CocoStats { iou_type, stats: [-1.0; 12], max_dets, per_category: Vec::new() };
    };
    let p = &ev.params;
    // (is AP, IoU threshold, area label, detection limit) as in pycocotools' `_summarizeDets`.
    let rows: [(bool, Option<f64>, &str, usize); 12] = [
        (true, None, "all", 100),
        (true, Some(0.5), "all", max_dets[2]),
        (true, Some(0.75), "all", max_dets[2]),
        (true, None, "small", max_dets[2]),
        (true, None, "medium", max_dets[2]),
        (true, None, "large", max_dets[2]),
        (false, None, "all", max_dets[0]),
        (false, None, "all", max_dets[1]),
        (false, None, "all", max_dets[2]),
        (false, None, "small", max_dets[2]),
        (false, None, "medium", max_dets[2]),
        (false, None, "large", max_dets[2]),
    ];
    let shape = acc.shape;
    let mut scratch = Vec::new();
    let mut stats = [-1.0; 12];
    for (slot, &(ap, iou, area, max_det)) in stats.iter_mut().zip(&rows) {
        // A limit or area range not in the parameters selects nothing: pycocotools gives -1.
        let (Some(a), Some(m)) = (p.area_range_idx(area), p.max_dets.iter().position(|&d| d == max_det)) else {
            continue;
        };
        let ts: Vec<usize> = match iou {
            Some(thr) => p.iou_thr_idx(thr).into_iter().collect(),
            None => (0..shape.t).collect(),
        };
        *slot = if ap {
            let values = ts.iter().flat_map(|&t| {
                (0..shape.r)
                    .flat_map(move |r| (0..shape.k).map(move |k| acc.precision[acc.precision_idx(t, r, k, a, m)]))
            });
            mean_of_valid(values, &mut scratch)
        } else {
            let values = ts.iter().flat_map(|&t| (0..shape.k).map(move |k| acc.recall[acc.recall_idx(t, k, a, m)]));
            mean_of_valid(values, &mut scratch)
        };
    }
    let per_category = per_category_ap(ev, acc, &mut scratch);
    CocoStats { iou_type, stats, max_dets, per_category }
}

/// AP@[.50:.95] per category at area `all` and the largest `maxDets`, as mmdetection's
/// `classwise` table computes it: the mean of the precision entries that are not `-1`.
fn per_category_ap(ev: &hotcoco::COCOeval, acc: &hotcoco::AccumulatedEval, scratch: &mut Vec<f64>) -> Vec<CategoryAp> {
    let area = ev.params.all_area_idx();
    let max_det = ev.params.max_det_idx();
    let shape = acc.shape;
    let mut rows: Vec<CategoryAp> = acc
        .cat_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| {
            let values = (0..shape.t)
                .flat_map(|t| (0..shape.r).map(move |r| acc.precision[acc.precision_idx(t, r, k, area, max_det)]));
            let ap = mean_of_valid(values, scratch);
            let name = ev.coco_gt().get_cat(id).map(|c| c.name.clone()).unwrap_or_default();
            CategoryAp { id, name, ap }
        })
        .collect();
    rows.sort_by_key(|row| row.id);
    rows
}
