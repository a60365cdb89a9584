//! Layers shared by the ConvNeXt family: affine layer norm, linear, patchify convolution and the
//! ConvNeXt block, all channels-last (`[N, H, W, C]`).

use candle_core::{Result, Tensor};
use nextdet_analysis::{Act, Conv2d as AnalysisConv, CostTree, Norm as AnalysisNorm, NormKind, Shape, Via};
use nextdet_ops::{
    bias_add, convnext_mlp_inference, depthwise_conv2d_layer_norm_nhwc, drop_path_scales, gelu_linear, layer_norm,
    layer_scale_drop_path_residual, linear_no_bias, linear_packed, nn::PackedSlot, Init, PackedMlp, Scope,
};
use rand::rngs::StdRng;
use std::sync::Mutex;

/// ConvNeXt's layer-norm epsilon, the same everywhere in the model.
pub const LN_EPS: f64 = 1e-6;
/// Standard deviation of ConvNeXt's truncated-normal init for convolutions and linears.
pub const INIT_STD: f64 = 0.02;

/// A layer norm over the last dimension with `weight` and `bias` parameters.
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    /// Parameters `scope.weight` (ones) and `scope.bias` (zeros) of size `dim`.
    pub fn new(scope: &Scope, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: scope.param("weight", dim, Init::Const(1.0))?,
            bias: scope.param("bias", dim, Init::Const(0.0))?,
        })
    }

    /// Normalizes the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, LN_EPS)
    }

    /// `forward(depthwise_conv(x))` in one pass over memory (channels-last `x`).
    pub fn after_depthwise_conv(&self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        depthwise_conv2d_layer_norm_nhwc(x, weight, bias, &self.weight, &self.bias, LN_EPS)
    }
}

/// A fully connected layer, PyTorch's `nn.Linear`; the neck and heads use the same one.
pub use nextdet_ops::nn::Linear;

/// A convolution whose kernel equals its stride (ConvNeXt's stem and downsampling layers),
/// computed as one matrix multiply over non-overlapping patches.
pub struct PatchConv {
    weight: Tensor,
    bias: Tensor,
    k: usize,
    /// The weight packed for inference, per patch layout: `(C, kh, kw)` for NCHW input,
    /// `(kh, kw, C)` for channels-last.
    packed: [PackedSlot; 2],
}

impl PatchConv {
    /// Parameters `scope.weight: [out, inp, k, k]` and `scope.bias: [out]`.
    pub fn new(scope: &Scope, inp: usize, out: usize, k: usize) -> Result<Self> {
        let weight = scope.param("weight", (out, inp, k, k), Init::TruncNormal { std: INIT_STD })?;
        let bias = scope.param("bias", out, Init::Const(0.0))?;
        Ok(Self { weight, bias, k, packed: Default::default() })
    }

    /// `[N, C, H, W]` (an image batch) to channels-last `[N, H/k, W/k, out]`. An input whose
    /// channel count is not the weight's is an error saying so (the backbone's `in_chans`).
    /// Inference (`train` false) multiplies by the weight packed once.
    pub fn forward_nchw(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let inp = self.weight.dim(1)?;
        if c != inp {
            candle_core::bail!(
                "the images have {c} channels, but the backbone's stem takes {inp} (`in_chans: {inp}`, stem weight \
                 {:?}); the data pipelines give RGB images, which need `in_chans: 3`",
                self.weight.dims()
            );
        }
        let (ho, wo, k) = (h / self.k, w / self.k, self.k);
        let x = x.narrow(2, 0, ho * k)?.narrow(3, 0, wo * k)?;
        let patches = x.reshape((n, c, ho, k, wo, k))?.permute((0, 2, 4, 1, 3, 5))?;
        let weight = || self.weight.flatten_from(1);
        self.project(&patches, (n, ho, wo), weight, &self.packed[0], train)
    }

    /// Channels-last `[N, H, W, C]` to `[N, H/k, W/k, out]`. The patches keep the input's
    /// layout, `(kh, kw, C)`, each kernel row one contiguous run of `k * C` values to copy, and
    /// the weight is reordered to match. Inference (`train` false) multiplies by the reordered
    /// weight packed once.
    pub fn forward_nhwc(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let (ho, wo, k) = (h / self.k, w / self.k, self.k);
        let x = x.narrow(1, 0, ho * k)?.narrow(2, 0, wo * k)?;
        let patches = x.reshape((n, ho, k, wo, k * c))?.permute((0, 1, 3, 2, 4))?;
        let weight = || self.weight.permute((0, 2, 3, 1))?.flatten_from(1);
        self.project(&patches, (n, ho, wo), weight, &self.packed[1], train)
    }

    /// `patches: [N, Ho, Wo, ...]` (any strides) times `weight()`, the kernel flattened in the
    /// patches' order (packed once in `slot` at inference).
    fn project(
        &self,
        patches: &Tensor,
        (n, ho, wo): (usize, usize, usize),
        weight: impl Fn() -> Result<Tensor>,
        slot: &PackedSlot,
        train: bool,
    ) -> Result<Tensor> {
        let out = self.weight.dim(0)?;
        let flat = self.weight.elem_count() / out;
        let y = patches.contiguous()?.reshape((n * ho * wo, flat))?;
        let packed = if train { None } else { slot.get_with(&weight)? };
        let y = match packed {
            Some(w) => linear_packed(&y, &w)?,
            None => linear_no_bias(&y, &weight()?)?,
        };
        bias_add(&y, &self.bias)?.reshape((n, ho, wo, out))
    }
}

/// The source of stochastic-depth decisions, shared by a model's blocks.
pub type DropRng = std::sync::Arc<Mutex<StdRng>>;

