//! `nextdet make-shapes`: writes the built-in synthetic datasets, so that training, testing and
//! every example run with no download.

use anyhow::{bail, Result};
use nextdet_datasets::shapes;
use std::path::Path;

/// Which dataset to write.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Task {
    /// A COCO instances set: `train/`, `val/`, `annotations/instances_{train,val}.json`.
    Detection,
    /// An ImageFolder: `train/<class>/`, `val/<class>/`.
    Classification,
}

/// Generates the set and prints a one-line summary.
pub fn run(dir: &Path, task: Task, train: Option<usize>, val: Option<usize>, seed: u64) -> Result<()> {
    shapes::check_new_dir(dir)?;
    if train == Some(0) || val == Some(0) {
        bail!("--train and --val must be at least 1 (an empty split cannot be trained or evaluated on)");
    }
    let summary = match task {
        Task::Detection => shapes::make_detection(
            dir,
            train.unwrap_or(shapes::DEFAULT_DETECTION_TRAIN),
            val.unwrap_or(shapes::DEFAULT_DETECTION_VAL),
            seed,
        )?,
        Task::Classification => shapes::make_classification(
            dir,
            train.unwrap_or(shapes::DEFAULT_CLASSIFICATION_TRAIN_PER_CLASS),
            val.unwrap_or(shapes::DEFAULT_CLASSIFICATION_VAL_PER_CLASS),
            seed,
        )?,
    };
    eprintln!(
        "{}: {} train and {} val images, {} train and {} val instances, {} crowd regions",
        dir.display(),
        summary.train_images,
        summary.val_images,
        summary.train_instances,
        summary.val_instances,
        summary.crowd_regions
    );
    Ok(())
}
