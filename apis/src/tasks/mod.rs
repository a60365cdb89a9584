//! The concrete training tasks the engine's loop trains: detection and classification.

pub mod classification;
pub mod detection;

pub use classification::{ClsSetup, ClsTask};
pub use detection::DetTask;
