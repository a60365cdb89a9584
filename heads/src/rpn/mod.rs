//! mmdetection 2.11's `RPNHead` (`mmdet/models/dense_heads/rpn_head.py`, `anchor_head.py`): the
//! region proposal network, its training loss ([`RpnHead::loss`]) and its proposals
//! ([`RpnHead::proposals`]).
//!
//! Shapes: `N` images, `L` pyramid levels, `A` anchors per position, level `l` is `H_l x W_l`.
//! The head is a shared 3x3 conv + ReLU, then 1x1 convs giving `cls: [N, A, H, W]` (one sigmoid
//! logit per anchor, `use_sigmoid_cls=True`) and `reg: [N, 4A, H, W]` (DeltaXYWH deltas).
//! Anchors of a level are ordered position-major then anchor (mmdet's), which is the order of
//! `cls.permute(0, 2, 3, 1)` flattened.

mod config;
mod proposals;
mod targets;

pub use config::{AnchorGeneratorConfig, AnchorGeneratorType, ProposalConfig, RpnHeadConfig, RpnTrainConfig};

use crate::assigner::MaxIoUAssigner;
use crate::sampler::RandomSampler;
use candle_core::{bail, Device, Result, Tensor};
use nextdet_analysis::{Act, CostTree, Via};
use nextdet_ops::nn::Conv2d;
use nextdet_ops::{relu, AnchorGenerator, DeltaXywhCoder, Init, Scope};

/// Raw head outputs per level.
#[derive(Clone, Debug)]
pub struct RpnOutput {
    /// `[N, A, H, W]` objectness logits per level.
    pub cls: Vec<Tensor>,
    /// `[N, 4A, H, W]` box deltas per level.
    pub reg: Vec<Tensor>,
}

impl RpnOutput {
    /// The outputs cut from the graph (inference keeps no activations behind them).
    pub fn detach(self) -> Self {
        let detach_all = |ts: Vec<Tensor>| ts.into_iter().map(|t| t.detach()).collect();
        Self { cls: detach_all(self.cls), reg: detach_all(self.reg) }
    }
}

/// The RPN head: layers, anchors, coder, assigner and sampler.
pub struct RpnHead {
    rpn_conv: Conv2d,
    rpn_cls: Conv2d,
    rpn_reg: Conv2d,
    anchors: AnchorGenerator,
    coder: DeltaXywhCoder,
    assigner: MaxIoUAssigner,
    sampler: RandomSampler,
    cfg: RpnHeadConfig,
}

impl RpnHead {
    /// Builds the head for `in_channels`-channel pyramid levels under `scope` (the caller passes
    /// `root.pp("rpn_head")`): `rpn_conv`, `rpn_cls` (`A` outputs) and `rpn_reg` (`4A`), each
    /// with `weight` and `bias`, initialised normal(0, 0.01) with zero bias as mmdet does.
    pub fn new(cfg: &RpnHeadConfig, in_channels: usize, scope: &Scope) -> Result<Self> {
        let ag = &cfg.anchor_generator;
        let anchors = AnchorGenerator::new(&ag.strides, &ag.ratios, &ag.scales)
            .map_err(|e| candle_core::Error::Msg(format!("rpn_head.anchor_generator: {e}")))?;
        if cfg.feat_channels == 0 || in_channels == 0 {
            bail!("rpn_head.feat_channels: {} and in_channels {in_channels} must be positive", cfg.feat_channels);
        }
        cfg.train.assigner.validate("rpn_head.train.assigner")?;
        cfg.train.sampler.validate("rpn_head.train.sampler")?;
        if cfg.loss_bbox.on_decoded_boxes() {
            bail!("rpn_head.loss_bbox: GIoULoss needs decoded boxes, which the RPN does not regress");
        }
        let a = anchors.num_base_anchors();
        let (f, init) = (cfg.feat_channels, Init::Normal { std: 0.01 });
        Ok(Self {
            rpn_conv: Conv2d::new(&scope.pp("rpn_conv"), in_channels, f, 3, 1, 1, init)?,
            rpn_cls: Conv2d::new(&scope.pp("rpn_cls"), f, a, 1, 1, 0, init)?,
            rpn_reg: Conv2d::new(&scope.pp("rpn_reg"), f, 4 * a, 1, 1, 0, init)?,
            anchors,
            coder: cfg.bbox_coder.coder("rpn_head")?,
            assigner: MaxIoUAssigner::new(&cfg.train.assigner),
            sampler: RandomSampler::new(&cfg.train.sampler),
            cfg: cfg.clone(),
        })
    }

