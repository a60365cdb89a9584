//! Swin Transformer ("Hierarchical Vision Transformer using Shifted Windows"): the trunk, its
//! ImageNet classifier and its detection mode, with the official parameter names
//! (`patch_embed.*`, `layers.S.blocks.B.{norm1,attn,norm2,mlp}`, `layers.S.downsample.*`,
//! `norm`, `head`, and `norm0..3` in detection mode).
//!
//! Semantics follow the official `models/swin_transformer.py` (microsoft/Swin-Transformer) and
//! timm's `timm/models/swin_transformer.py` for the classifier, and the detection backbone of
//! Swin-Transformer-Object-Detection (`mmdet/models/backbones/swin_transformer.py`), where the
//! paper's detection numbers come from:
//! - patch embedding: the image padded right/bottom to a multiple of the patch, a patch
//!   convolution, layer norm;
//! - a block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`, each branch with its own
//!   stochastic depth (linear rule over all blocks); the attention runs in windows of
//!   `window_size^2` tokens with a relative position bias per head, every second block on
//!   windows shifted by `window_size / 2` with the mask that keeps regions apart;
//! - a stage pads its map to window multiples (zeros after `norm1`, then the cyclic shift,
//!   the order of the detection code), so any input size works;
//! - patch merging: pad to even, concatenate the 2x2 neighbours in the order (0,0), (1,0),
//!   (0,1), (1,1) (row, column), layer norm over `4C`, linear to `2C` without bias.
//!
//! The classifier applies the official rule for small maps: a stage whose map (at `img_size`)
//! is no larger than the window gets a single window of the map's size and no shift. The
//! detection mode windows and shifts every stage, as the detection code does.
//!
//! Tensors stay channels-last (`[N, H, W, C]`). The window partition, its reverse and patch
//! merging are one-pass row gathers ([`nextdet_ops::gather_rows()`]); the attention of all windows
//! and heads is one op ([`nextdet_ops::window_attention`]) with the softmax fused.

use crate::config::SwinConfig;
use crate::layers::{drop_path_rates, DropRng, Linear, PatchConv, INIT_STD};
use crate::{Backbone, Classifier};
use candle_core::{bail, Device, Result, Tensor};
use nextdet_ops::gather_rows::PAD;
use nextdet_ops::{
    drop_path_scales, gather_rows, gelu_linear, layer_norm, layer_scale_drop_path_residual, linear_no_bias,
    scatter_rows, window_attention, Init, RowMap, Scope,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::{Arc, Mutex};

/// `nn.LayerNorm`'s default epsilon, which every Swin norm uses.
pub const LN_EPS: f64 = 1e-5;

/// Which semantics the trunk follows for small maps (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwinMode {
    /// The classifier's: a stage no larger than the window at `img_size` is one unshifted window.
    Classifier,
    /// The detection backbone's: every stage windowed and shifted, maps padded to windows.
    Detection,
}

/// PyTorch's `nn.LayerNorm(dim)`: `weight`, `bias`, epsilon 1e-5, over the last dimension.
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    /// `scope.weight` (ones) and `scope.bias` (zeros) of size `dim`.
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
}

/// The relative position index of a `w x w` window: entry `(i, j)` is the row of the bias
/// table for the offset of token `i` from token `j`, `(dy + w - 1) * (2w - 1) + dx + w - 1`
/// (`relative_position_index` of the official code).
pub fn relative_position_index(w: usize) -> Vec<u32> {
    let n = w * w;
    let mut index = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dy = (i / w) as i64 - (j / w) as i64 + w as i64 - 1;
            let dx = (i % w) as i64 - (j % w) as i64 + w as i64 - 1;
            index.push((dy * (2 * w as i64 - 1) + dx) as u32);
        }
    }
    index
}

