//! The `data` sections of configs as typed structs, and the datasets and loaders they build.

pub mod builtin;
pub mod classification;
pub mod detection;

pub use builtin::ensure_builtin;
pub use classification::ClsDataConfig;
pub use detection::{CocoSplit, DetData, DetDataConfig};
