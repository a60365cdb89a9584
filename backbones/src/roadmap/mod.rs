//! The ConvNeXt paper's roadmap as one configurable classifier: ResNet-50 "modernized" one
//! design decision at a time into ConvNeXt-T (arXiv 2201.03545, Section 2, Figure 2 and
//! Table 10). Each step is a `configs/roadmap/<step>.yaml`; the options are [`RoadmapConfig`]'s.
//!
//! The layout and module names are those of the PyTorch reference
//! `tests/reference/roadmap_ref.py`, which follow the official ConvNeXt code
//! (`models/convnext.py`), so that the last step (`separate_downsampling`) has exactly
//! ConvNeXt-T's parameters and loads its checkpoints:
//!
//! - `downsample_layers.0`: the stem, ResNet's (conv, norm, act, max pool as `.0` to `.3`) or a
//!   patchify conv (`.0`) with an optional norm (`.1`);
//! - `downsample_layers.{1,2,3}`: with separate downsampling, norm (`.0`) then conv 2x2/2 (`.1`);
//! - `stages.S.B`: the blocks (see `blocks.rs`);
//! - `norm` (optional layer norm after global average pooling) and `head`.
//!
//! A conv or linear directly followed by a batch norm has no bias; every other one has one.
//! Everything runs on NCHW as the reference does, which is slower than `ConvNeXtClassifier`'s
//! channels-last path for the same weights.

mod blocks;
pub mod config;
mod layers;

use crate::layers::{drop_path_rates, DropRng};
use crate::Classifier;
use blocks::Block;
use candle_core::{Result, Tensor};
pub use config::{ActKind, BlockKind, DownsampleKind, NormChoice, RoadmapConfig, Stem};
use layers::{act, act_cost, max_pool, max_pool_cost, Conv, Linear, Norm};
use nextdet_analysis::{CostTree, NormKind, Shape, Via};
use nextdet_ops::Scope;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::{Arc, Mutex};

/// The stem, or a separate downsampling layer.
struct Downsample {
    /// Norm before the conv (separate downsampling).
    pre_norm: Option<Norm>,
    conv: Conv,
    /// Norm after the conv (the stems), and the ResNet stem's activation and max pool.
    post_norm: Option<Norm>,
    act_pool: Option<config::ActKind>,
}

/// A roadmap step as an image classifier (no detection mode).
pub struct RoadmapClassifier {
    downsample: Vec<Downsample>,
    stages: Vec<Vec<Block>>,
    norm: Option<Norm>,
    head: Linear,
    num_classes: usize,
}

impl RoadmapClassifier {
    /// The classifier `cfg` describes with `num_classes` outputs, parameters under `scope`;
    /// `seed` drives stochastic depth.
    pub fn new(cfg: &RoadmapConfig, num_classes: usize, scope: &Scope, seed: u64) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let (dims, width) = (&cfg.dims, cfg.widths());
        let bn = cfg.norm == NormChoice::Bn;
        let ds = scope.pp("downsample_layers");
        let s = ds.pp(0);
        let mut downsample = vec![match cfg.stem {
            Stem::Resnet => Downsample {
                pre_norm: None,
                conv: Conv::new(&s.pp(0), 3, dims[0], 7, 2, 3, false, false)?,
                post_norm: Some(Norm::new(&s.pp(1), cfg.norm, dims[0])?),
                act_pool: Some(cfg.act),
            },
            Stem::Patchify => Downsample {
                pre_norm: None,
                conv: Conv::new(&s.pp(0), 3, dims[0], 4, 4, 0, false, !(bn && cfg.stem_norm))?,
                post_norm: if cfg.stem_norm { Some(Norm::new(&s.pp(1), cfg.norm, dims[0])?) } else { None },
                act_pool: None,
            },
        }];
        let separate = cfg.downsample == DownsampleKind::Separate;
        if separate {
            for i in 1..4 {
                let s = ds.pp(i);
                downsample.push(Downsample {
                    pre_norm: Some(Norm::new(&s.pp(0), cfg.norm, width[i - 1])?),
                    conv: Conv::new(&s.pp(1), width[i - 1], width[i], 2, 2, 0, false, true)?,
                    post_norm: None,
                    act_pool: None,
                });
            }
        }
        let rng: DropRng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let mut rates = drop_path_rates(cfg.drop_path_rate, cfg.depths.iter().sum()).into_iter();
        let mut stages = Vec::with_capacity(4);
        let mut inp = dims[0];
        for (i, &depth) in cfg.depths.iter().enumerate() {
            if separate && i > 0 {
                inp = width[i];
            }
            let s = scope.pp("stages").pp(i);
            let mut blocks = Vec::with_capacity(depth);
            for b in 0..depth {
                let stride = if b == 0 && i > 0 && !separate { 2 } else { 1 };
                let rate = rates.next().unwrap_or(0.0);
                blocks.push(Block::new(&s.pp(b), inp, dims[i], stride, cfg, rate, rng.clone())?);
                inp = width[i];
            }
            stages.push(blocks);
        }
        let norm = if cfg.head_norm { Some(Norm::new(&scope.pp("norm"), NormChoice::Ln, width[3])?) } else { None };
        let head = Linear::new(&scope.pp("head"), width[3], num_classes, true)?;
        Ok(Self { downsample, stages, norm, head, num_classes })
    }
}