/// Window attention's parameters: `qkv`, `proj` and `relative_position_bias_table`
/// (`[(2w-1)^2, heads]`), with the fixed index that spreads the table over `[heads, N, N]`
/// (`N = w^2` tokens per window).
struct WindowAttention {
    qkv: Linear,
    proj: Linear,
    table: Tensor,
    index: Tensor,
    tokens: usize,
    heads: usize,
    scale: f64,
}

impl WindowAttention {
    fn new(scope: &Scope, dim: usize, heads: usize, window: usize) -> Result<Self> {
        let trunc = Init::TruncNormal { std: INIT_STD };
        let table = scope.param("relative_position_bias_table", ((2 * window - 1).pow(2), heads), trunc)?;
        let index = Tensor::from_vec(relative_position_index(window), window.pow(4), &Device::Cpu)?;
        Ok(Self {
            qkv: Linear::new(&scope.pp("qkv"), dim, 3 * dim, trunc)?,
            proj: Linear::new(&scope.pp("proj"), dim, dim, trunc)?,
            index: index.to_device(table.device())?,
            table,
            tokens: window * window,
            heads,
            scale: ((dim / heads) as f64).powf(-0.5),
        })
    }

    /// The bias of every head, `[heads, N, N]`, gathered from the table (differentiable).
    fn bias(&self) -> Result<Tensor> {
        let b = self.table.index_select(&self.index, 0)?; // [N*N, heads]
        b.t()?.contiguous()?.reshape((self.heads, self.tokens, self.tokens))
    }
}

/// How one stage cuts its map into windows for one input size: the row maps of the plain and
/// the shifted partition, and the shifted windows' mask. Built once per stage and forward.
struct Windows {
    plain: Arc<RowMap>,
    shifted: Option<(Arc<RowMap>, Tensor)>,
    tokens: usize,
}

impl Windows {
    /// The partitions of `[b, h, w, C]` maps into `window x window` windows, the shifted one
    /// (when `shift > 0`) rolled by `-shift` after padding, as the detection code does.
    fn new(b: usize, h: usize, w: usize, window: usize, shift: usize, device: &Device) -> Result<Self> {
        let plain = Arc::new(partition_map(b, h, w, window, 0)?);
        let shifted = if shift > 0 {
            let map = Arc::new(partition_map(b, h, w, window, shift)?);
            Some((map, shift_mask(h, w, window, shift, device)?))
        } else {
            None
        };
        Ok(Self { plain, shifted, tokens: window * window })
    }
}

/// The row map from `[b, h, w]` tokens to windows `[b, nWh, nWw, window, window]` of the map
/// padded to `Hp x Wp` (window multiples) and rolled by `-shift` (window rows beyond the map are
/// padding).
fn partition_map(b: usize, h: usize, w: usize, window: usize, shift: usize) -> Result<RowMap> {
    let (hp, wp) = (h.div_ceil(window) * window, w.div_ceil(window) * window);
    let mut src = Vec::with_capacity(b * hp * wp);
    for n in 0..b {
        for wy in 0..hp / window {
            for wx in 0..wp / window {
                for iy in 0..window {
                    for ix in 0..window {
                        let sy = (wy * window + iy + shift) % hp;
                        let sx = (wx * window + ix + shift) % wp;
                        src.push(if sy < h && sx < w { ((n * h + sy) * w + sx) as u32 } else { PAD });
                    }
                }
            }
        }
    }
    RowMap::new(src, b * h * w)
}

