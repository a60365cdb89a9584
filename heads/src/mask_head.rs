//! The Mask R-CNN mask head: mmdet 2.11's `FCNMaskHead`
//! (`mmdet/models/roi_heads/mask_heads/fcn_mask_head.py`).
//!
//! RoI features `[R, C, 14, 14]` go through `num_convs` 3x3 conv + ReLU modules
//! (`convs.{i}.conv.*`), a stride-2 2x2 transposed convolution + ReLU (`upsample.*`) and a 1x1
//! conv (`conv_logits.*`) to `[R, K, 28, 28]` class-specific mask logits. The loss is binary
//! cross entropy with logits on each positive's ground-truth-class channel against the
//! RoIAligned ground-truth mask (`ops::mask_targets`), averaged over all pixels; at test time
//! the label channel's sigmoid is pasted into the original image and thresholded.

use crate::bbox_head::ClsLossType;
use crate::losses::sigmoid_bce_with_logits;
use candle_core::{bail, DType, Result, Tensor};
use nextdet_analysis::{Act, Conv2d as ConvSpec, CostTree, Shape, Via};
use nextdet_ops::nms::indices_tensor;
use nextdet_ops::nn::{kaiming_normal_fan_out, Conv2d};
use nextdet_ops::{bias_add, linear_no_bias, paste_masks, relu, BinaryMask, Scope};
use serde::Deserialize;

/// The upsampling layers a mask head can name.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpsampleType {
    /// A stride-2 2x2 transposed convolution.
    #[default]
    #[serde(rename = "deconv")]
    Deconv,
}

/// mmdet's `upsample_cfg`; only `deconv` is supported.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpsampleConfig {
    /// The layer (only `deconv`).
    #[serde(rename = "type", default)]
    pub kind: UpsampleType,
    /// Upsampling factor, the deconv's kernel and stride (2).
    #[serde(default = "two")]
    pub scale_factor: usize,
}

fn two() -> usize {
    2
}

impl Default for UpsampleConfig {
    fn default() -> Self {
        Self { kind: UpsampleType::Deconv, scale_factor: 2 }
    }
}

/// mmdet's `CrossEntropyLoss(use_mask=True)` config.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaskLossConfig {
    /// The loss (only `CrossEntropyLoss`).
    #[serde(rename = "type", default)]
    pub kind: ClsLossType,
    /// Must be true (per-class sigmoid masks).
    #[serde(default = "yes")]
    pub use_mask: bool,
    /// Multiplies the loss.
    #[serde(default = "one")]
    pub loss_weight: f64,
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

impl Default for MaskLossConfig {
    fn default() -> Self {
        Self { kind: ClsLossType::CrossEntropyLoss, use_mask: true, loss_weight: 1.0 }
    }
}

/// The mask heads a config can name.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaskHeadType {
    /// mmdetection's `FCNMaskHead`.
    #[default]
    FCNMaskHead,
}

/// `FCNMaskHead` settings.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FcnMaskHeadConfig {
    /// The head (only `FCNMaskHead`).
    #[serde(rename = "type", default)]
    pub kind: MaskHeadType,
    /// 3x3 conv modules before the upsampling (4).
    #[serde(default = "four")]
    pub num_convs: usize,
    /// RoI feature size (14).
    #[serde(default = "fourteen")]
    pub roi_feat_size: usize,
    /// Input channels; derived from the neck when absent, must match when given.
    #[serde(default)]
    pub in_channels: Option<usize>,
    /// Conv kernel size (3).
    #[serde(default = "three")]
    pub conv_kernel_size: usize,
    /// Conv channels (256).
    #[serde(default = "c256")]
    pub conv_out_channels: usize,
    /// Foreground classes.
    pub num_classes: usize,
    /// One mask per RoI instead of one per class.
    #[serde(default)]
    pub class_agnostic: bool,
    /// Upsampling (deconv x2).
    #[serde(default)]
    pub upsample_cfg: UpsampleConfig,
    /// Mask loss.
    #[serde(default)]
    pub loss_mask: MaskLossConfig,
}

fn four() -> usize {
    4
}
fn fourteen() -> usize {
    14
}
fn three() -> usize {
    3
}
fn c256() -> usize {
    256
}

/// mmdet's `FCNMaskHead` (see the module docs).
pub struct FcnMaskHead {
    cfg: FcnMaskHeadConfig,
    convs: Vec<Conv2d>,
    upsample_weight: Tensor,
    upsample_bias: Tensor,
    /// `conv_logits.weight`, `[K, C, 1, 1]`: a 1x1 convolution, applied as a matrix product on
    /// the upsampled pixels while they are still rows (see [`FcnMaskHead::forward`]).
    logits_weight: Tensor,
    logits_bias: Tensor,
}

