//! Typed backbone sections of a config: `backbone: {type: ConvNeXt, arch: tiny, ...}`.
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a typo in a config never silently falls
//! back to a default.

use serde::{Deserialize, Deserializer};

pub use crate::roadmap::config::RoadmapConfig;

/// Which backbone family, chosen by the config's `type` key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum BackboneConfig {
    /// The hierarchical ConvNeXt (four stages, strides 4 to 32).
    ConvNeXt(ConvNeXtConfig),
    /// ConvNeXt-isotropic (a 16x16 patch stem and one stage at stride 16).
    ConvNeXtIsotropic(IsotropicConfig),
    /// ResNet with torchvision / mmdetection naming.
    ResNet(ResNetConfig),
    /// Swin Transformer (four stages of shifted-window attention, strides 4 to 32).
    SwinTransformer(SwinConfig),
    /// A step of the ConvNeXt paper's roadmap from ResNet-50 to ConvNeXt-T (classification only).
    Roadmap(RoadmapConfig),
}

/// Named ConvNeXt sizes: the paper's five and two small presets for CPU work.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConvNeXtArch {
    /// 40/80/160/320, depths 2/2/6/2.
    Atto,
    /// 80/160/320/640, depths 2/2/8/2.
    Nano,
    /// 96/192/384/768, depths 3/3/9/3.
    Tiny,
    /// 96/192/384/768, depths 3/3/27/3.
    Small,
    /// 128/256/512/1024, depths 3/3/27/3.
    Base,
    /// 192/384/768/1536, depths 3/3/27/3.
    Large,
    /// 256/512/1024/2048, depths 3/3/27/3.
    Xlarge,
}

impl ConvNeXtArch {
    /// `(depths, dims)` of the preset.
    pub fn shape(self) -> ([usize; 4], [usize; 4]) {
        match self {
            Self::Atto => ([2, 2, 6, 2], [40, 80, 160, 320]),
            Self::Nano => ([2, 2, 8, 2], [80, 160, 320, 640]),
            Self::Tiny => ([3, 3, 9, 3], [96, 192, 384, 768]),
            Self::Small => ([3, 3, 27, 3], [96, 192, 384, 768]),
            Self::Base => ([3, 3, 27, 3], [128, 256, 512, 1024]),
            Self::Large => ([3, 3, 27, 3], [192, 384, 768, 1536]),
            Self::Xlarge => ([3, 3, 27, 3], [256, 512, 1024, 2048]),
        }
    }
}

fn default_layer_scale() -> f64 {
    1e-6
}
fn default_out_indices() -> Vec<usize> {
    vec![0, 1, 2, 3]
}
fn default_in_chans() -> usize {
    3
}

/// A hierarchical ConvNeXt: a preset `arch`, or explicit `depths` and `dims` (which override it).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConvNeXtConfig {
    /// A named size; `depths`/`dims` given explicitly take precedence.
    #[serde(default)]
    pub arch: Option<ConvNeXtArch>,
    /// Blocks per stage.
    #[serde(default)]
    pub depths: Option<Vec<usize>>,
    /// Channels per stage (each at least 1).
    #[serde(default, deserialize_with = "dims")]
    pub dims: Option<Vec<usize>>,
    /// Input channels (at least 1).
    #[serde(default = "default_in_chans", deserialize_with = "in_chans")]
    pub in_chans: usize,
    /// Stochastic depth rate of the last block, in `[0, 1)`; rates grow linearly from 0 over all
    /// blocks.
    #[serde(default, deserialize_with = "drop_path_rate")]
    pub drop_path_rate: f64,
    /// Initial layer-scale value (finite); 0 or less means no layer scale (no `gamma` parameters).
    #[serde(default = "default_layer_scale", deserialize_with = "layer_scale_init_value")]
    pub layer_scale_init_value: f64,
    /// Stages whose (normed) outputs the detection mode returns.
    #[serde(default = "default_out_indices")]
    pub out_indices: Vec<usize>,
}

impl ConvNeXtConfig {
    /// The resolved `(depths, dims)`, or a message saying what is missing or inconsistent.
    pub fn depths_dims(&self) -> Result<(Vec<usize>, Vec<usize>), String> {
        let preset = self.arch.map(|a| a.shape());
        let depths = self.depths.clone().or(preset.map(|p| p.0.to_vec()));
        let dims = self.dims.clone().or(preset.map(|p| p.1.to_vec()));
        match (depths, dims) {
            (Some(d), Some(c)) if d.len() == 4 && c.len() == 4 => Ok((d, c)),
            (Some(d), Some(c)) => Err(format!("ConvNeXt needs 4 depths and 4 dims, got {d:?} and {c:?}")),
            _ => Err("ConvNeXt needs `arch` or both `depths` and `dims`".into()),
        }
    }
}