/// The shifted windows' mask `[nW, N, N]`: 0 between tokens of the same region of the padded,
/// rolled map, -100 across regions (regions: the three bands `[0, Hp - window)`,
/// `[Hp - window, Hp - shift)`, `[Hp - shift, Hp)` in each direction).
fn shift_mask(h: usize, w: usize, window: usize, shift: usize, device: &Device) -> Result<Tensor> {
    let (hp, wp) = (h.div_ceil(window) * window, w.div_ceil(window) * window);
    let band = |p: usize, size: usize| {
        if p < size - window {
            0
        } else if p < size - shift {
            1
        } else {
            2
        }
    };
    let n = window * window;
    let (nwh, nww) = (hp / window, wp / window);
    let mut mask = vec![0f32; nwh * nww * n * n];
    let mut labels = vec![0usize; n];
    for wy in 0..nwh {
        for wx in 0..nww {
            for (t, label) in labels.iter_mut().enumerate() {
                *label = band(wy * window + t / window, hp) * 3 + band(wx * window + t % window, wp);
            }
            let m = &mut mask[(wy * nww + wx) * n * n..][..n * n];
            for i in 0..n {
                for j in 0..n {
                    if labels[i] != labels[j] {
                        m[i * n + j] = -100.0;
                    }
                }
            }
        }
    }
    Tensor::from_vec(mask, (nwh * nww, n, n), device)
}

/// One Swin block: shifted or plain window attention and the MLP, each a pre-norm residual
/// branch with stochastic depth.
struct Block {
    norm1: LayerNorm,
    attn: WindowAttention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    shifted: bool,
    drop_path: f64,
    rng: DropRng,
}

/// The sizes of a stage's blocks.
#[derive(Clone, Copy)]
struct BlockShape {
    dim: usize,
    heads: usize,
    window: usize,
    hidden: usize,
}

impl Block {
    fn new(scope: &Scope, shape: BlockShape, shifted: bool, drop_path: f64, rng: DropRng) -> Result<Self> {
        let BlockShape { dim, heads, window, hidden } = shape;
        let trunc = Init::TruncNormal { std: INIT_STD };
        Ok(Self {
            norm1: LayerNorm::new(&scope.pp("norm1"), dim)?,
            attn: WindowAttention::new(&scope.pp("attn"), dim, heads, window)?,
            norm2: LayerNorm::new(&scope.pp("norm2"), dim)?,
            fc1: Linear::new(&scope.pp("mlp").pp("fc1"), dim, hidden, trunc)?,
            fc2: Linear::new(&scope.pp("mlp").pp("fc2"), hidden, dim, trunc)?,
            shifted,
            drop_path,
            rng,
        })
    }

    /// The per-sample branch scales of one stochastic-depth draw (`None`: keep everything).
    fn sample_scales(&self, samples: usize, train: bool) -> Option<Vec<f32>> {
        (train && self.drop_path > 0.0).then(|| {
            let mut rng = self.rng.lock().expect("drop-path rng");
            drop_path_scales(samples, self.drop_path, &mut *rng)
        })
    }

    /// Channels-last `[B, H, W, C]` in and out.
    fn forward(&self, x: &Tensor, windows: &Windows, train: bool) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let (map, mask) = match (&windows.shifted, self.shifted) {
            (Some((map, mask)), true) => (map, Some(mask)),
            _ => (&windows.plain, None),
        };
        let n = windows.tokens;
        let y = self.norm1.forward(x)?.reshape((b * h * w, c))?;
        let win = gather_rows(&y, map)?; // [B_ * N, C], padding rows zero
        let groups = win.dim(0)? / n;
        let qkv = self.attn.qkv.forward(&win.reshape((groups, n, c))?)?;
        let a = window_attention(&qkv, &self.attn.bias()?, mask, self.attn.heads, self.attn.scale)?;
        let a = linear_no_bias(&a.reshape((groups * n, c))?, self.attn.proj.weight())?;
        let back = scatter_rows(&a, map)?.reshape((b, h, w, c))?;
        let x = layer_scale_drop_path_residual(&back, self.attn.proj.bias(), None, x, self.sample_scales(b, train))?;
        let hidden = self.fc1.matmul(&self.norm2.forward(&x)?)?;
        let y = gelu_linear(&hidden, self.fc1.bias(), self.fc2.weight())?;
        layer_scale_drop_path_residual(&y, self.fc2.bias(), None, &x, self.sample_scales(b, train))
    }
}

/// Patch merging: the 2x2 neighbours concatenated (`norm` over `4C`, then `reduction` to `2C`).
struct PatchMerging {
    norm: LayerNorm,
    reduction: Tensor,
}

