//! mmdetection 2.11's `FPN` neck (`mmdet/models/necks/fpn.py`) with its parameter names, so the
//! published checkpoints' `neck.*` tensors load as they are.
//!
//! Shapes: backbone features `C_i: [N, in_channels[i], H_i, W_i]`, finest first, each level half
//! the size of the previous one. For the levels from `start_level` on, a 1x1 lateral conv maps
//! `C_i` to `out_channels`; top-down, each lateral gets the coarser (already merged) lateral
//! added after a nearest resize to its own size (`F.interpolate(size=prev_shape)`, so odd sizes
//! work); a 3x3 conv then gives `P_i`. Levels beyond the backbone's (`num_outs` more than the used
//! inputs) are `max_pool2d(P_last, 1, stride=2)` of the last output (`add_extra_convs=False`,
//! the recipes' setting). Convs are initialised xavier-uniform with zero bias, as mmdet does.

use candle_core::{bail, Result, Tensor};
use nextdet_analysis::{Conv2d as ConvSpec, CostTree, Pool, Shape, Via};
use nextdet_ops::nn::{xavier_uniform, Conv2d};
use nextdet_ops::{resize_nearest, subsample_stride2, Scope};
use serde::Deserialize;

/// The neck section of a config, mmdet's `neck=dict(type='FPN', ...)` without the type.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FpnConfig {
    /// Channels of each backbone level; derived from the backbone when absent, and checked
    /// against it when given.
    #[serde(default)]
    pub in_channels: Option<Vec<usize>>,
    /// Channels of every pyramid level.
    pub out_channels: usize,
    /// Number of pyramid levels produced (5 in the recipes: P2..P6).
    pub num_outs: usize,
    /// First backbone level used (0 in the recipes).
    #[serde(default)]
    pub start_level: usize,
    /// Extra levels from convolutions; only `false` (max-pool extra levels) is implemented.
    #[serde(default)]
    pub add_extra_convs: bool,
}

/// The FPN: one lateral and one output conv per used backbone level.
pub struct Fpn {
    lateral_convs: Vec<Conv2d>,
    fpn_convs: Vec<Conv2d>,
    start_level: usize,
    num_outs: usize,
}

impl Fpn {
    /// Builds the FPN for a backbone with `in_channels` per level under `scope` (the caller
    /// passes `root.pp("neck")`): parameters `lateral_convs.{i}.conv.{weight,bias}` and
    /// `fpn_convs.{i}.conv.{weight,bias}`, `i` counting from `start_level`. A config whose
    /// `in_channels` differs from the backbone's, a `start_level` past the backbone, fewer
    /// outputs than used levels, or `add_extra_convs: true` is an error naming the key.
    pub fn new(cfg: &FpnConfig, in_channels: &[usize], scope: &Scope) -> Result<Self> {
        if let Some(given) = &cfg.in_channels {
            if given.as_slice() != in_channels {
                bail!("neck.in_channels: the config says {given:?} but the backbone gives {in_channels:?}");
            }
        }
        if cfg.add_extra_convs {
            bail!("neck.add_extra_convs: only false (max-pool extra levels) is supported");
        }
        if cfg.start_level >= in_channels.len() {
            bail!("neck.start_level: {} but the backbone has {} levels", cfg.start_level, in_channels.len());
        }
        let used = in_channels.len() - cfg.start_level;
        if cfg.num_outs < used {
            bail!("neck.num_outs: {} is fewer than the {used} backbone levels used", cfg.num_outs);
        }
        if cfg.out_channels == 0 {
            bail!("neck.out_channels: must be positive");
        }
        let out = cfg.out_channels;
        let mut lateral_convs = Vec::with_capacity(used);
        let mut fpn_convs = Vec::with_capacity(used);
        for (i, &c) in in_channels[cfg.start_level..].iter().enumerate() {
            let s = scope.pp("lateral_convs").pp(i).pp("conv");
            lateral_convs.push(Conv2d::new(&s, c, out, 1, 1, 0, xavier_uniform(c, out))?);
            let s = scope.pp("fpn_convs").pp(i).pp("conv");
            fpn_convs.push(Conv2d::new(&s, out, out, 3, 1, 1, xavier_uniform(out * 9, out * 9))?);
        }
        Ok(Self { lateral_convs, fpn_convs, start_level: cfg.start_level, num_outs: cfg.num_outs })
    }

