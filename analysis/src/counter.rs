//! The operators a cost belongs to, how a layer is run in the reference implementation, and the
//! counting conventions.

use serde::Serialize;

/// An operator, named as fvcore names it in `by_operator()` (mmcv counts per module type, which
/// maps onto the same kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Convolution, transposed included (`aten::_convolution`, fvcore's `conv`).
    Conv,
    /// A linear layer (`aten::linear`, `aten::addmm`).
    Linear,
    /// A matrix multiply of two activations (`aten::matmul`, `bmm`, `einsum`).
    Matmul,
    /// Batch norm (`aten::batch_norm`).
    BatchNorm,
    /// Layer norm (`aten::layer_norm`).
    LayerNorm,
    /// Group norm (`aten::group_norm`).
    GroupNorm,
    /// Adaptive average pooling (`aten::adaptive_avg_pool2d`).
    AdaptiveAvgPool2d,
    /// Max pooling (`aten::max_pool2d`; fvcore has no handle for it).
    MaxPool2d,
    /// Nearest upsampling (`aten::upsample_nearest2d`).
    UpsampleNearest2d,
    /// ReLU.
    Relu,
    /// GELU.
    Gelu,
    /// Softmax.
    Softmax,
    /// RoIAlign (a custom op to both counters).
    RoiAlign,
}

impl Op {
    /// The name fvcore's `by_operator()` uses.
    pub fn name(self) -> &'static str {
        match self {
            Op::Conv => "conv",
            Op::Linear => "linear",
            Op::Matmul => "matmul",
            Op::BatchNorm => "batch_norm",
            Op::LayerNorm => "layer_norm",
            Op::GroupNorm => "group_norm",
            Op::AdaptiveAvgPool2d => "adaptive_avg_pool2d",
            Op::MaxPool2d => "max_pool2d",
            Op::UpsampleNearest2d => "upsample_nearest2d",
            Op::Relu => "relu",
            Op::Gelu => "gelu",
            Op::Softmax => "softmax",
            Op::RoiAlign => "roi_align",
        }
    }

    /// Whether fvcore counted the op before its March 2021 handles (convolutions and matrix
    /// multiplies only), the count ConvNeXt's classifier tables print.
    pub fn is_conv_or_matmul(self) -> bool {
        matches!(self, Op::Conv | Op::Linear | Op::Matmul)
    }
}

/// How the reference implementation runs a layer, which decides what each counter sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// An `nn.Module` of a type mmcv hooks (`nn.Conv2d`, `nn.Linear`, `nn.BatchNorm2d`,
    /// `nn.LayerNorm`, `nn.ReLU`, `nn.MaxPool2d`, ...); fvcore sees its aten op.
    Module,
    /// The aten op called from a module mmcv does not hook or from a function (ConvNeXt's
    /// channels-last `LayerNorm` class calling `F.layer_norm`, `nn.SyncBatchNorm`, `nn.GELU`,
    /// `F.relu`, `F.interpolate`, `F.max_pool2d`): fvcore counts it, mmcv does not.
    Functional,
    /// Written out as elementwise tensor ops (ConvNeXt's channels-first layer norm: `mean`,
    /// `pow`, `sqrt`; `x.mean([-2, -1])` as global pooling): neither counter counts it.
    TensorOps,
}

/// A counting convention: which tool's rules give the FLOPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Counter {
    /// fvcore's `FlopCountAnalysis` with its default handles (fvcore 0.1.5).
    Fvcore,
    /// fvcore with only its convolution and matrix-multiply handles: what ConvNeXt's Tables 1,
    /// 2 and 10 print (norms counted would add 0.1% to 0.3% and change XL's printed digit).
    FvcoreConvMatmul,
    /// mmcv's `get_model_complexity_info` (mmcv 1.x), as mmdetection's `get_flops.py` runs it.
    Mmcv,
}

impl Counter {
    /// A short name for listings (`fvcore`, `fvcore-conv-matmul`, `mmcv`).
    pub fn name(self) -> &'static str {
        match self {
            Counter::Fvcore => "fvcore",
            Counter::FvcoreConvMatmul => "fvcore-conv-matmul",
            Counter::Mmcv => "mmcv",
        }
    }
}

/// One recorded operation: its kind and its count under each convention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// fvcore's FLOPs.
    pub fvcore: u64,
    /// mmcv's FLOPs.
    pub mmcv: u64,
    /// fvcore's activations (output elements of convolutions, linears, matrix multiplies).
    pub acts: u64,
}

impl Counts {
    /// The FLOPs of `op` under `counter`.
    pub fn flops(&self, op: Op, counter: Counter) -> u64 {
        match counter {
            Counter::Fvcore => self.fvcore,
            Counter::FvcoreConvMatmul if op.is_conv_or_matmul() => self.fvcore,
            Counter::FvcoreConvMatmul => 0,
            Counter::Mmcv => self.mmcv,
        }
    }
}