impl PatchMerging {
    fn new(scope: &Scope, dim: usize) -> Result<Self> {
        Ok(Self {
            norm: LayerNorm::new(&scope.pp("norm"), 4 * dim)?,
            reduction: scope.pp("reduction").param(
                "weight",
                (2 * dim, 4 * dim),
                Init::TruncNormal { std: INIT_STD },
            )?,
        })
    }

    /// `[B, H, W, C]` to `[B, ceil(H/2), ceil(W/2), 2C]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        let mut src = Vec::with_capacity(b * ho * wo * 4);
        for n in 0..b {
            for oy in 0..ho {
                for ox in 0..wo {
                    for (dy, dx) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let (sy, sx) = (2 * oy + dy, 2 * ox + dx);
                        src.push(if sy < h && sx < w { ((n * h + sy) * w + sx) as u32 } else { PAD });
                    }
                }
            }
        }
        let map = Arc::new(RowMap::new(src, b * h * w)?);
        let merged = gather_rows(&x.reshape((b * h * w, c))?, &map)?.reshape((b * ho * wo, 4 * c))?;
        linear_no_bias(&self.norm.forward(&merged)?, &self.reduction)?.reshape((b, ho, wo, 2 * c))
    }
}

/// One stage: its blocks (alternately plain and shifted), its window and shift, and the patch
/// merging that follows it (all stages but the last).
struct Stage {
    blocks: Vec<Block>,
    downsample: Option<PatchMerging>,
    window: usize,
    shift: usize,
}

/// The trunk shared by the classifier and the detection backbone.
pub struct SwinTransformer {
    proj: PatchConv,
    patch_norm: LayerNorm,
    patch: usize,
    stages: Vec<Stage>,
    dims: Vec<usize>,
}

impl SwinTransformer {
    /// The trunk described by `cfg`, parameters under `scope`; `seed` drives stochastic depth.
    pub fn new(cfg: &SwinConfig, mode: SwinMode, scope: &Scope, seed: u64) -> Result<Self> {
        let (embed, depths, heads) = cfg.shape().map_err(candle_core::Error::msg)?;
        let rng: DropRng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let rates = drop_path_rates(cfg.drop_path_rate, depths.iter().sum());
        let pe = scope.pp("patch_embed");
        let proj = PatchConv::new(&pe.pp("proj"), cfg.in_chans, embed, cfg.patch_size)?;
        let patch_norm = LayerNorm::new(&pe.pp("norm"), embed)?;
        let dims: Vec<usize> = (0..depths.len()).map(|i| embed << i).collect();
        let mut stages = Vec::with_capacity(depths.len());
        let mut block_index = 0;
        // The classifier's map side at img_size: patches, then halved rounding up per merge.
        let mut res = cfg.img_size.div_ceil(cfg.patch_size).max(1);
        for (i, &depth) in depths.iter().enumerate() {
            if i > 0 {
                res = res.div_ceil(2);
            }
            let (window, shift) = match mode {
                SwinMode::Detection => (cfg.window_size, cfg.window_size / 2),
                SwinMode::Classifier => {
                    if res <= cfg.window_size {
                        (res, 0)
                    } else {
                        (cfg.window_size, cfg.window_size / 2)
                    }
                }
            };
            let s = scope.pp("layers").pp(i);
            let hidden = (dims[i] as f64 * cfg.mlp_ratio) as usize;
            let shape = BlockShape { dim: dims[i], heads: heads[i], window, hidden };
            let mut blocks = Vec::with_capacity(depth);
            for j in 0..depth {
                let bs = s.pp("blocks").pp(j);
                let shifted = j % 2 == 1 && shift > 0;
                blocks.push(Block::new(&bs, shape, shifted, rates[block_index], rng.clone())?);
                block_index += 1;
            }
            let downsample =
                if i + 1 < depths.len() { Some(PatchMerging::new(&s.pp("downsample"), dims[i])?) } else { None };
            stages.push(Stage { blocks, downsample, window, shift });
        }
        Ok(Self { proj, patch_norm, patch: cfg.patch_size, stages, dims })
    }

