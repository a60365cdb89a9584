//! Plain data that crosses nextdet's layers, with no tensor library behind it (as detectron2's
//! `structures/`): the geometry of an image through the transforms ([`ImageMeta`]) and COCO's
//! run-length mask encoding ([`Rle`], with the one codec every crate uses).
//!
//! The datasets produce [`ImageMeta`]s, the heads read them to map predictions back, the
//! evaluation reads [`Rle`]s, the mask paste writes them.

#![deny(missing_docs)]

pub mod meta;
pub mod rle;

pub use meta::ImageMeta;
pub use rle::{Rle, RleError, RunLengthEncoder};
