//! Typed backbone sections of a config: `backbone: {type: ConvNeXt, arch: tiny, ...}`.
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a typo in a config never silently falls
//! back to a default.

use serde::{Deserialize, Deserializer};

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
