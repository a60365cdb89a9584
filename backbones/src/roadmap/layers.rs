//! The roadmap's layers on PyTorch's NCHW layout (the reference's), each with its forward in
//! training and evaluation mode and its description for `nextdet analyze`: convolutions (dense,
//! depthwise, with or without bias), batch norm, the two layer norms, the activations and the
//! stem's max pool.

use super::config::{ActKind, NormChoice};
use crate::layers::{INIT_STD, LN_EPS};
use candle_core::{bail, Result, Tensor};
use nextdet_analysis::{Act, Conv2d as AnalysisConv, CostTree, Norm as AnalysisNorm, NormKind, Pool, Shape, Via};
use nextdet_ops::batch_norm_layer::BatchNorm;
use nextdet_ops::{bias_add, layer_norm, layer_norm_channels_first, linear_no_bias, Init, Scope};

/// ConvNeXt's init for every conv and linear weight (`_init_weights` in the official
/// `models/convnext.py`: truncated normal, std 0.02; biases zero).
const WEIGHT_INIT: Init = Init::TruncNormal { std: INIT_STD };

/// `nn.Conv2d` with a square kernel, one group or one per channel (depthwise).
pub(super) struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    depthwise: bool,
}

impl Conv {
    /// `scope.weight: [out, inp / groups, k, k]` and, with `bias`, `scope.bias: [out]`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scope: &Scope,
        inp: usize,
        out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        depthwise: bool,
        bias: bool,
    ) -> Result<Self> {
        let per_group = if depthwise { 1 } else { inp };
        let weight = scope.param("weight", (out, per_group, k, k), WEIGHT_INIT)?;
        let bias = if bias { Some(scope.param("bias", out, Init::Const(0.0))?) } else { None };
        Ok(Self { weight, bias, stride, padding, depthwise })
    }

    /// `[N, inp, H, W]` to `[N, out, H', W']`. A depthwise conv runs at stride 1 ("same"
    /// padding) and keeps every second pixel for stride 2 (`x[:, :, ::2, ::2]`, the same output).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.depthwise {
            return nextdet_ops::conv2d::conv2d(x, &self.weight, self.bias.as_ref(), self.stride, self.padding);
        }
        let bias = match &self.bias {
            Some(b) => b.clone(),
            None => Tensor::zeros(self.weight.dim(0)?, self.weight.dtype(), self.weight.device())?,
        };
        let y = nextdet_ops::depthwise_conv2d_nchw(x, &self.weight, &bias)?;
        match self.stride {
            1 => Ok(y),
            2 => nextdet_ops::subsample_stride2(&y),
            s => bail!("a depthwise conv of stride {s}"),
        }
    }

    /// Describes the conv as the `nn.Conv2d` module `name` on `x`.
    pub fn cost(&self, name: &str, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let groups = if self.depthwise { self.weight.dim(0)? } else { 1 };
        let c = AnalysisConv::new(self.weight.dims()).bias(self.bias.is_some());
        tree.conv2d(name, x, c.stride(self.stride).padding(self.padding).groups(groups))
    }
}

/// `nn.Linear` on channels-last input, with or without bias (a spatial-first block's pointwise
/// layers).
pub(super) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `scope.weight: [out, inp]` and, with `bias`, `scope.bias: [out]`.
    pub fn new(scope: &Scope, inp: usize, out: usize, bias: bool) -> Result<Self> {
        let weight = scope.param("weight", (out, inp), WEIGHT_INIT)?;
        let bias = if bias { Some(scope.param("bias", out, Init::Const(0.0))?) } else { None };
        Ok(Self { weight, bias })
    }

    /// `[..., inp]` to `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = linear_no_bias(x, &self.weight)?;
        match &self.bias {
            Some(b) => bias_add(&y, b),
            None => Ok(y),
        }
    }

    /// Describes the layer as the `nn.Linear` module `name` on `x`.
    pub fn cost(&self, name: &str, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        tree.linear(name, x, self.weight.dims(), self.bias.is_some())
    }
}

/// A norm over channels: batch norm or ConvNeXt's layer norm (eps 1e-6).
pub(super) enum Norm {
    /// Batch norm.
    Bn(BatchNorm),
    /// Layer norm: `(weight, bias)`.
    Ln(Tensor, Tensor),
}