    /// Number of pyramid levels returned by [`Fpn::forward`].
    pub fn num_outs(&self) -> usize {
        self.num_outs
    }

    /// The pyramid: `num_outs` NCHW tensors with `out_channels` channels, finest first, from the
    /// backbone's features (all levels the neck was built for, finest first). Differentiable.
    pub fn forward(&self, feats: &[Tensor]) -> Result<Vec<Tensor>> {
        let used = self.lateral_convs.len();
        if feats.len() != self.start_level + used {
            bail!("Fpn::forward: {} feature maps for a neck built for {}", feats.len(), self.start_level + used);
        }
        let mut laterals: Vec<Tensor> = self
            .lateral_convs
            .iter()
            .zip(&feats[self.start_level..])
            .map(|(conv, x)| conv.forward(x))
            .collect::<Result<_>>()?;
        for i in (1..used).rev() {
            let (_, _, h, w) = laterals[i - 1].dims4()?;
            let up = resize_nearest(&laterals[i], (h, w))?;
            laterals[i - 1] = (&laterals[i - 1] + up)?;
        }
        let mut outs: Vec<Tensor> =
            self.fpn_convs.iter().zip(&laterals).map(|(conv, x)| conv.forward(x)).collect::<Result<_>>()?;
        while outs.len() < self.num_outs {
            let last = outs.last().expect("at least one used level");
            outs.push(subsample_stride2(last)?);
        }
        Ok(outs)
    }
}

/// The `nn.Conv2d` module `name` on `x` (a `ConvModule`'s `conv`).
fn conv_cost(tree: &mut CostTree, name: &str, x: &[usize], conv: &Conv2d) -> Result<Shape> {
    let (weight, bias, stride, padding) = conv.parts();
    tree.conv2d(name, x, ConvSpec::new(weight.dims()).bias(bias.is_some()).stride(stride).padding(padding))
}

impl Fpn {
    /// Describes the neck on the backbone's output shapes as mmdetection's `FPN` runs it:
    /// `lateral_convs.{i}.conv` and `fpn_convs.{i}.conv` (`ConvModule`s without norm or
    /// activation), the top-down `F.interpolate` and the extra levels' `F.max_pool2d(x, 1, 2)`
    /// (functions: fvcore counts the upsampling, mmcv neither); returns the pyramid's shapes.
    pub fn cost(&self, feats: &[Shape], tree: &mut CostTree) -> Result<Vec<Shape>> {
        let used = self.lateral_convs.len();
        if feats.len() != self.start_level + used {
            bail!("Fpn::cost: {} feature maps for a neck built for {}", feats.len(), self.start_level + used);
        }
        let mut laterals = Vec::with_capacity(used);
        for (i, (conv, x)) in self.lateral_convs.iter().zip(&feats[self.start_level..]).enumerate() {
            laterals.push(tree.scope(format!("lateral_convs.{i}"), |t| conv_cost(t, "conv", x, conv))?);
        }
        for i in (1..used).rev() {
            tree.upsample_nearest("", &laterals[i - 1], Via::Functional);
        }
        let mut outs = Vec::with_capacity(self.num_outs);
        for (i, (conv, x)) in self.fpn_convs.iter().zip(&laterals).enumerate() {
            outs.push(tree.scope(format!("fpn_convs.{i}"), |t| conv_cost(t, "conv", x, conv))?);
        }
        while outs.len() < self.num_outs {
            let last = outs.last().expect("at least one used level").clone();
            outs.push(tree.pool("", &last, Pool::Max { kernel: 1, stride: 2, padding: 0 }, Via::Functional)?);
        }
        Ok(outs)
    }
}
