//! nextdet-engine: config loading, optimizers, LR schedules, checkpoints, the training loop,
//! logging and metrics.
//!
//! This crate must not depend on the model crates' internals beyond their public configs; the
//! config layer in [`config`] is generic YAML handling with no knowledge of any model.

#![deny(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod ema;
pub mod layer_decay;
pub mod loss_scale;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod trainer;

/// The collective operations of data-parallel training (`nextdet-dist`): the trainer
/// synchronizes through [`dist::Collective`], by default the process's [`dist::world`].
pub use nextdet_dist as dist;
