//! COCO box and mask evaluation and classification metrics (issue 4).
//!
//! [`coco`] evaluates COCO results files against a COCO ground truth with the `hotcoco` crate
//! and returns pycocotools' 12 summary numbers and a per-category AP table. [`classification`]
//! has top-1 / top-5 accuracy; [`masks`] rasterizes COCO polygons as pycocotools does. The in-memory `CocoEvaluator` fed with detections is not built
//! yet.

pub mod classification;
pub mod coco;
pub mod masks;

pub use classification::{top_k_indices, TopKAccuracy};
pub use coco::{evaluate_files, CategoryAp, CocoStats, EvalError, IouType, STAT_NAMES};
pub use masks::{polygons_to_mask, MaskError};
pub mod detections;
pub use detections::{Detections, Rle};
