//! Batch normalization with PyTorch's parameters and buffers, and its synchronized form
//! (`SyncBatchNorm`), as the Cascade box heads use it: the layer lives in `nextdet_ops` so that
//! the backbones share it.

pub use nextdet_ops::batch_norm_layer::{BatchNorm, BatchNorm1d, BatchNorm2d};