/// The ConvNeXt block: depthwise 7x7, layer norm, linear to 4C, GELU, linear back to C, layer
/// scale, stochastic depth and the residual. Names follow the official code
/// (`dwconv`, `norm`, `pwconv1`, `pwconv2`, `gamma`).
pub struct Block {
    dw_weight: Tensor,
    dw_bias: Tensor,
    norm: Norm,
    pwconv1: Linear,
    pwconv2: Linear,
    gamma: Option<Tensor>,
    drop_path: f64,
    rng: DropRng,
}

impl Block {
    /// A block of `dim` channels with its stochastic-depth rate and layer-scale init (no `gamma`
    /// when `layer_scale <= 0`).
    pub fn new(scope: &Scope, dim: usize, drop_path: f64, layer_scale: f64, rng: DropRng) -> Result<Self> {
        let dw = scope.pp("dwconv");
        let trunc = Init::TruncNormal { std: INIT_STD };
        Ok(Self {
            dw_weight: dw.param("weight", (dim, 1, 7, 7), trunc)?,
            dw_bias: dw.param("bias", dim, Init::Const(0.0))?,
            norm: Norm::new(&scope.pp("norm"), dim)?,
            pwconv1: Linear::new(&scope.pp("pwconv1"), dim, 4 * dim, trunc)?,
            pwconv2: Linear::new(&scope.pp("pwconv2"), 4 * dim, dim, trunc)?,
            gamma: if layer_scale > 0.0 { Some(scope.param("gamma", dim, Init::Const(layer_scale))?) } else { None },
            drop_path,
            rng,
        })
    }

    /// Channels-last `[N, H, W, C]` in and out.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.norm.after_depthwise_conv(x, &self.dw_weight, &self.dw_bias)?;
        // inference: the rest of the block in one op, with weights packed once
        if let Some(mlp) = if train { None } else { self.packed_mlp()? } {
            return convnext_mlp_inference(&y, x, &mlp);
        }
        // GELU and the second linear in one op, so the widest activation is not kept for backward
        let y = gelu_linear(&self.pwconv1.matmul(&y)?, self.pwconv1.bias(), self.pwconv2.weight())?;
        let sample_scales = if train && self.drop_path > 0.0 {
            let mut rng = self.rng.lock().expect("drop-path rng");
            Some(drop_path_scales(x.dim(0)?, self.drop_path, &mut *rng))
        } else {
            None
        };
        layer_scale_drop_path_residual(&y, self.pwconv2.bias(), self.gamma.as_ref(), x, sample_scales)
    }
}

impl Block {
    /// The pointwise layers packed for inference (`None` where packed multiplies do not run).
    fn packed_mlp(&self) -> Result<Option<PackedMlp>> {
        let (Some(w1), Some(w2)) = (self.pwconv1.packed_weight()?, self.pwconv2.packed_weight()?) else {
            return Ok(None);
        };
        let vec = |t: &Tensor| t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>();
        Ok(Some(PackedMlp {
            w1,
            b1: vec(self.pwconv1.bias())?,
            w2,
            b2: vec(self.pwconv2.bias())?,
            gamma: self.gamma.as_ref().map(vec).transpose()?,
        }))
    }
}

/// Per-block stochastic-depth rates: linear from 0 to `rate` over `blocks` blocks.
pub fn drop_path_rates(rate: f64, blocks: usize) -> Vec<f64> {
    match blocks {
        0 => vec![],
        1 => vec![0.0],
        n => (0..n).map(|i| rate * i as f64 / (n - 1) as f64).collect(),
    }
}

// What `nextdet analyze` counts: the reference's layers (ConvNeXt's `models/convnext.py`), in its
// NCHW layout, with how each one runs there (see `nextdet_analysis::Via`).

impl Norm {
    /// Describes this layer norm as the module `name` on `x` (`via`: ConvNeXt's channels-last
    /// class runs `F.layer_norm`, its channels-first one tensor ops, `nn.LayerNorm` a module).
    pub fn cost(&self, name: &str, x: &[usize], via: Via, tree: &mut CostTree) -> Result<Shape> {
        let channels = self.weight.dim(0)?;
        tree.norm(name, x, AnalysisNorm { kind: NormKind::LayerNorm, channels, affine: true, via })
    }
}

impl PatchConv {
    /// Describes this convolution as the `nn.Conv2d` module `name` on `x: [N, C, H, W]`.
    pub fn cost(&self, name: &str, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        tree.conv2d(name, x, AnalysisConv::new(self.weight.dims()).bias(true).stride(self.k))
    }
}

impl Block {
    /// Describes the block on `x: [N, C, H, W]`: `dwconv`, then channels-last `norm`
    /// (`F.layer_norm`), `pwconv1`, `act` (GELU), `pwconv2` and `gamma`.
    pub fn cost(&self, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let c = x.get(1).copied().unwrap_or(0);
        let k = self.dw_weight.dim(2)?;
        let conv = AnalysisConv::new(self.dw_weight.dims()).bias(true).padding(k / 2).groups(c);
        let y = tree.conv2d("dwconv", x, conv)?;
        let nhwc = [y[0], y[2], y[3], y[1]];
        self.norm.cost("norm", &nhwc, Via::Functional, tree)?;
        let h = tree.linear("pwconv1", &nhwc, self.pwconv1.weight().dims(), true)?;
        let h = tree.act("act", &h, Act::Gelu, Via::Module);
        tree.linear("pwconv2", &h, self.pwconv2.weight().dims(), true)?;
        if let Some(g) = &self.gamma {
            tree.param("gamma", g.dims());
        }
        Ok(y)
    }
}
