//! Describing a layer of `nextdet_ops::nn` to `nextdet analyze` (see `nextdet_analysis`).

use candle_core::Result;
use nextdet_analysis::{Conv2d as ConvSpec, CostTree, Shape};
use nextdet_ops::nn::Conv2d;

/// The `nn.Conv2d` module `name` on `x: [N, C, H, W]`.
pub fn conv2d(tree: &mut CostTree, name: &str, x: &[usize], conv: &Conv2d) -> Result<Shape> {
    let (weight, bias, stride, padding) = conv.parts();
    tree.conv2d(name, x, ConvSpec::new(weight.dims()).bias(bias.is_some()).stride(stride).padding(padding))
}