impl Norm {
    /// The norm `kind` over `c` channels, parameters under `scope`.
    pub fn new(scope: &Scope, kind: NormChoice, c: usize) -> Result<Self> {
        Ok(match kind {
            NormChoice::Bn => Norm::Bn(BatchNorm::new(scope, c)?),
            NormChoice::Ln => {
                Norm::Ln(scope.param("weight", c, Init::Const(1.0))?, scope.param("bias", c, Init::Const(0.0))?)
            }
        })
    }

    /// On `[N, C, H, W]`.
    pub fn forward_nchw(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Norm::Bn(bn) => bn.forward(x, train),
            Norm::Ln(w, b) => layer_norm_channels_first(x, w, b, LN_EPS),
        }
    }

    /// On channels-last `[..., C]` (a batch norm takes its statistics over every other
    /// dimension, as the reference's `ChannelsLastBN`).
    pub fn forward_last(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Norm::Bn(bn) => {
                let c = x.dim(candle_core::D::Minus1)?;
                bn.forward(&x.reshape(((), c))?, train)?.reshape(x.dims())
            }
            Norm::Ln(w, b) => layer_norm(x, w, b, LN_EPS),
        }
    }

    fn spec(&self, via_ln: Via) -> Result<(NormKind, usize, Via)> {
        Ok(match self {
            Norm::Bn(bn) => (NormKind::BatchNorm, bn.channels(), Via::Module),
            Norm::Ln(w, _) => (NormKind::LayerNorm, w.dim(0)?, via_ln),
        })
    }

    /// Describes the norm `name` on NCHW `x`: `nn.BatchNorm2d`, or ConvNeXt's channels-first
    /// layer norm (tensor ops, counted by neither tool).
    pub fn cost_nchw(&self, name: &str, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let (kind, channels, via) = self.spec(Via::TensorOps)?;
        tree.norm(name, x, AnalysisNorm { kind, channels, affine: true, via })
    }

    /// Describes the norm `name` on channels-last `x` as a spatial-first block runs it: the
    /// reference's `ChannelsLastBN` (an `nn.BatchNorm2d` named `bn` inside `name`), or ConvNeXt's
    /// channels-last layer norm (`F.layer_norm`).
    pub fn cost_last(&self, name: &str, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let (kind, channels, via) = self.spec(Via::Functional)?;
        let name = if kind == NormKind::BatchNorm { format!("{name}.bn") } else { name.to_string() };
        tree.norm(&name, x, AnalysisNorm { kind, channels, affine: true, via })
    }
}

/// The activation function as one `nn.ReLU` / `nn.GELU` module.
pub(super) fn act(x: &Tensor, kind: ActKind) -> Result<Tensor> {
    match kind {
        ActKind::Relu => nextdet_ops::relu(x),
        ActKind::Gelu => x.gelu_erf(),
    }
}

/// Describes the activation module `name`.
pub(super) fn act_cost(name: &str, x: &[usize], kind: ActKind, tree: &mut CostTree) -> Shape {
    let a = match kind {
        ActKind::Relu => Act::Relu,
        ActKind::Gelu => Act::Gelu,
    };
    tree.act(name, x, a, Via::Module)
}

/// `nn.MaxPool2d(3, 2, 1)` on `[N, C, H, W]`. After a ReLU the input is non-negative and the
/// differentiable op of `nextdet_ops` applies directly; otherwise (GELU) the input is shifted by
/// its minimum first, which the max commutes with.
pub(super) fn max_pool(x: &Tensor, kind: ActKind) -> Result<Tensor> {
    if kind == ActKind::Relu {
        return nextdet_ops::max_pool_3x3_stride2_nonnegative(x);
    }
    let min = x.flatten_all()?.min(0)?.detach();
    nextdet_ops::max_pool_3x3_stride2_nonnegative(&x.broadcast_sub(&min)?)?.broadcast_add(&min)
}

/// Describes the max pool module `name`.
pub(super) fn max_pool_cost(name: &str, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
    tree.pool(name, x, Pool::Max { kernel: 3, stride: 2, padding: 1 }, Via::Module)
}