/// Named ConvNeXt-isotropic sizes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IsotropicArch {
    /// depth 18, dim 384.
    Small,
    /// depth 18, dim 768.
    Base,
    /// depth 36, dim 1024.
    Large,
}

/// ConvNeXt-isotropic: a preset `arch`, or explicit `depth` and `dim`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IsotropicConfig {
    /// A named size; `depth`/`dim` given explicitly take precedence.
    #[serde(default)]
    pub arch: Option<IsotropicArch>,
    /// Number of blocks.
    #[serde(default)]
    pub depth: Option<usize>,
    /// Channels (at least 1).
    #[serde(default, deserialize_with = "dim")]
    pub dim: Option<usize>,
    /// Input channels (at least 1).
    #[serde(default = "default_in_chans", deserialize_with = "in_chans")]
    pub in_chans: usize,
    /// Stochastic depth rate of the last block (linear rule), in `[0, 1)`.
    #[serde(default, deserialize_with = "drop_path_rate")]
    pub drop_path_rate: f64,
    /// Initial layer-scale value (finite); the official iso-S/B are trained with 0 (no `gamma`).
    #[serde(default, deserialize_with = "layer_scale_init_value")]
    pub layer_scale_init_value: f64,
}

impl IsotropicConfig {
    /// The resolved `(depth, dim)`.
    pub fn depth_dim(&self) -> Result<(usize, usize), String> {
        let preset = self.arch.map(|a| match a {
            IsotropicArch::Small => (18, 384),
            IsotropicArch::Base => (18, 768),
            IsotropicArch::Large => (36, 1024),
        });
        match (self.depth.or(preset.map(|p| p.0)), self.dim.or(preset.map(|p| p.1))) {
            (Some(d), Some(c)) => Ok((d, c)),
            _ => Err("ConvNeXtIsotropic needs `arch` or both `depth` and `dim`".into()),
        }
    }
}

fn default_frozen_stages() -> i64 {
    -1
}

/// ResNet (bottleneck, torchvision's stride-on-3x3 "pytorch" style) with frozen batch norm.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// 50 or 101.
    pub depth: usize,
    /// Stages `0..=3` (layer1..layer4) whose outputs the detection mode returns.
    #[serde(default = "default_out_indices")]
    pub out_indices: Vec<usize>,
    /// Stem and stages up to this index are not trained (-1: none; 1: stem and layer1, as the
    /// mmdetection detection configs use).
    #[serde(default = "default_frozen_stages")]
    pub frozen_stages: i64,
}

// Value checks, run while a section deserializes so that every command that reads a config
// rejects an out-of-range value at load time. Each message starts with the field's name in
// backquotes, which the config loader uses to point at the key (its position is lost inside the
// `type`-tagged enum).

/// `drop_path_rate` in `[0, 1)`: a rate of 1 or more drops every residual branch (timm's
/// `DropPath` keeps a sample with probability `1 - rate`).
fn drop_path_rate<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!("`drop_path_rate` must be in [0, 1), got {v}")))
    }
}

/// `layer_scale_init_value`: any finite number (0 or less turns layer scale off).
fn layer_scale_init_value<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!("`layer_scale_init_value` must be a finite number, got {v}")))
    }
}

/// `in_chans` of at least 1.
fn in_chans<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom("`in_chans` must be at least 1, got 0")),
        v => Ok(v),
    }
}

/// An isotropic `dim` of at least 1 (or none: from `arch`).
fn dim<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    match Option::<usize>::deserialize(d)? {
        Some(0) => Err(serde::de::Error::custom("`dim` must be at least 1, got 0")),
        v => Ok(v),
    }
}

/// ConvNeXt `dims`, each at least 1 (or none: from `arch`).
fn dims<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<usize>>, D::Error> {
    let v = Option::<Vec<usize>>::deserialize(d)?;
    match &v {
        Some(dims) if dims.contains(&0) => {
            Err(serde::de::Error::custom(format!("`dims` must all be at least 1, got {dims:?}")))
        }
        _ => Ok(v),
    }
}

/// Named Swin Transformer sizes (`timm/models/swin_transformer.py`, the official configs).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SwinArch {
    /// embed 96, depths 2/2/6/2, heads 3/6/12/24.
    Tiny,
    /// embed 96, depths 2/2/18/2, heads 3/6/12/24.
    Small,
    /// embed 128, depths 2/2/18/2, heads 4/8/16/32.
    Base,
    /// embed 192, depths 2/2/18/2, heads 6/12/24/48.
    Large,
}