impl Classifier for RoadmapClassifier {
    fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = images.clone();
        for (i, blocks) in self.stages.iter().enumerate() {
            if let Some(d) = self.downsample.get(i) {
                if let Some(n) = &d.pre_norm {
                    x = n.forward_nchw(&x, train)?;
                }
                x = d.conv.forward(&x)?;
                if let Some(n) = &d.post_norm {
                    x = n.forward_nchw(&x, train)?;
                }
                if let Some(a) = d.act_pool {
                    x = max_pool(&act(&x, a)?, a)?;
                }
            }
            for block in blocks {
                x = block.forward(&x, train)?;
            }
        }
        let mut pooled = x.mean((2, 3))?;
        if let Some(n) = &self.norm {
            pooled = n.forward_last(&pooled, train)?;
        }
        self.head.forward(&pooled)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// As fvcore counts the reference: `nn.Conv2d`, `nn.BatchNorm2d` and `nn.LayerNorm`
    /// modules, ConvNeXt's layer norms (channels-last: `F.layer_norm`; channels-first: tensor
    /// ops), `nn.ReLU` / `nn.GELU`, `nn.MaxPool2d`, pooling as `x.mean([-2, -1])`.
    fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let mut x = images.to_vec();
        for (i, blocks) in self.stages.iter().enumerate() {
            if let Some(d) = self.downsample.get(i) {
                x = tree.scope(format!("downsample_layers.{i}"), |t| {
                    let mut names = (0..4).map(|j| j.to_string());
                    let mut x = x.clone();
                    if let Some(n) = &d.pre_norm {
                        x = n.cost_nchw(&names.next().expect("4 names"), &x, t)?;
                    }
                    x = d.conv.cost(&names.next().expect("4 names"), &x, t)?;
                    if let Some(n) = &d.post_norm {
                        x = n.cost_nchw(&names.next().expect("4 names"), &x, t)?;
                    }
                    if let Some(a) = d.act_pool {
                        x = act_cost(&names.next().expect("4 names"), &x, a, t);
                        x = max_pool_cost(&names.next().expect("4 names"), &x, t)?;
                    }
                    Ok(x)
                })?;
            }
            for (b, block) in blocks.iter().enumerate() {
                x = tree.scope(format!("stages.{i}.{b}"), |t| block.cost(&x, t))?;
            }
        }
        let pooled = [x[0], x[1]];
        if self.norm.is_some() {
            let spec =
                nextdet_analysis::Norm { kind: NormKind::LayerNorm, channels: x[1], affine: true, via: Via::Module };
            tree.norm("norm", &pooled, spec)?;
        }
        self.head.cost("head", &pooled, tree)
    }
}