impl FcnMaskHead {
    /// Builds the head under `scope` (e.g. `roi_head.mask_head`) with mmdet's initialization:
    /// every conv, the deconv and `conv_logits` Kaiming-normal (fan-out), biases zero.
    pub fn new(cfg: &FcnMaskHeadConfig, in_channels: usize, scope: &Scope) -> Result<Self> {
        if let Some(c) = cfg.in_channels {
            if c != in_channels {
                bail!("mask_head.in_channels is {c} but the RoI features have {in_channels} channels");
            }
        }
        let UpsampleType::Deconv = cfg.upsample_cfg.kind;
        if cfg.upsample_cfg.scale_factor != 2 {
            bail!("mask_head.upsample_cfg: only type=deconv with scale_factor=2 is supported");
        }
        if !cfg.loss_mask.use_mask {
            bail!("mask_head.loss_mask: use_mask must be true");
        }
        if cfg.conv_kernel_size.is_multiple_of(2) {
            bail!("mask_head.conv_kernel_size must be odd, got {}", cfg.conv_kernel_size);
        }
        let (k, c) = (cfg.conv_kernel_size, cfg.conv_out_channels);
        let mut convs = Vec::new();
        let mut dim = in_channels;
        for i in 0..cfg.num_convs {
            let s = scope.pp("convs").pp(i).pp("conv");
            convs.push(Conv2d::new(&s, dim, c, k, 1, k / 2, kaiming_normal_fan_out(c * k * k))?);
            dim = c;
        }
        // ConvTranspose2d weight is [in, out, 2, 2]; PyTorch's fan_out for it is in * 2 * 2.
        let up = scope.pp("upsample");
        let upsample_weight = up.param("weight", (dim, c, 2, 2), kaiming_normal_fan_out(dim * 4))?;
        let upsample_bias = up.param("bias", c, nextdet_ops::Init::Const(0.0))?;
        let out = if cfg.class_agnostic { 1 } else { cfg.num_classes };
        let logits = scope.pp("conv_logits");
        let logits_weight = logits.param("weight", (out, c, 1, 1), kaiming_normal_fan_out(out))?;
        let logits_bias = logits.param("bias", out, nextdet_ops::Init::Const(0.0))?;
        Ok(Self { cfg: cfg.clone(), convs, upsample_weight, upsample_bias, logits_weight, logits_bias })
    }

    /// The settings.
    pub fn config(&self) -> &FcnMaskHeadConfig {
        &self.cfg
    }

    /// `[R, C, S, S]` RoI features to `[R, K, 2S, 2S]` mask logits.
    ///
    /// The deconv, its ReLU and the 1x1 `conv_logits` act on each upsampled pixel alone, so
    /// they run on the pixels as rows (`[R*S*S*4, C]`, [`deconv2x2_rows`]) and only the
    /// `K`-channel logits are reshuffled to NCHW: the `[R, C, 2S, 2S]` map is never built.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for conv in &self.convs {
            x = relu(&conv.forward(&x)?)?;
        }
        let (r, _, h, w) = x.dims4()?;
        let up = relu(&deconv2x2_rows(&x, &self.upsample_weight, &self.upsample_bias)?)?;
        let (k, c) = (self.logits_weight.dim(0)?, self.logits_weight.dim(1)?);
        let logits = bias_add(&linear_no_bias(&up, &self.logits_weight.reshape((k, c))?)?, &self.logits_bias)?;
        rows_to_nchw(&logits, r, h, w)
    }

    /// mmdet `FCNMaskHead.loss`: mean binary cross entropy with logits of each positive's
    /// `labels[i]` channel of `mask_pred: [P, K, M, M]` against `targets: [P, M, M]` (0/1), times
    /// `loss_weight`; a zero (still connected to the graph) when there are no positives.
    pub fn loss(&self, mask_pred: &Tensor, targets: &Tensor, labels: &[usize]) -> Result<Tensor> {
        let (p, k, m, m2) = mask_pred.dims4()?;
        if p == 0 {
            return mask_pred.sum_all()? * 0.0;
        }
        if labels.len() != p || targets.dims() != [p, m, m2] {
            bail!("mask loss: {p} predictions of {m}x{m2}, {} labels, targets {:?}", labels.len(), targets.dims());
        }
        let rows: Vec<usize> =
            labels.iter().enumerate().map(|(i, &l)| if self.cfg.class_agnostic { i * k } else { i * k + l }).collect();
        let picked = mask_pred.reshape((p * k, m, m2))?.index_select(&indices_tensor(&rows, mask_pred.device())?, 0)?;
        let loss = sigmoid_bce_with_logits(&picked, &targets.to_dtype(DType::F32)?, None)?.mean_all()?;
        loss * self.cfg.loss_mask.loss_weight
    }

    /// `[D, M, M]` probabilities of each detection's label channel: the sigmoid of
    /// `mask_pred: [D, K, M, M]` (mmdet `get_seg_masks`' first step).
    pub fn label_probs(&self, mask_pred: &Tensor, labels: &[usize]) -> Result<Tensor> {
        let probs = sigmoid(mask_pred)?;
        select_channels(&probs, labels, self.cfg.class_agnostic)
    }

    /// mmdet `get_seg_masks` after the sigmoid: pastes `probs: [D, M, M]` at `boxes` (original
    /// image coordinates, `[D, 4]`) into an image of `ori_size = (h, w)` and thresholds with `>= thr`.
    pub fn paste(&self, probs: &Tensor, boxes: &Tensor, ori_size: (usize, usize), thr: f32) -> Result<Vec<BinaryMask>> {
        paste_masks(probs, boxes, ori_size, thr)
    }
}

