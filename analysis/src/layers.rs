//! One method per layer type: the shape a layer produces and what each counter counts for it.
//! The formulas are fvcore's handles (`jit_handles.py`: `conv_flop_count`, `linear_flop_jit`,
//! `matmul_flop_jit`, `norm_flop_counter`, `batchnorm_flop_jit` in evaluation mode,
//! `elementwise_flop_counter`) and mmcv's hooks (`flops_counter.py`: `conv_flops_counter_hook`,
//! `linear_flops_counter_hook`, `norm_flops_counter_hook`, `relu_flops_counter_hook`,
//! `pool_flops_counter_hook`, `upsample_flops_counter_hook`, `deconv_flops_counter_hook`).
//! Everything is counted for a forward pass in evaluation mode, as both tools are run.

use crate::counter::{Counts, Op, Via};
use crate::tree::{numel, CostTree, Shape};
use candle_core::{bail, Result};

/// A 2-D convolution (PyTorch's `nn.Conv2d`, or `nn.ConvTranspose2d` through
/// [`CostTree::conv_transpose2d`]), square or not, zero padding on every side.
#[derive(Clone, Copy, Debug)]
pub struct Conv2d<'a> {
    /// The weight's shape: `[out, in / groups, kh, kw]` (transposed: `[in, out / groups, kh, kw]`).
    pub weight: &'a [usize],
    /// Whether the layer has a bias parameter `[out]`.
    pub bias: bool,
    /// Stride of both spatial dimensions.
    pub stride: usize,
    /// Zero padding of every side.
    pub padding: usize,
    /// Groups (the channel count for a depthwise convolution).
    pub groups: usize,
    /// How the reference runs it (an `nn.Conv2d` module in every model here).
    pub via: Via,
}

impl<'a> Conv2d<'a> {
    /// A module convolution with weight shape `weight`, no bias, stride 1, no padding, one group.
    pub fn new(weight: &'a [usize]) -> Self {
        Self { weight, bias: false, stride: 1, padding: 0, groups: 1, via: Via::Module }
    }

    /// With a bias or not.
    pub fn bias(self, bias: bool) -> Self {
        Self { bias, ..self }
    }

    /// With this stride.
    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    /// With this padding.
    pub fn padding(self, padding: usize) -> Self {
        Self { padding, ..self }
    }

    /// With this many groups.
    pub fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }
}

/// The normalizations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// Batch norm in evaluation mode (running statistics).
    BatchNorm,
    /// Layer norm.
    LayerNorm,
    /// Group norm.
    GroupNorm,
}

/// A normalization layer over `channels` channels.
#[derive(Clone, Copy, Debug)]
pub struct Norm {
    /// Which normalization.
    pub kind: NormKind,
    /// Channels (the size of `weight` and `bias`).
    pub channels: usize,
    /// Whether it has `weight` and `bias` parameters.
    pub affine: bool,
    /// How the reference runs it ([`Via::Module`] for `nn.BatchNorm2d` / `nn.LayerNorm`,
    /// [`Via::Functional`] for ConvNeXt's channels-last class and `nn.SyncBatchNorm`,
    /// [`Via::TensorOps`] for ConvNeXt's channels-first one).
    pub via: Via,
}

/// The activation functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// ReLU.
    Relu,
    /// GELU.
    Gelu,
}

/// The pooling layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Max pooling with a square window.
    Max {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding of every side.
        padding: usize,
    },
    /// Adaptive average pooling to `size x size`.
    AdaptiveAvg {
        /// Output side.
        size: usize,
    },
}

/// The output side of a convolution or pooling window, or an error naming the layer.
fn out_side(tree: &CostTree, what: &str, side: usize, k: usize, stride: usize, padding: usize) -> Result<usize> {
    if stride == 0 || side + 2 * padding < k {
        bail!(
            "{}: {what} with kernel {k}, stride {stride}, padding {padding} does not fit a side of {side}",
            tree.path_or_root()
        );
    }
    Ok((side + 2 * padding - k) / stride + 1)
}

