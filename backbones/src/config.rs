//! Typed backbone sections of a config: `backbone: {type: ConvNeXt, arch: tiny, ...}`.
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a typo in a config never silently falls
//! back to a default.

use serde::Deserialize;

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
    /// Channels per stage.
    #[serde(default)]
    pub dims: Option<Vec<usize>>,
    /// Input channels.
    #[serde(default = "default_in_chans")]
    pub in_chans: usize,
    /// Stochastic depth rate of the last block; rates grow linearly from 0 over all blocks.
    #[serde(default)]
    pub drop_path_rate: f64,
    /// Initial layer-scale value; 0 or less means no layer scale (no `gamma` parameters).
    #[serde(default = "default_layer_scale")]
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
    /// Channels.
    #[serde(default)]
    pub dim: Option<usize>,
    /// Input channels.
    #[serde(default = "default_in_chans")]
    pub in_chans: usize,
    /// Stochastic depth rate of the last block (linear rule).
    #[serde(default)]
    pub drop_path_rate: f64,
    /// Initial layer-scale value; the official iso-S/B are trained with 0 (no `gamma`).
    #[serde(default)]
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
