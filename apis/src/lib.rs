//! nextdet as a library: what mmdetection's `mmdet.apis` offers, for Rust programs.
//!
//! - [`init_detector`] builds a detector from a config and a checkpoint;
//!   [`Detector::predict_file`] (or [`Detector::predict`] on a decoded image) gives the
//!   detections of an image (boxes, scores, labels, masks as COCO RLE);
//! - [`init_classifier`] and [`Classifier::classify`] do the same for image classifiers;
//! - [`train()`] trains a config in a work dir (checkpoints, `metrics.jsonl`, `curves.png`, exact
//!   resume), with [`TrainOptions::hooks`] to add to the loop;
//! - [`test()`] evaluates a checkpoint on a config's test split (COCO AP, or top-1 / top-5);
//! - [`benchmark()`] times a model on random input;
//! - [`analyze()`] counts its parameters, FLOPs and activations per module.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::path::Path;
//! let cfg = nextdet_apis::load_config(Path::new("configs/shapes/mask_rcnn_convnext_atto_shapes.yaml"), &[])?;
//! let detector = nextdet_apis::init_detector(&cfg, Path::new("latest.safetensors"))?;
//! let dets = detector.predict_file(Path::new("data/shapes/val/000001.png"))?;
//! for ((b, score), label) in dets.boxes.iter().zip(&dets.scores).zip(&dets.labels) {
//!     println!("{} {score:.2} {b:?}", detector.class_names()[*label]);
//! }
//! # Ok(()) }
//! ```
//!
//! The commands of the `nextdet` binary are thin wrappers around these functions. Errors are
//! `anyhow` errors: each names the file and the item it is about.

#![deny(missing_docs)]

pub mod analyze;
pub mod benchmark;
pub mod classifier;
pub mod config;
pub mod data;
pub mod detector;
pub mod device;
pub mod gather;
pub mod infer;
pub mod mixed_precision;
mod progress;
pub mod roadmap;
pub mod runtime;
pub mod tasks;
pub mod test;
pub mod train;
pub mod visualize;
pub mod weights;

pub use analyze::{analyze, AnalyzeOptions, AnalyzeReport, CounterChoice};
pub use benchmark::{benchmark, BenchMode, BenchOptions, BenchReport};
pub use classifier::{init_classifier, ClassScore, Classifier};
pub use config::{load_config, model_kind, ModelKind};
pub use detector::{init_detector, Detector};
pub use nextdet_datasets::{load_rgb8_with as load_image_with, DecodeConvention};
pub use nextdet_engine::config::Config;
pub use nextdet_evaluation::Detections;
pub use test::{test, TestOptions, TestReport};
pub use train::{train, Resume, TrainOptions, TrainReport};
