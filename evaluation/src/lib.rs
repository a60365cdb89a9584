//! COCO box and mask evaluation and classification metrics (issue 4).
//!
//! [`coco`] evaluates COCO results files against a COCO ground truth with the `hotcoco` crate
//! and returns pycocotools' 12 summary numbers and a per-category AP table. [`classification`]
//! has top-1 / top-5 accuracy; [`masks`] rasterizes COCO polygons as pycocotools does.
//! [`evaluator::CocoEvaluator`] evaluates in-memory detections as mmdetection 2.11 does, and
//! [`rle`] compresses masks to COCO RLE strings.

pub mod classification;
pub mod coco;
mod coco_input;
pub mod masks;

pub use classification::{top_k_indices, TopKAccuracy};
pub use coco::{evaluate_files, CategoryAp, CocoStats, EvalError, IouType, STAT_NAMES};
pub use masks::{polygons_to_mask, MaskError};
pub mod detections;
pub use detections::{Detections, Rle};
pub mod evaluator;
pub mod rle;
pub use coco::{COCO_MAX_DETS, MMDET_MAX_DETS};
pub use evaluator::CocoEvaluator;
pub use rle::RleError;
