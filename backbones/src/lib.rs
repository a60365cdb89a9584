//! Backbones for nextdet: ConvNeXt (T/S/B/L/XL and small CPU presets), ConvNeXt-isotropic,
//! ResNet-50/101 and Swin Transformer T/S/B/L, each with a classification head and a detection
//! mode behind [`Backbone`], and the ConvNeXt paper's roadmap from ResNet-50 to ConvNeXt-T
//! ([`roadmap`], classification only).
//!
//! Parameter names are those of the published checkpoints (facebookresearch ConvNeXt,
//! torchvision ResNet, microsoft Swin-Transformer), so `weights::load_checkpoint` fills a model
//! without renaming tables in the model code.

#![deny(missing_docs)]

pub mod config;
pub mod convnext;
pub mod isotropic;
pub mod layers;
mod pth;
pub mod resnet;
pub mod roadmap;
pub mod swin;
pub mod weights;

use candle_core::{Result, Tensor};
use nextdet_analysis::{CostTree, Shape};

pub use config::{
    BackboneConfig, ConvNeXtArch, ConvNeXtConfig, IsotropicArch, IsotropicConfig, ResNetConfig, RoadmapConfig,
    SwinArch, SwinConfig,
};

/// A feature extractor for detection: images in, one feature map per selected stage out.
pub trait Backbone: Send + Sync {
    /// `images: [N, 3, H, W]` to the selected stage outputs, each `[N, C_i, H / s_i, W / s_i]`.
    fn forward(&self, images: &Tensor, train: bool) -> Result<Vec<Tensor>>;
    /// Channels of each output, in output order (what an FPN needs as `in_channels`).
    fn out_channels(&self) -> Vec<usize>;
    /// Stride of each output relative to the input, in output order.
    fn strides(&self) -> Vec<usize>;
    /// Describes one evaluation-mode forward pass on `images: [N, 3, H, W]` to `tree` (layer by
    /// layer, under the module names of the parameters; see `nextdet_analysis`) and returns the
    /// shapes of the outputs, NCHW. The default says the backbone has no description.
    fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<Vec<Shape>> {
        let _ = (images, tree);
        candle_core::bail!("this backbone does not describe its layers for `nextdet analyze`")
    }
}

/// A whole image classifier: images in, class logits out.
pub trait Classifier: Send + Sync {
    /// `images: [N, 3, H, W]` to logits `[N, num_classes]`.
    fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor>;
    /// Number of output classes.
    fn num_classes(&self) -> usize;
    /// Describes one evaluation-mode forward pass on `images: [N, 3, H, W]` to `tree` and
    /// returns the logits' shape (see [`Backbone::cost`]).
    fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let _ = (images, tree);
        candle_core::bail!("this classifier does not describe its layers for `nextdet analyze`")
    }
}

/// Builds the detection-mode backbone a config describes, its parameters under `scope`.
pub fn build_backbone(cfg: &BackboneConfig, scope: &nextdet_ops::Scope, seed: u64) -> Result<Box<dyn Backbone>> {
    Ok(match cfg {
        BackboneConfig::ConvNeXt(c) => Box::new(convnext::ConvNeXtBackbone::new(c, scope, seed)?),
        BackboneConfig::ConvNeXtIsotropic(_) => {
            candle_core::bail!("ConvNeXtIsotropic has a single stride-16 output and no detection mode yet")
        }
        BackboneConfig::ResNet(c) => Box::new(resnet::ResNet::new_backbone(c, scope)?),
        BackboneConfig::SwinTransformer(c) => Box::new(swin::SwinBackbone::new(c, scope, seed)?),
        BackboneConfig::Roadmap(_) => candle_core::bail!("Roadmap is a classifier and has no detection mode"),
    })
}

/// Builds the classifier (trunk and head) a config describes, its parameters under `scope`.
pub fn build_classifier(
    cfg: &BackboneConfig,
    num_classes: usize,
    scope: &nextdet_ops::Scope,
    seed: u64,
) -> Result<Box<dyn Classifier>> {
    Ok(match cfg {
        BackboneConfig::ConvNeXt(c) => Box::new(convnext::ConvNeXtClassifier::new(c, num_classes, scope, seed)?),
        BackboneConfig::ConvNeXtIsotropic(c) => {
            Box::new(isotropic::IsotropicClassifier::new(c, num_classes, scope, seed)?)
        }
        BackboneConfig::ResNet(c) => Box::new(resnet::ResNet::new_classifier(c, num_classes, scope)?),
        BackboneConfig::SwinTransformer(c) => Box::new(swin::SwinClassifier::new(c, num_classes, scope, seed)?),
        BackboneConfig::Roadmap(c) => Box::new(roadmap::RoadmapClassifier::new(c, num_classes, scope, seed)?),
    })
}
