//! Classification as a library call: a classifier built from a config with its weights, the
//! top-k classes of an image, and the top-1 / top-5 loop over an ImageFolder that `test` and
//! training's evaluation share.

use crate::data::classification::{eval_batch, ClsDataConfig};
use crate::progress::progress_bar;
use crate::weights::build_with_checkpoint;
use anyhow::{bail, Result};
use nextdet_datasets::{EvalTransform, ImageFolder, RgbImage};
use nextdet_engine::config::Config;
use nextdet_evaluation::{top_k_indices, TopKAccuracy};
use nextdet_heads::bbox_head::softmax_rows;
use nextdet_models::{ImageClassifier, Model};
use std::path::Path;

/// A classifier with its weights, its evaluation transform and its class names.
pub struct Classifier {
    net: ImageClassifier,
    transform: EvalTransform,
    class_names: Vec<String>,
}

/// One of the top-k classes of an image.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassScore {
    /// The class index.
    pub class: usize,
    /// Its name (`class_<i>` when the config names none).
    pub name: String,
    /// The softmax probability.
    pub prob: f32,
}

/// Builds the classifier `cfg` describes and loads `checkpoint` strictly; the transform is
/// `data.test.transform` (ConvNeXt's at 224 without one).
pub fn init_classifier(cfg: &Config, checkpoint: &Path) -> Result<Classifier> {
    crate::config::apply_precision(cfg)?;
    let Model::Classifier(net) = build_with_checkpoint(cfg, checkpoint)? else {
        bail!("this command needs a classifier config (model.type: ImageClassifier)");
    };
    let data = cfg.section::<Option<ClsDataConfig>>("data")?.unwrap_or_default();
    let transform = data.eval_transform()?;
    let class_names = data.class_names(net.num_classes())?;
    Ok(Classifier { net, transform, class_names })
}

impl Classifier {
    /// The `k` most probable classes of an image, best first.
    pub fn classify(&self, image: &RgbImage, k: usize) -> Result<Vec<ClassScore>> {
        let x = crate::data::classification::stack(vec![self.transform.apply(image)?], self.transform.output_shape())?;
        Ok(self.top_k(&x, k)?.remove(0))
    }

    /// The `k` most probable classes of each image file, best first (decoded in parallel).
    pub fn classify_files(&self, paths: &[&Path], k: usize) -> Result<Vec<Vec<ClassScore>>> {
        self.top_k(&eval_batch(None, paths, &self.transform)?, k)
    }

    fn top_k(&self, images: &candle_core::Tensor, k: usize) -> Result<Vec<Vec<ClassScore>>> {
        let probs = softmax_rows(&self.net.forward(images, false)?)?.to_vec2::<f32>()?;
        Ok(probs
            .iter()
            .map(|p| {
                top_k_indices(p, k)
                    .into_iter()
                    .map(|i| ClassScore { class: i, name: self.class_names[i].clone(), prob: p[i] })
                    .collect()
            })
            .collect())
    }

    /// The class names.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The network.
    pub fn net(&self) -> &ImageClassifier {
        &self.net
    }
}

/// Top-1 / top-5 accuracy of `net` on `folder` with `transform`, `batch_size` images at a time
/// (decoded in `pool` when given); with `show_progress`, a progress bar with the running top-1.
pub fn evaluate_topk(
    net: &ImageClassifier,
    folder: &ImageFolder,
    transform: &EvalTransform,
    batch_size: usize,
    pool: Option<&rayon::ThreadPool>,
    show_progress: bool,
) -> Result<TopKAccuracy> {
    let bar = show_progress.then(|| progress_bar(folder.len(), "test"));
    let mut accuracy = TopKAccuracy::default();
    for chunk in folder.samples().chunks(batch_size.max(1)) {
        let paths: Vec<&Path> = chunk.iter().map(|(p, _)| p.as_path()).collect();
        let logits = net.forward(&eval_batch(pool, &paths, transform)?, false)?.to_vec2::<f32>()?;
        for (row, (_, label)) in logits.iter().zip(chunk) {
            accuracy.update(row, *label);
        }
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
            bar.set_message(format!("top1 {:.2}%", accuracy.top1()));
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(accuracy)
}
