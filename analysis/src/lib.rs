//! Parameters, FLOPs and activations of a model, per module, counted as the two tools the
//! ConvNeXt paper's numbers come from count them:
//!
//! - fvcore's `FlopCountAnalysis` (`fvcore/nn/flop_count.py`, `jit_handles.py`): a JIT trace,
//!   one handle per aten op; one fused multiply-add is one FLOP; convolutions, linear layers and
//!   matrix multiplies are counted, and (since fvcore's March 2021 handles) batch / layer / group
//!   norm, adaptive average pooling and upsampling; activations, max pooling, elementwise
//!   arithmetic and anything written as tensor ops are not. The paper's classifier tables
//!   (ConvNeXt Tables 1, 2 and 10) count only the convolution and matrix-multiply handles
//!   ([`Counter::FvcoreConvMatmul`]).
//! - mmcv's `get_model_complexity_info` (`mmcv/cnn/utils/flops_counter.py`), as mmdetection's
//!   `tools/analysis_tools/get_flops.py` uses it for the detection table: forward hooks on the
//!   `nn.Module` types it knows (convolutions with their bias, linear layers without, ReLU, batch
//!   / group / instance / layer norm, pooling, upsampling, transposed convolutions); functional
//!   calls and module types it does not know (RoIAlign, GELU, SyncBN, ConvNeXt's own LayerNorm
//!   class) count nothing.
//!
//! A model describes what one forward pass runs to a [`CostTree`]: each layer under its module
//! path (the parameter names are the module paths: `stages.2.5.pwconv1`), with the shape it
//! sees and how the reference implementation runs it ([`Via`]). The tree keeps every count
//! under both conventions; [`CostTree::report`] sums them per module for one [`Counter`].
//! Activations are fvcore's `ActivationCountAnalysis`: the output elements of convolutions,
//! linear layers and matrix multiplies.

#![deny(missing_docs)]

mod counter;
mod layers;
mod report;
mod tree;

pub use counter::{Counter, Op, Via};
pub use layers::{Act, Conv2d, Norm, NormKind, Pool};
pub use report::ModuleCost;
pub use tree::{numel, CostTree, Shape};