/// The channel `labels[i]` (or 0 when `agnostic`) of each row of `x: [D, K, M, M]`: `[D, M, M]`.
pub fn select_channels(x: &Tensor, labels: &[usize], agnostic: bool) -> Result<Tensor> {
    let (d, k, m, m2) = x.dims4()?;
    if labels.len() != d {
        bail!("mask channels: {d} masks but {} labels", labels.len());
    }
    let rows: Vec<usize> = labels.iter().enumerate().map(|(i, &l)| if agnostic { i * k } else { i * k + l }).collect();
    x.reshape((d * k, m, m2))?.index_select(&indices_tensor(&rows, x.device())?, 0)
}

/// `1 / (1 + exp(-x))`, from candle's differentiable primitives.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// `ConvTranspose2d(kernel 2, stride 2)` of `x: [N, Cin, H, W]` with `weight: [Cin, Cout, 2, 2]`
/// and `bias: [Cout]`, giving `[N, Cout, 2H, 2W]`: [`deconv2x2_rows`] reshuffled to NCHW.
pub fn deconv2x2(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    rows_to_nchw(&deconv2x2_rows(x, weight, bias)?, n, h, w)
}

/// The stride-2 2x2 transposed convolution as rows: every input pixel writes its own 2x2
/// output block, so this is one matrix product `[N*H*W, Cin] x [Cin, 2*2*Cout]` (plus the
/// bias), returned as `[N*H*W*2*2, Cout]` with rows ordered `(n, y, x, dy, dx)`: output pixel
/// `(2y + dy, 2x + dx)`. Exact and differentiable.
pub fn deconv2x2_rows(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (n, cin, h, w) = x.dims4()?;
    let (wi, cout, k1, k2) = weight.dims4()?;
    if wi != cin || k1 != 2 || k2 != 2 || bias.dims() != [cout] {
        bail!("deconv2x2: input {:?}, weight {:?}, bias {:?}", x.dims(), weight.dims(), bias.dims());
    }
    let rows = x.permute((0, 2, 3, 1))?.reshape((n * h * w, cin))?;
    let w_rows = weight.permute((2, 3, 1, 0))?.reshape((4 * cout, cin))?; // rows (dy, dx, cout)
    bias_add(&linear_no_bias(&rows, &w_rows)?.reshape((n * h * w * 4, cout))?, bias)
}

/// `[N*H*W*2*2, C]` rows in [`deconv2x2_rows`]' order to the `[N, C, 2H, 2W]` map.
fn rows_to_nchw(rows: &Tensor, n: usize, h: usize, w: usize) -> Result<Tensor> {
    let c = rows.dim(1)?;
    let y = rows.reshape((n, h, w, 2, 2, c))?.permute((0, 5, 1, 3, 2, 4))?; // [N, C, H, 2, W, 2]
    y.reshape((n, c, 2 * h, 2 * w))
}

impl FcnMaskHead {
    /// Describes the head on `x: [R, C, S, S]` as mmdetection's `FCNMaskHead` runs it
    /// (`convs.{i}`: `conv`, `activate`; `upsample` (`nn.ConvTranspose2d`), `relu`,
    /// `conv_logits`); returns the logits' shape.
    pub fn cost(&self, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let mut x = x.to_vec();
        for (i, conv) in self.convs.iter().enumerate() {
            x = tree.scope(format!("convs.{i}"), |t| {
                let y = crate::cost::conv2d(t, "conv", &x, conv)?;
                Ok(t.act("activate", &y, Act::Relu, Via::Module))
            })?;
        }
        let up = ConvSpec::new(self.upsample_weight.dims()).bias(true).stride(2);
        let y = tree.conv_transpose2d("upsample", &x, up)?;
        let y = tree.act("relu", &y, Act::Relu, Via::Module);
        tree.conv2d("conv_logits", &y, ConvSpec::new(self.logits_weight.dims()).bias(true))
    }
}
