//! `backbone: {type: Roadmap, ...}`: the design decisions of the ConvNeXt paper's roadmap
//! (arXiv 2201.03545, Section 2, Figure 2 and Table 10), one option each. The names, values and
//! defaults are those of the PyTorch reference `tests/reference/roadmap_ref.py` (its `DEFAULTS`:
//! ResNet-50), so that a step's options there are its YAML here.

use serde::Deserialize;

/// The stem (`downsample_layers.0`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// ResNet's: conv 7x7 stride 2 (no bias), norm, activation, max pool 3x3 stride 2.
    Resnet,
    /// A "patchify" conv 4x4 stride 4, then a norm if `stem_norm` (Section 2.2).
    Patchify,
}

/// The residual block's shape (Section 2.4).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// ResNet's bottleneck: 1x1 to `dim`, spatial conv, 1x1 to `4 dim` (the block's output).
    Bottleneck,
    /// The inverted bottleneck: hidden width `4 dim`, output `dim`.
    Inverted,
}

/// The activation function.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActKind {
    /// ReLU.
    Relu,
    /// GELU (the exact, erf form: `nn.GELU()`).
    Gelu,
}

/// The normalization layers.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NormChoice {
    /// Batch norm (`nn.BatchNorm2d`, eps 1e-5, momentum 0.1).
    Bn,
    /// Layer norm over channels (ConvNeXt's `LayerNorm`, eps 1e-6).
    Ln,
}

/// Where the resolution halves between stages.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DownsampleKind {
    /// In the first block of stages 1 to 3 (stride 2 on its spatial conv and its shortcut).
    Block,
    /// Separate layers before stages 1 to 3: norm, then conv 2x2 stride 2 (Section 2.6).
    Separate,
}

fn default_depths() -> Vec<usize> {
    vec![3, 4, 6, 3]
}
fn default_dims() -> Vec<usize> {
    vec![64, 128, 256, 512]
}
fn default_kernel_size() -> usize {
    3
}

/// A roadmap backbone; every key defaults to ResNet-50's choice.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoadmapConfig {
    /// Blocks per stage (four stages).
    #[serde(default = "default_depths")]
    pub depths: Vec<usize>,
    /// Per stage: a bottleneck's inner width (its output is `4 dim`) or an inverted block's
    /// output width.
    #[serde(default = "default_dims")]
    pub dims: Vec<usize>,
    /// The stem.
    #[serde(default = "default_stem")]
    pub stem: Stem,
    /// A norm after the patchify stem's conv (the ResNet stem always has one).
    #[serde(default)]
    pub stem_norm: bool,
    /// Bottleneck or inverted bottleneck.
    #[serde(default = "default_block")]
    pub block: BlockKind,
    /// The spatial conv is depthwise (`groups` = its channels; Section 2.3).
    #[serde(default)]
    pub depthwise: bool,
    /// The spatial conv first in the block, before the pointwise layers (Section 2.5, "moving
    /// up the depthwise conv layer"); only with `block: inverted`.
    #[serde(default)]
    pub spatial_first: bool,
    /// Side of the spatial conv's kernel (odd).
    #[serde(default = "default_kernel_size")]
    pub kernel_size: usize,
    /// The activation function.
    #[serde(default = "default_act")]
    pub act: ActKind,
    /// One activation per block, between the pointwise layers (Section 2.6); spatial-first only.
    #[serde(default)]
    pub one_act: bool,
    /// One norm per block, after the spatial conv (Section 2.6); spatial-first only.
    #[serde(default)]
    pub one_norm: bool,
    /// Batch norm or layer norm, everywhere but `norm` after pooling.
    #[serde(default = "default_norm")]
    pub norm: NormChoice,
    /// Downsampling inside blocks or in separate layers.
    #[serde(default = "default_downsample")]
    pub downsample: DownsampleKind,
    /// A layer norm after global average pooling (`norm`).
    #[serde(default)]
    pub head_norm: bool,
    /// Initial layer-scale value; 0 (or less) means no `gamma` parameters.
    #[serde(default)]
    pub layer_scale: f64,
    /// Stochastic depth rate of the last block, in `[0, 1)`, rates linear from 0 over all blocks
    /// (part of the training recipe, Section 2.1; not in the reference, which has no dropping).
    #[serde(default)]
    pub drop_path_rate: f64,
}

fn default_stem() -> Stem {
    Stem::Resnet
}
fn default_block() -> BlockKind {
    BlockKind::Bottleneck
}
fn default_act() -> ActKind {
    ActKind::Relu
}
fn default_norm() -> NormChoice {
    NormChoice::Bn
}
fn default_downsample() -> DownsampleKind {
    DownsampleKind::Block
}

impl RoadmapConfig {
    /// Checks the combinations the reference accepts, or says which key is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.depths.len() != 4 || self.dims.len() != 4 {
            return Err(format!("Roadmap needs 4 depths and 4 dims, got {:?} and {:?}", self.depths, self.dims));
        }
        if self.dims.contains(&0) {
            return Err(format!("Roadmap: `dims` must all be at least 1, got {:?}", self.dims));
        }
        if self.kernel_size.is_multiple_of(2) {
            return Err(format!("Roadmap: `kernel_size` must be odd, got {}", self.kernel_size));
        }
        if self.spatial_first && self.block != BlockKind::Inverted {
            return Err("Roadmap: `spatial_first` needs `block: inverted`".into());
        }
        if (self.one_act || self.one_norm) && !self.spatial_first {
            return Err("Roadmap: `one_act` and `one_norm` need `spatial_first: true`".into());
        }
        if !self.layer_scale.is_finite() {
            return Err(format!("Roadmap: `layer_scale` must be finite, got {}", self.layer_scale));
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(format!("Roadmap: `drop_path_rate` must be in [0, 1), got {}", self.drop_path_rate));
        }
        Ok(())
    }

    /// The channels each stage's blocks output: `4 dim` for bottlenecks, `dim` otherwise.
    pub fn widths(&self) -> Vec<usize> {
        let factor = if self.block == BlockKind::Bottleneck { 4 } else { 1 };
        self.dims.iter().map(|d| factor * d).collect()
    }
}