    /// Channels of each stage.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Runs the trunk on `[N, C, H, W]` images and returns every stage's channels-last output
    /// (before its patch merging).
    pub fn forward_stages(&self, images: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let (_, _, h, w) = images.dims4()?;
        let (ph, pw) = ((self.patch - h % self.patch) % self.patch, (self.patch - w % self.patch) % self.patch);
        let images =
            if ph + pw > 0 { images.pad_with_zeros(2, 0, ph)?.pad_with_zeros(3, 0, pw)? } else { images.clone() };
        let mut x = self.patch_norm.forward(&self.proj.forward_nchw(&images, train)?)?;
        let mut outs = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            let (b, h, w, _) = x.dims4()?;
            let windows = Windows::new(b, h, w, stage.window, stage.shift, x.device())?;
            for block in &stage.blocks {
                x = block.forward(&x, &windows, train)?;
            }
            outs.push(x.clone());
            if let Some(down) = &stage.downsample {
                x = down.forward(&x)?;
            }
        }
        Ok(outs)
    }
}

/// Swin for image classification: trunk, layer norm (`norm`) over the last stage's tokens,
/// global average pool and the linear head (`head`).
pub struct SwinClassifier {
    trunk: SwinTransformer,
    norm: LayerNorm,
    head: Linear,
    num_classes: usize,
}

impl SwinClassifier {
    /// The classifier with `num_classes` outputs, parameters under `scope`.
    pub fn new(cfg: &SwinConfig, num_classes: usize, scope: &Scope, seed: u64) -> Result<Self> {
        let trunk = SwinTransformer::new(cfg, SwinMode::Classifier, scope, seed)?;
        let last = *trunk.dims().last().expect("at least one stage");
        let norm = LayerNorm::new(&scope.pp("norm"), last)?;
        let head = Linear::new(&scope.pp("head"), last, num_classes, Init::TruncNormal { std: INIT_STD })?;
        Ok(Self { trunk, norm, head, num_classes })
    }
}

impl Classifier for SwinClassifier {
    fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let last = self.trunk.forward_stages(images, train)?.pop().expect("at least one stage");
        let features = self.norm.forward(&last)?.mean((1, 2))?;
        self.head.forward_t(&features, train)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }
}

/// Swin as a detection backbone (Swin-Transformer-Object-Detection's `SwinTransformer`): the
/// stage outputs at `out_indices`, each through its own layer norm `norm{i}`, as `[N, C, H, W]`.
pub struct SwinBackbone {
    trunk: SwinTransformer,
    out_indices: Vec<usize>,
    norms: Vec<LayerNorm>,
    patch: usize,
}

impl SwinBackbone {
    /// The detection backbone, parameters under `scope` (a detector passes `backbone`).
    pub fn new(cfg: &SwinConfig, scope: &Scope, seed: u64) -> Result<Self> {
        let trunk = SwinTransformer::new(cfg, SwinMode::Detection, scope, seed)?;
        let stages = trunk.dims().len();
        if cfg.out_indices.is_empty() || cfg.out_indices.iter().any(|&i| i >= stages) {
            bail!("SwinTransformer out_indices must be a non-empty subset of 0..{stages}, got {:?}", cfg.out_indices);
        }
        let norms = cfg
            .out_indices
            .iter()
            .map(|&i| LayerNorm::new(&scope.pp(format!("norm{i}")), trunk.dims()[i]))
            .collect::<Result<_>>()?;
        Ok(Self { trunk, out_indices: cfg.out_indices.clone(), norms, patch: cfg.patch_size })
    }
}

impl Backbone for SwinBackbone {
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
        self.out_indices.iter().map(|&i| self.patch << i).collect()
    }
}
