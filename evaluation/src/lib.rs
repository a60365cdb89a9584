//! COCO box and mask evaluation and classification metrics (issue 4).
//!
//! [`coco`] evaluates COCO results files against a COCO ground truth with the `hotcoco` crate
//! and returns pycocotools' 12 summary numbers and a per-category AP table. [`classification`]
//! has top-1 / top-5 accuracy. The in-memory `CocoEvaluator` fed with detections is not built
//! yet.

pub mod classification;
pub mod coco;

pub use classification::{top_k_indices, TopKAccuracy};
pub use coco::{evaluate_files, CategoryAp, CocoStats, EvalError, IouType, STAT_NAMES};
