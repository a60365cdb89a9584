//! ConvNeXt-isotropic: a 16x16 patch stem and a single stack of ConvNeXt blocks at stride 16,
//! with the official names (`stem`, `blocks.i`, `norm`, `head`).

use crate::config::IsotropicConfig;
use crate::layers::{drop_path_rates, Block, DropRng, Linear, Norm, PatchConv, INIT_STD};
use crate::Classifier;
use candle_core::{Result, Tensor};
use nextdet_analysis::{CostTree, Shape, Via};
use nextdet_ops::{Init, Scope};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::{Arc, Mutex};

/// The isotropic ConvNeXt classifier.
pub struct IsotropicClassifier {
    stem: PatchConv,
    blocks: Vec<Block>,
    norm: Norm,
    head: Linear,
    num_classes: usize,
}

impl IsotropicClassifier {
    /// The classifier with `num_classes` outputs, parameters under `scope`.
    pub fn new(cfg: &IsotropicConfig, num_classes: usize, scope: &Scope, seed: u64) -> Result<Self> {
        let (depth, dim) = cfg.depth_dim().map_err(candle_core::Error::msg)?;
        let rng: DropRng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let stem = PatchConv::new(&scope.pp("stem"), cfg.in_chans, dim, 16)?;
        let blocks = drop_path_rates(cfg.drop_path_rate, depth)
            .into_iter()
            .enumerate()
            .map(|(i, rate)| Block::new(&scope.pp("blocks").pp(i), dim, rate, cfg.layer_scale_init_value, rng.clone()))
            .collect::<Result<_>>()?;
        let norm = Norm::new(&scope.pp("norm"), dim)?;
        let head = Linear::new(&scope.pp("head"), dim, num_classes, Init::TruncNormal { std: INIT_STD })?;
        Ok(Self { stem, blocks, norm, head, num_classes })
    }
}

impl Classifier for IsotropicClassifier {
    fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.stem.forward_nchw(images, train)?;
        for block in &self.blocks {
            x = block.forward(&x, train)?;
        }
        let features = self.norm.forward(&x.mean((1, 2))?)?;
        self.head.forward_t(&features, train)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// `stem`, the blocks, pooling (tensor ops), `norm` (ConvNeXt's channels-last class:
    /// `F.layer_norm`) and `head`, as the official `models/convnext_isotropic.py`.
    fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let mut x = self.stem.cost("stem", images, tree)?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = tree.scope(format!("blocks.{i}"), |t| block.cost(&x, t))?;
        }
        let pooled = [x[0], x[1]];
        self.norm.cost("norm", &pooled, Via::Functional, tree)?;
        tree.linear("head", &pooled, self.head.weight().dims(), true)
    }
}
