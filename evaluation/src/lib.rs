//! COCO box and mask evaluation and classification metrics (issue 4).
//!
//! [`coco`] evaluates COCO results files against a COCO ground truth with the `hotcoco` crate
//! and returns pycocotools' 12 summary numbers and a per-category AP table. The in-memory
//! `CocoEvaluator` fed with detections and the classification top-1/top-5 metrics are not built
//! here yet; top-1/top-5 currently lives in the CLI (`nextdet test`).

pub mod coco;

pub use coco::{evaluate_files, CategoryAp, CocoStats, EvalError, IouType, STAT_NAMES};
