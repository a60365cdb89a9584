//! ConvNeXt ("A ConvNet for the 2020s"): the trunk, its ImageNet classifier and its detection
//! mode, with the official parameter names (`downsample_layers.*`, `stages.S.B.*`, `norm`,
//! `head`, and `norm0..3` for detection).

use crate::config::ConvNeXtConfig;
use crate::layers::{drop_path_rates, Block, DropRng, Linear, Norm, PatchConv, INIT_STD};
use crate::{Backbone, Classifier};
use candle_core::{bail, Result, Tensor};
use nextdet_analysis::{CostTree, Shape, Via};
use nextdet_ops::{Init, Scope};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::{Arc, Mutex};

/// One downsampling layer: the stem (patch conv 4x4, then norm) or a stage transition (norm,
/// then patch conv 2x2).
enum Downsample {
    Stem { conv: PatchConv, norm: Norm },
    Transition { norm: Norm, conv: PatchConv },
}

/// The four-stage trunk shared by the classifier and the detection backbone.
pub struct ConvNeXt {
    downsample: Vec<Downsample>,
    stages: Vec<Vec<Block>>,
    dims: Vec<usize>,
}

impl ConvNeXt {
    /// The trunk described by `cfg`, parameters under `scope`; `seed` drives stochastic depth.
    pub fn new(cfg: &ConvNeXtConfig, scope: &Scope, seed: u64) -> Result<Self> {
        let (depths, dims) = cfg.depths_dims().map_err(candle_core::Error::msg)?;
        let rng: DropRng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let rates = drop_path_rates(cfg.drop_path_rate, depths.iter().sum());
        let ds = scope.pp("downsample_layers");
        let mut downsample = Vec::with_capacity(4);
        for i in 0..4 {
            let s = ds.pp(i);
            downsample.push(if i == 0 {
                Downsample::Stem {
                    conv: PatchConv::new(&s.pp(0), cfg.in_chans, dims[0], 4)?,
                    norm: Norm::new(&s.pp(1), dims[0])?,
                }
            } else {
                Downsample::Transition {
                    norm: Norm::new(&s.pp(0), dims[i - 1])?,
                    conv: PatchConv::new(&s.pp(1), dims[i - 1], dims[i], 2)?,
                }
            });
        }
        let mut stages = Vec::with_capacity(4);
        let mut block_index = 0;
        for (i, &depth) in depths.iter().enumerate() {
            let s = scope.pp("stages").pp(i);
            let mut blocks = Vec::with_capacity(depth);
            for b in 0..depth {
                blocks.push(Block::new(
                    &s.pp(b),
                    dims[i],
                    rates[block_index],
                    cfg.layer_scale_init_value,
                    rng.clone(),
                )?);
                block_index += 1;
            }
            stages.push(blocks);
        }
        Ok(Self { downsample, stages, dims })
    }

