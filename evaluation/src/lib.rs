//! COCO box and mask evaluation and classification metrics.
//!
//! [`coco`] evaluates COCO results files against a COCO ground truth with the `hotcoco` crate
//! and returns pycocotools' 12 summary numbers and a per-category AP table.
//! [`evaluator::CocoEvaluator`] evaluates in-memory detections as mmdetection 2.11 does.
//! [`classification`] has top-1 / top-5 accuracy; [`masks`] rasterizes COCO polygons as
//! pycocotools does. Masks travel as [`Rle`] (the codec lives in `nextdet-structures`).

#![deny(missing_docs)]

pub mod classification;
pub mod coco;
mod coco_input;
pub mod detections;
pub mod evaluator;
pub mod masks;

pub use classification::{top_k_indices, TopKAccuracy};
pub use coco::{evaluate_files, CategoryAp, CocoStats, EvalError, IouType, COCO_MAX_DETS, MMDET_MAX_DETS, STAT_NAMES};
pub use detections::Detections;
pub use evaluator::CocoEvaluator;
pub use masks::{polygons_to_mask, MaskError};
pub use nextdet_structures::{Rle, RleError};