impl SwinArch {
    /// `(embed_dim, depths, num_heads)` of the preset.
    pub fn shape(self) -> (usize, [usize; 4], [usize; 4]) {
        match self {
            Self::Tiny => (96, [2, 2, 6, 2], [3, 6, 12, 24]),
            Self::Small => (96, [2, 2, 18, 2], [3, 6, 12, 24]),
            Self::Base => (128, [2, 2, 18, 2], [4, 8, 16, 32]),
            Self::Large => (192, [2, 2, 18, 2], [6, 12, 24, 48]),
        }
    }
}

fn default_window_size() -> usize {
    7
}
fn default_patch_size() -> usize {
    4
}
fn default_img_size() -> usize {
    224
}
fn default_mlp_ratio() -> f64 {
    4.0
}

/// A Swin Transformer: a preset `arch`, or explicit `embed_dim`, `depths` and `num_heads`
/// (which override it). Stage `i` has `embed_dim * 2^i` channels.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SwinConfig {
    /// A named size; `embed_dim`/`depths`/`num_heads` given explicitly take precedence.
    #[serde(default)]
    pub arch: Option<SwinArch>,
    /// Channels of the first stage.
    #[serde(default)]
    pub embed_dim: Option<usize>,
    /// Blocks per stage.
    #[serde(default)]
    pub depths: Option<Vec<usize>>,
    /// Attention heads per stage (each must divide the stage's channels).
    #[serde(default)]
    pub num_heads: Option<Vec<usize>>,
    /// Side of the square attention windows (7 for the 224 models, 12 for the 384 ones).
    #[serde(default = "default_window_size")]
    pub window_size: usize,
    /// Side of the patches the stem embeds (kernel and stride of `patch_embed.proj`).
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    /// The classifier's training resolution: a stage whose feature map is not larger than the
    /// window there gets one window of that size and no shift (the official rule, which also
    /// sets the shape of `relative_position_bias_table`; map sides are `img_size / patch_size`
    /// rounded up, then halved rounding up per stage). The detection mode ignores it, as
    /// mmdetection's Swin does (every stage windowed and shifted, maps padded to windows).
    #[serde(default = "default_img_size")]
    pub img_size: usize,
    /// Hidden width of the MLPs relative to the stage's channels.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Input channels.
    #[serde(default = "default_in_chans")]
    pub in_chans: usize,
    /// Stochastic depth rate of the last block; rates grow linearly from 0 over all blocks.
    #[serde(default)]
    pub drop_path_rate: f64,
    /// Stages whose (normed) outputs the detection mode returns.
    #[serde(default = "default_out_indices")]
    pub out_indices: Vec<usize>,
}

impl SwinConfig {
    /// The resolved `(embed_dim, depths, num_heads)`, or a message naming the key that is
    /// missing or inconsistent.
    pub fn shape(&self) -> Result<(usize, Vec<usize>, Vec<usize>), String> {
        let preset = self.arch.map(|a| a.shape());
        let embed = self.embed_dim.or(preset.map(|p| p.0));
        let depths = self.depths.clone().or(preset.map(|p| p.1.to_vec()));
        let heads = self.num_heads.clone().or(preset.map(|p| p.2.to_vec()));
        let (Some(embed), Some(depths), Some(heads)) = (embed, depths, heads) else {
            return Err("SwinTransformer needs `arch` or all of `embed_dim`, `depths` and `num_heads`".into());
        };
        if depths.is_empty() || depths.len() != heads.len() {
            return Err(format!("SwinTransformer: depths {depths:?} and num_heads {heads:?} need one entry per stage"));
        }
        for (i, &h) in heads.iter().enumerate() {
            let dim = embed << i;
            if h == 0 || dim % h != 0 {
                return Err(format!(
                    "SwinTransformer: num_heads[{i}] = {h} does not divide stage {i}'s {dim} channels"
                ));
            }
        }
        if self.window_size < 1 || self.patch_size < 1 || embed == 0 {
            return Err("SwinTransformer: window_size, patch_size and embed_dim must be positive".into());
        }
        if self.mlp_ratio.is_nan() || self.mlp_ratio <= 0.0 || (embed as f64 * self.mlp_ratio) < 1.0 {
            return Err(format!("SwinTransformer: mlp_ratio {} must be positive", self.mlp_ratio));
        }
        Ok((embed, depths, heads))
    }
}
