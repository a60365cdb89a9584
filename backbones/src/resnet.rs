//! ResNet-50/101 with bottleneck blocks, torchvision's parameter names (`conv1`, `bn1`,
//! `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`) and frozen batch norm as detection uses it
//! (statistics never updated; mmdetection's `norm_eval=True`).

use crate::config::ResNetConfig;
use crate::{Backbone, Classifier};
use candle_core::{bail, Result, Tensor};
use nextdet_analysis::{Act, Conv2d as AnalysisConv, CostTree, Norm, NormKind, Pool, Shape, Via};
use nextdet_ops::{bias_add, linear_no_bias, relu, Init, Scope};

/// Batch norm with frozen statistics: `(x - mean) / sqrt(var + 1e-5) * weight + bias` per channel.
struct FrozenBatchNorm {
    weight: Tensor,
    bias: Tensor,
    mean: Tensor,
    var: Tensor,
}

impl FrozenBatchNorm {
    fn new(scope: &Scope, c: usize, trainable: bool) -> Result<Self> {
        let (weight, bias) = if trainable {
            (scope.param("weight", c, Init::Const(1.0))?, scope.param("bias", c, Init::Const(0.0))?)
        } else {
            (scope.buffer("weight", c, Init::Const(1.0))?, scope.buffer("bias", c, Init::Const(0.0))?)
        };
        let mean = scope.buffer("running_mean", c, Init::Const(0.0))?;
        let var = scope.buffer("running_var", c, Init::Const(1.0))?;
        scope.buffer("num_batches_tracked", (), Init::Const(0.0))?;
        Ok(Self { weight, bias, mean, var })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let scale = (&self.weight / (&self.var + 1e-5)?.sqrt()?)?;
        let shift = (&self.bias - (&self.mean * &scale)?)?;
        x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?.broadcast_add(&shift.reshape((1, c, 1, 1))?)
    }
}

/// A bias-free convolution followed by frozen batch norm.
struct ConvBn {
    weight: Tensor,
    bn: FrozenBatchNorm,
    stride: usize,
    padding: usize,
}

impl ConvBn {
    /// `conv_scope.weight: [out, inp, k, k]` and the norm under `bn_scope`; He-uniform init with
    /// the variance of torchvision's `kaiming_normal_(mode="fan_out")`.
    fn new(
        conv_scope: &Scope,
        bn_scope: &Scope,
        inp: usize,
        out: usize,
        k: usize,
        stride: usize,
        trainable: bool,
    ) -> Result<Self> {
        let init = Init::Uniform { bound: (6.0 / (out * k * k) as f64).sqrt() };
        let weight = if trainable {
            conv_scope.param("weight", (out, inp, k, k), init)?
        } else {
            conv_scope.buffer("weight", (out, inp, k, k), init)?
        };
        Ok(Self { weight, bn: FrozenBatchNorm::new(bn_scope, out, trainable)?, stride, padding: k / 2 })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.bn.forward(&nextdet_ops::conv2d::conv2d(x, &self.weight, None, self.stride, self.padding)?)
    }
}

/// The bottleneck: 1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, plus the shortcut.
struct Bottleneck {
    c1: ConvBn,
    c2: ConvBn,
    c3: ConvBn,
    downsample: Option<ConvBn>,
}