impl CostTree {
    /// A convolution module `name` on `x: [N, C, H, W]`; returns `[N, out, H', W']`.
    pub fn conv2d(&mut self, name: &str, x: &[usize], c: Conv2d) -> Result<Shape> {
        self.expect_rank("conv2d", x, 4)?;
        let &[out, in_g, kh, kw] = c.weight else {
            bail!("{}: conv2d weight {:?} is not rank 4", self.child_path(name), c.weight)
        };
        let (n, cin, h, w) = (x[0], x[1], x[2], x[3]);
        if c.groups == 0 || cin != in_g * c.groups || out % c.groups != 0 {
            bail!(
                "{}: conv2d weight {:?} with {} groups does not fit input {x:?}",
                self.child_path(name),
                c.weight,
                c.groups
            );
        }
        let what = format!("conv2d `{name}`");
        let (ho, wo) =
            (out_side(self, &what, h, kh, c.stride, c.padding)?, out_side(self, &what, w, kw, c.stride, c.padding)?);
        let positions = numel(&[n, ho, wo]);
        let macs = positions * numel(c.weight);
        let bias = if c.bias { positions * out as u64 } else { 0 };
        let counts = match c.via {
            Via::Module => Counts { fvcore: macs, mmcv: macs + bias, acts: positions * out as u64 },
            Via::Functional => Counts { fvcore: macs, mmcv: 0, acts: positions * out as u64 },
            Via::TensorOps => Counts::default(),
        };
        self.layer_params(name, c.weight, c.bias.then_some(out));
        self.record(name, Op::Conv, counts);
        Ok(vec![n, out, ho, wo])
    }

    /// A transposed convolution module `name` (no output padding) on `x: [N, C, H, W]`;
    /// returns `[N, out, H', W']` with `H' = (H - 1) stride - 2 padding + kh`.
    pub fn conv_transpose2d(&mut self, name: &str, x: &[usize], c: Conv2d) -> Result<Shape> {
        self.expect_rank("conv_transpose2d", x, 4)?;
        let &[cin, out_g, kh, kw] = c.weight else {
            bail!("{}: weight {:?} is not rank 4", self.child_path(name), c.weight)
        };
        let (n, h, w) = (x[0], x[2], x[3]);
        if x[1] != cin || c.groups == 0 || h == 0 || w == 0 || (h - 1) * c.stride + kh < 2 * c.padding + 1 {
            bail!("{}: conv_transpose2d weight {:?} does not fit input {x:?}", self.child_path(name), c.weight);
        }
        let out = out_g * c.groups;
        let (ho, wo) = ((h - 1) * c.stride + kh - 2 * c.padding, (w - 1) * c.stride + kw - 2 * c.padding);
        // Both tools count the multiply-adds at the input positions; mmcv adds the bias per
        // output element (mmcv 1.x's hook).
        let macs = numel(&[n, h, w]) * numel(c.weight);
        let bias = if c.bias { numel(&[n, out, ho, wo]) } else { 0 };
        let acts = numel(&[n, out, ho, wo]);
        let counts = match c.via {
            Via::Module => Counts { fvcore: macs, mmcv: macs + bias, acts },
            Via::Functional => Counts { fvcore: macs, mmcv: 0, acts },
            Via::TensorOps => Counts::default(),
        };
        self.layer_params(name, c.weight, c.bias.then_some(out));
        self.record(name, Op::Conv, counts);
        Ok(vec![n, out, ho, wo])
    }

    /// A linear module `name` with weight `[out, in]` on `x: [..., in]`; returns `[..., out]`.
    /// Both tools count `numel(x) * out`; neither counts the bias.
    pub fn linear(&mut self, name: &str, x: &[usize], weight: &[usize], bias: bool) -> Result<Shape> {
        let &[out, inp] = weight else { bail!("{}: linear weight {weight:?} is not rank 2", self.child_path(name)) };
        if x.last() != Some(&inp) {
            bail!("{}: linear weight {weight:?} does not fit input {x:?}", self.child_path(name));
        }
        let mut y = x.to_vec();
        *y.last_mut().expect("non-empty") = out;
        let macs = numel(x) * out as u64;
        self.layer_params(name, weight, bias.then_some(out));
        self.record(name, Op::Linear, Counts { fvcore: macs, mmcv: macs, acts: numel(&y) });
        Ok(y)
    }

    /// A functional matrix multiply `a @ b` (`a: [..., m, k]`, `b: [..., k, n]`, same batch
    /// dimensions) in the module `name` (`""`: the current one); returns `[..., m, n]`. fvcore
    /// counts `numel(a) * n`; mmcv nothing.
    pub fn matmul(&mut self, name: &str, a: &[usize], b: &[usize]) -> Result<Shape> {
        if a.len() < 2 || a.len() != b.len() || a[a.len() - 1] != b[b.len() - 2] || a[..a.len() - 2] != b[..b.len() - 2]
        {
            bail!("{}: matmul of {a:?} and {b:?}", self.child_path(name));
        }
        let mut y = a.to_vec();
        *y.last_mut().expect("rank >= 2") = b[b.len() - 1];
        let flops = numel(a) * b[b.len() - 1] as u64;
        self.record(name, Op::Matmul, Counts { fvcore: flops, mmcv: 0, acts: numel(&y) });
        Ok(y)
    }