    /// Channels of each stage.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Runs the trunk on `[N, 3, H, W]` and returns the channels-last output of every stage.
    pub fn forward_stages(&self, images: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let mut outs = Vec::with_capacity(4);
        let mut x = images.clone();
        for (down, blocks) in self.downsample.iter().zip(&self.stages) {
            x = match down {
                Downsample::Stem { conv, norm } => norm.forward(&conv.forward_nchw(&x, train)?)?,
                Downsample::Transition { norm, conv } => conv.forward_nhwc(&norm.forward(&x)?, train)?,
            };
            for block in blocks {
                x = block.forward(&x, train)?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }
}

/// ConvNeXt for image classification: trunk, global average pool, layer norm (`norm`) and the
/// linear head (`head`).
pub struct ConvNeXtClassifier {
    trunk: ConvNeXt,
    norm: Norm,
    head: Linear,
    num_classes: usize,
}

impl ConvNeXtClassifier {
    /// The classifier with `num_classes` outputs, parameters under `scope`.
    pub fn new(cfg: &ConvNeXtConfig, num_classes: usize, scope: &Scope, seed: u64) -> Result<Self> {
        let trunk = ConvNeXt::new(cfg, scope, seed)?;
        let last = trunk.dims()[3];
        let norm = Norm::new(&scope.pp("norm"), last)?;
        let head = Linear::new(&scope.pp("head"), last, num_classes, Init::TruncNormal { std: INIT_STD })?;
        Ok(Self { trunk, norm, head, num_classes })
    }
}

impl Classifier for ConvNeXtClassifier {
    fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let last = self.trunk.forward_stages(images, train)?.pop().expect("four stages");
        let pooled = last.mean((1, 2))?;
        let features = self.norm.forward(&pooled)?;
        self.head.forward_t(&features, train)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<Shape> {
        self.describe(images, tree)
    }
}

/// ConvNeXt as a detection backbone: the stage outputs at `out_indices`, each through its own
/// channels-first layer norm `norm{i}`, as the official detection wrapper adds.
pub struct ConvNeXtBackbone {
    trunk: ConvNeXt,
    out_indices: Vec<usize>,
    norms: Vec<Norm>,
}

impl ConvNeXtBackbone {
    /// The detection backbone, parameters under `scope` (a detector passes `backbone`).
    pub fn new(cfg: &ConvNeXtConfig, scope: &Scope, seed: u64) -> Result<Self> {
        let trunk = ConvNeXt::new(cfg, scope, seed)?;
        if cfg.out_indices.is_empty() || cfg.out_indices.iter().any(|&i| i > 3) {
            bail!("ConvNeXt out_indices must be a non-empty subset of 0..=3, got {:?}", cfg.out_indices);
        }
        let norms = cfg
            .out_indices
            .iter()
            .map(|&i| Norm::new(&scope.pp(format!("norm{i}")), trunk.dims()[i]))
            .collect::<Result<_>>()?;
        Ok(Self { trunk, out_indices: cfg.out_indices.clone(), norms })
    }
}

impl Backbone for ConvNeXtBackbone {
    fn forward(&self, images: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let stages = self.trunk.forward_stages(images, train)?;
        self.out_indices
            .iter()
            .zip(&self.norms)
            .map(|(&i, norm)| norm.forward(&stages[i])?.permute((0, 3, 1, 2))?.contiguous())
            .collect()
    }

    fn out_channels(&self) -> Vec<usize> {
        self.out_indices.iter().map(|&i| self.trunk.dims()[i]).collect()
    }

    fn strides(&self) -> Vec<usize> {
        self.out_indices.iter().map(|&i| 4 << i).collect()
    }

    fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<Vec<Shape>> {
        self.describe(images, tree)
    }
}

// What `nextdet analyze` counts (see `nextdet_analysis`): the official `models/convnext.py` and,
// for detection, `object_detection/mmdet/models/backbones/convnext.py`.

impl ConvNeXt {
    /// Describes the trunk on `images: [N, C, H, W]` and returns each stage's output shape
    /// (NCHW): the downsampling layers (patchify convs; ConvNeXt's channels-first layer norm,
    /// tensor ops) and the blocks.
    pub fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<Vec<Shape>> {
        let mut outs = Vec::with_capacity(4);
        let mut x = images.to_vec();
        for (i, (down, blocks)) in self.downsample.iter().zip(&self.stages).enumerate() {
            x = tree.scope(format!("downsample_layers.{i}"), |t| match down {
                Downsample::Stem { conv, norm } => {
                    let y = conv.cost("0", &x, t)?;
                    norm.cost("1", &y, Via::TensorOps, t)
                }
                Downsample::Transition { norm, conv } => {
                    norm.cost("0", &x, Via::TensorOps, t)?;
                    conv.cost("1", &x, t)
                }
            })?;
            for (b, block) in blocks.iter().enumerate() {
                x = tree.scope(format!("stages.{i}.{b}"), |t| block.cost(&x, t))?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }
}

impl ConvNeXtClassifier {
    /// The trunk, global average pooling (`x.mean([-2, -1])`: tensor ops), `norm`
    /// (`nn.LayerNorm`) and `head`.
    fn describe(&self, images: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let last = self.trunk.cost(images, tree)?.pop().expect("four stages");
        let pooled = [last[0], last[1]];
        self.norm.cost("norm", &pooled, Via::Module, tree)?;
        tree.linear("head", &pooled, self.head.weight().dims(), true)
    }
}

impl ConvNeXtBackbone {
    /// The trunk and, per output, `norm{i}` (the channels-first layer norm class: tensor ops).
    fn describe(&self, images: &[usize], tree: &mut CostTree) -> Result<Vec<Shape>> {
        let stages = self.trunk.cost(images, tree)?;
        self.out_indices
            .iter()
            .zip(&self.norms)
            .map(|(&i, norm)| norm.cost(&format!("norm{i}"), &stages[i], Via::TensorOps, tree))
            .collect()
    }
}