impl Bottleneck {
    fn new(scope: &Scope, inp: usize, width: usize, stride: usize, trainable: bool) -> Result<Self> {
        let out = width * 4;
        let downsample = if stride != 1 || inp != out {
            let d = scope.pp("downsample");
            Some(ConvBn::new(&d.pp(0), &d.pp(1), inp, out, 1, stride, trainable)?)
        } else {
            None
        };
        Ok(Self {
            c1: ConvBn::new(&scope.pp("conv1"), &scope.pp("bn1"), inp, width, 1, 1, trainable)?,
            c2: ConvBn::new(&scope.pp("conv2"), &scope.pp("bn2"), width, width, 3, stride, trainable)?,
            c3: ConvBn::new(&scope.pp("conv3"), &scope.pp("bn3"), width, out, 1, 1, trainable)?,
            downsample,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = relu(&self.c1.forward(x)?)?;
        let y = relu(&self.c2.forward(&y)?)?;
        let y = self.c3.forward(&y)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        relu(&(y + shortcut)?)
    }
}

/// ResNet: stem, four stages, and either the classification head `fc` or detection outputs.
pub struct ResNet {
    stem: ConvBn,
    layers: Vec<Vec<Bottleneck>>,
    fc: Option<(Tensor, Tensor)>,
    out_indices: Vec<usize>,
}

impl ResNet {
    fn new(cfg: &ResNetConfig, scope: &Scope) -> Result<Self> {
        let blocks = match cfg.depth {
            50 => [3, 4, 6, 3],
            101 => [3, 4, 23, 3],
            d => bail!("ResNet depth must be 50 or 101, got {d}"),
        };
        if cfg.out_indices.is_empty() || cfg.out_indices.iter().any(|&i| i > 3) {
            bail!("ResNet out_indices must be a non-empty subset of 0..=3, got {:?}", cfg.out_indices);
        }
        let frozen = |stage: i64| stage <= cfg.frozen_stages;
        let stem = ConvBn::new(&scope.pp("conv1"), &scope.pp("bn1"), 3, 64, 7, 2, !frozen(0))?;
        let mut inp = 64;
        let mut layers = Vec::new();
        for (i, &n) in blocks.iter().enumerate() {
            let width = 64 << i;
            let s = scope.pp(format!("layer{}", i + 1));
            let stage = (0..n)
                .map(|b| {
                    let stride = if b == 0 && i > 0 { 2 } else { 1 };
                    let block = Bottleneck::new(&s.pp(b), inp, width, stride, !frozen(i as i64 + 1));
                    inp = width * 4;
                    block
                })
                .collect::<Result<_>>()?;
            layers.push(stage);
        }
        Ok(Self { stem, layers, fc: None, out_indices: cfg.out_indices.clone() })
    }

    /// The detection backbone (no `fc`).
    pub fn new_backbone(cfg: &ResNetConfig, scope: &Scope) -> Result<Self> {
        Self::new(cfg, scope)
    }

    /// The classifier with an `fc` head of `num_classes` outputs.
    pub fn new_classifier(cfg: &ResNetConfig, num_classes: usize, scope: &Scope) -> Result<Self> {
        let mut net = Self::new(cfg, scope)?;
        let fc = scope.pp("fc");
        let bound = 1.0 / (2048f64).sqrt();
        net.fc = Some((
            fc.param("weight", (num_classes, 2048), Init::Uniform { bound })?,
            fc.param("bias", num_classes, Init::Uniform { bound })?,
        ));
        Ok(net)
    }

    /// Outputs of layer1..layer4, NCHW.
    fn stages(&self, images: &Tensor) -> Result<Vec<Tensor>> {
        let x = relu(&self.stem.forward(images)?)?;
        let mut x = nextdet_ops::max_pool_3x3_stride2_nonnegative(&x)?;
        let mut outs = Vec::with_capacity(4);
        for stage in &self.layers {
            for block in stage {
                x = block.forward(&x)?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }
}

impl Backbone for ResNet {
    fn forward(&self, images: &Tensor, _train: bool) -> Result<Vec<Tensor>> {
        let stages = self.stages(images)?;
        Ok(self.out_indices.iter().map(|&i| stages[i].clone()).collect())
    }

    fn out_channels(&self) -> Vec<usize> {
        self.out_indices.iter().map(|&i| 256 << i).collect()
    }

    fn strides(&self) -> Vec<usize> {
        self.out_indices.iter().map(|&i| 4 << i).collect()
    }

    fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<Vec<Shape>> {
        let stages = self.stage_costs(images, tree)?;
        Ok(self.out_indices.iter().map(|&i| stages[i].clone()).collect())
    }
}

impl Classifier for ResNet {
    fn forward(&self, images: &Tensor, _train: bool) -> Result<Tensor> {
        let Some((w, b)) = &self.fc else { bail!("this ResNet was built without a classification head") };
        let pooled = self.stages(images)?.pop().expect("four stages").mean((2, 3))?;
        bias_add(&linear_no_bias(&pooled, w)?, b)
    }

    fn num_classes(&self) -> usize {
        self.fc.as_ref().map_or(0, |(w, _)| w.dims()[0])
    }

    fn cost(&self, images: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let Some((w, _)) = &self.fc else { bail!("this ResNet was built without a classification head") };
        let last = self.stage_costs(images, tree)?.pop().expect("four stages");
        let pooled = tree.pool("avgpool", &last, Pool::AdaptiveAvg { size: 1 }, Via::Module)?;
        tree.linear("fc", &[pooled[0], pooled[1]], w.dims(), true)
    }
}

// What `nextdet analyze` counts: torchvision's `resnet.py` (mmdetection's ResNet has the same
// modules): `nn.Conv2d`, `nn.BatchNorm2d` in evaluation mode, the one `nn.ReLU` module each
// block calls three times, `nn.MaxPool2d`, `nn.AdaptiveAvgPool2d` and `fc`.

impl ConvBn {
    fn cost(&self, conv: &str, bn: &str, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let c = AnalysisConv::new(self.weight.dims()).stride(self.stride).padding(self.padding);
        let y = tree.conv2d(conv, x, c)?;
        let channels = self.bn.weight.dim(0)?;
        tree.norm(bn, &y, Norm { kind: NormKind::BatchNorm, channels, affine: true, via: Via::Module })
    }
}

impl Bottleneck {
    fn cost(&self, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let y = self.c1.cost("conv1", "bn1", x, tree)?;
        let y = tree.act("relu", &y, Act::Relu, Via::Module);
        let y = self.c2.cost("conv2", "bn2", &y, tree)?;
        let y = tree.act("relu", &y, Act::Relu, Via::Module);
        let y = self.c3.cost("conv3", "bn3", &y, tree)?;
        if let Some(d) = &self.downsample {
            d.cost("downsample.0", "downsample.1", x, tree)?;
        }
        Ok(tree.act("relu", &y, Act::Relu, Via::Module))
    }
}

impl ResNet {
    /// Describes the stem and the four stages on `images`; returns each stage's output shape.
    fn stage_costs(&self, images: &[usize], tree: &mut CostTree) -> Result<Vec<Shape>> {
        let x = self.stem.cost("conv1", "bn1", images, tree)?;
        let x = tree.act("relu", &x, Act::Relu, Via::Module);
        let mut x = tree.pool("maxpool", &x, Pool::Max { kernel: 3, stride: 2, padding: 1 }, Via::Module)?;
        let mut outs = Vec::with_capacity(4);
        for (i, stage) in self.layers.iter().enumerate() {
            for (b, block) in stage.iter().enumerate() {
                x = tree.scope(format!("layer{}.{b}", i + 1), |t| block.cost(&x, t))?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }
}