    /// The configuration the head was built from.
    pub fn config(&self) -> &RpnHeadConfig {
        &self.cfg
    }

    /// Anchors per position `A`.
    pub fn num_anchors(&self) -> usize {
        self.anchors.num_base_anchors()
    }

    /// Head outputs for the pyramid `feats` (one NCHW tensor per anchor level).
    pub fn forward(&self, feats: &[Tensor]) -> Result<RpnOutput> {
        if feats.len() != self.anchors.num_levels() {
            bail!("RpnHead::forward: {} feature maps for {} anchor strides", feats.len(), self.anchors.num_levels());
        }
        let (mut cls, mut reg) = (Vec::with_capacity(feats.len()), Vec::with_capacity(feats.len()));
        for x in feats {
            let x = relu(&self.rpn_conv.forward(x)?)?;
            cls.push(self.rpn_cls.forward(&x)?);
            reg.push(self.rpn_reg.forward(&x)?);
        }
        Ok(RpnOutput { cls, reg })
    }

    /// `(images, (h, w) of each level's map)`, checking that `out` fits this head.
    fn featmap_sizes(&self, out: &RpnOutput) -> Result<(usize, Vec<(usize, usize)>)> {
        let a = self.num_anchors();
        if out.cls.len() != self.anchors.num_levels() || out.reg.len() != out.cls.len() {
            bail!(
                "RpnHead: {} cls / {} reg levels for {} anchor strides",
                out.cls.len(),
                out.reg.len(),
                self.anchors.num_levels()
            );
        }
        let mut n = None;
        let mut sizes = Vec::with_capacity(out.cls.len());
        for (c, r) in out.cls.iter().zip(&out.reg) {
            let (bn, ca, h, w) = c.dims4()?;
            if ca != a || r.dims() != [bn, 4 * a, h, w] || n.is_some_and(|m| m != bn) {
                bail!("RpnHead: level outputs {:?} / {:?} do not fit {a} anchors per position", c.dims(), r.dims());
            }
            n = Some(bn);
            sizes.push((h, w));
        }
        Ok((n.unwrap_or(0), sizes))
    }

    /// All anchors of all levels, concatenated: `[sum_l H_l * W_l * A, 4]` on the CPU.
    fn flat_anchors(&self, sizes: &[(usize, usize)]) -> Result<Tensor> {
        Tensor::cat(&self.anchors.grid_anchors(sizes, &Device::Cpu)?, 0)
    }
}

impl RpnHead {
    /// Describes the head on the pyramid levels `feats` as mmdetection's `RPNHead` runs it: per
    /// level `rpn_conv`, `F.relu` (a function: neither counter counts it), `rpn_cls`, `rpn_reg`.
    pub fn cost(&self, feats: &[Vec<usize>], tree: &mut CostTree) -> Result<()> {
        for x in feats {
            let y = crate::cost::conv2d(tree, "rpn_conv", x, &self.rpn_conv)?;
            let y = tree.act("", &y, Act::Relu, Via::Functional);
            crate::cost::conv2d(tree, "rpn_cls", &y, &self.rpn_cls)?;
            crate::cost::conv2d(tree, "rpn_reg", &y, &self.rpn_reg)?;
        }
        Ok(())
    }
}
