//! Whole models assembled from a config's `model` section through one builder.
//!
//! `ImageClassifier` is any backbone with its classification head; `MaskRCNN` and
//! `CascadeRCNN` are [`detector::TwoStageDetector`]s (backbone, FPN, RPN, RoI heads).

#![deny(missing_docs)]

use candle_core::{Result, Tensor};
use nextdet_analysis::{CostTree, Shape};
use nextdet_backbones::{build_classifier, BackboneConfig, Classifier};
use nextdet_ops::autocast::Autocast;
use nextdet_ops::ParamStore;
use serde::Deserialize;

pub mod detector;
pub use detector::{DetectorType, NeckConfig, TwoStageConfig, TwoStageDetector};
pub use nextdet_heads::roi::RoiHeadConfig;

/// The `model` section of a config, chosen by its `type` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum ModelConfig {
    /// An image classifier: a backbone and its classification head.
    ImageClassifier(ImageClassifierConfig),
    /// Mask R-CNN: backbone, FPN, RPN and the standard RoI head.
    MaskRCNN(TwoStageConfig),
    /// Cascade (Mask) R-CNN: backbone, FPN, RPN and the three-stage cascade RoI head.
    CascadeRCNN(TwoStageConfig),
}

impl ModelConfig {
    /// The detector's config and type, when the model is a detector.
    pub fn detector(&self) -> Option<(&TwoStageConfig, DetectorType)> {
        match self {
            ModelConfig::ImageClassifier(_) => None,
            ModelConfig::MaskRCNN(c) => Some((c, DetectorType::MaskRCNN)),
            ModelConfig::CascadeRCNN(c) => Some((c, DetectorType::CascadeRCNN)),
        }
    }
}

/// `model: {type: ImageClassifier, backbone: {...}, num_classes: N}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageClassifierConfig {
    /// The trunk; its family decides the head's parameter names.
    pub backbone: BackboneConfig,
    /// Number of classes (1000 for ImageNet-1k, 21841 for ImageNet-22k).
    pub num_classes: usize,
}

/// A built image classifier and the parameters it reads from.
pub struct ImageClassifier {
    net: Box<dyn Classifier>,
    params: ParamStore,
}

impl ImageClassifier {
    /// Builds the classifier on `store`'s device, parameters initialised from `seed`.
    pub fn new(cfg: &ImageClassifierConfig, params: ParamStore, seed: u64) -> Result<Self> {
        let net = build_classifier(&cfg.backbone, cfg.num_classes, &params.root(), seed)?;
        Ok(Self { net, params })
    }

    /// `images: [N, 3, H, W]`, normalized, to logits `[N, num_classes]`, computed on the
    /// parameters' device (the images are moved there) in their autocast dtype
    /// ([`ParamStore::set_autocast`]).
    pub fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        nextdet_ops::on_pool(|| {
            let _autocast = Autocast::enable(self.params.autocast())?;
            self.net.forward(&images.to_device(self.params.device())?, train)
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.net.num_classes()
    }

    /// The parameters (to load a checkpoint into, or to train).
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Describes an evaluation-mode forward pass on `images: [N, 3, H, W]` to `tree` (see
    /// `nextdet_analysis`); returns the logits' shape.
    pub fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<Shape> {
        self.net.cost(images, tree)
    }
}

/// Any model a config can describe.
pub enum Model {
    /// See [`ImageClassifier`].
    Classifier(ImageClassifier),
    /// See [`TwoStageDetector`].
    Detector(Box<TwoStageDetector>),
}

impl Model {
    /// The parameters of whichever model this is.
    pub fn params(&self) -> &ParamStore {
        match self {
            Model::Classifier(m) => m.params(),
            Model::Detector(m) => m.params(),
        }
    }

    /// Describes what the model runs on `images: [N, 3, H, W]` to `tree`: a classifier's
    /// forward pass, a detector's `forward_dummy` (see [`TwoStageDetector::cost`]).
    pub fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<()> {
        match self {
            Model::Classifier(m) => m.cost(images, tree).map(|_| ()),
            Model::Detector(m) => m.cost(images, tree),
        }
    }
}

/// Builds the model a `model` section describes, on `device`, initialised from `seed`.
pub fn build_model(cfg: &ModelConfig, device: &candle_core::Device, seed: u64) -> Result<Model> {
    build_model_in(cfg, ParamStore::new(device, seed), seed)
}

/// Builds the model with its parameters in `params` (e.g. [`ParamStore::zeros`] to describe a
/// model without initialising it); `seed` drives stochastic depth.
pub fn build_model_in(cfg: &ModelConfig, params: ParamStore, seed: u64) -> Result<Model> {
    Ok(match cfg {
        ModelConfig::ImageClassifier(c) => Model::Classifier(ImageClassifier::new(c, params, seed)?),
        ModelConfig::MaskRCNN(c) | ModelConfig::CascadeRCNN(c) => {
            let (_, kind) = cfg.detector().expect("a detector config");
            Model::Detector(Box::new(TwoStageDetector::new(c, kind, params, seed)?))
        }
    })
}