    /// A normalization `name` of `x` (any layout; `n.channels` is the size of its parameters).
    /// fvcore: batch norm (evaluation) 2 FLOPs per element with affine parameters, 1 without;
    /// layer and group norm 5 and 4. mmcv (hooked modules only): 2 with affine, 1 without.
    pub fn norm(&mut self, name: &str, x: &[usize], n: Norm) -> Result<Shape> {
        let elems = numel(x);
        let fvcore = match (n.kind, n.affine) {
            (NormKind::BatchNorm, true) => 2 * elems,
            (NormKind::BatchNorm, false) => elems,
            (_, true) => 5 * elems,
            (_, false) => 4 * elems,
        };
        let mmcv = if n.affine { 2 * elems } else { elems };
        let counts = match n.via {
            Via::Module => Counts { fvcore, mmcv, acts: 0 },
            Via::Functional => Counts { fvcore, mmcv: 0, acts: 0 },
            Via::TensorOps => Counts::default(),
        };
        if n.affine {
            self.layer_params(name, &[n.channels], Some(n.channels));
        }
        let op = match n.kind {
            NormKind::BatchNorm => Op::BatchNorm,
            NormKind::LayerNorm => Op::LayerNorm,
            NormKind::GroupNorm => Op::GroupNorm,
        };
        self.record(name, op, counts);
        Ok(x.to_vec())
    }

    /// An activation `name` on `x`. fvcore counts none; mmcv counts an `nn.ReLU` module's
    /// output elements (and no GELU: not a type it hooks).
    pub fn act(&mut self, name: &str, x: &[usize], a: Act, via: Via) -> Shape {
        let (op, mmcv) = match a {
            Act::Relu => (Op::Relu, if via == Via::Module { numel(x) } else { 0 }),
            Act::Gelu => (Op::Gelu, 0),
        };
        self.record(name, op, Counts { fvcore: 0, mmcv, acts: 0 });
        x.to_vec()
    }

    /// A pooling layer `name` on `x: [N, C, H, W]`. fvcore: adaptive average pooling one FLOP
    /// per input element, max pooling none (no handle); mmcv (modules): one per input element.
    pub fn pool(&mut self, name: &str, x: &[usize], p: Pool, via: Via) -> Result<Shape> {
        self.expect_rank("pool", x, 4)?;
        let elems = numel(x);
        let (op, y, fvcore) = match p {
            Pool::Max { kernel, stride, padding } => {
                let what = format!("max pool `{name}`");
                let (ho, wo) = (
                    out_side(self, &what, x[2], kernel, stride, padding)?,
                    out_side(self, &what, x[3], kernel, stride, padding)?,
                );
                (Op::MaxPool2d, vec![x[0], x[1], ho, wo], 0)
            }
            Pool::AdaptiveAvg { size } => (Op::AdaptiveAvgPool2d, vec![x[0], x[1], size, size], elems),
        };
        let counts = match via {
            Via::Module => Counts { fvcore, mmcv: elems, acts: 0 },
            Via::Functional => Counts { fvcore, mmcv: 0, acts: 0 },
            Via::TensorOps => Counts::default(),
        };
        self.record(name, op, counts);
        Ok(y)
    }

    /// A nearest-neighbour upsampling in `name` producing `out`: fvcore one FLOP per output
    /// element; mmcv the same for an `nn.Upsample` module, nothing for `F.interpolate`.
    pub fn upsample_nearest(&mut self, name: &str, out: &[usize], via: Via) {
        let elems = numel(out);
        let counts = match via {
            Via::Module => Counts { fvcore: elems, mmcv: elems, acts: 0 },
            Via::Functional => Counts { fvcore: elems, mmcv: 0, acts: 0 },
            Via::TensorOps => Counts::default(),
        };
        self.record(name, Op::UpsampleNearest2d, counts);
    }

    /// A softmax in `name` (`""`: the current module): counted by neither tool.
    pub fn softmax(&mut self, name: &str, x: &[usize]) -> Shape {
        self.record(name, Op::Softmax, Counts::default());
        x.to_vec()
    }

    /// An RoIAlign module `name` producing `out: [R, C, s, s]`: a custom op to both tools
    /// (mmcv's `RoIAlign` is no type its counter hooks; fvcore has no handle), so nothing.
    pub fn roi_align(&mut self, name: &str, out: &[usize]) -> Shape {
        self.record(name, Op::RoiAlign, Counts::default());
        out.to_vec()
    }

    /// `name.weight` (shape `weight`) and, when given, `name.bias` (`[bias]`).
    fn layer_params(&mut self, name: &str, weight: &[usize], bias: Option<usize>) {
        let prefix = if name.is_empty() { String::new() } else { format!("{name}.") };
        self.param(&format!("{prefix}weight"), weight);
        if let Some(b) = bias {
            self.param(&format!("{prefix}bias"), &[b]);
        }
    }
}
