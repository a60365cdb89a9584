//! Datasets and image preprocessing for nextdet.
//!
//! This crate has no candle dependency: it decodes and transforms images into plain buffers
//! (`u8` HWC images, normalized `f32` CHW arrays) and leaves tensor creation to the caller.
//!
//! - [`image_io`]: decode JPEG / PNG / BMP / WebP files to 8-bit RGB ([`RgbImage`]).
//! - [`resize`]: a Pillow-compatible resampler ([`resize_rgb8`]), matching torchvision's
//!   `Resize` on PIL images.
//! - [`classification`]: the timm / ConvNeXt evaluation transform ([`EvalTransform`]).
//! - [`image_folder`]: torchvision-style `ImageFolder` datasets ([`ImageFolder`]).

#![deny(missing_docs)]

pub mod classification;
pub mod image_folder;
pub mod image_io;
pub mod resize;

pub use classification::{center_crop, normalize_chw, EvalTransform, TransformError};
pub use image_folder::{ImageFolder, ImageFolderError};
pub use image_io::{
    decode_rgb8, decode_rgb8_with, load_rgb8, load_rgb8_with, DecodeConvention, ImageIoError, RgbImage,
};
pub use resize::{resize_rgb8, resize_rgb8_with_order, Filter, PassOrder};
pub mod sample;
pub use sample::{Bitmap, DetSample, ImageMeta};
pub mod cls_augment;
pub mod coco;
pub mod collate;
pub mod draw;
pub mod loader;
pub mod mixup;
pub mod rand_augment;
pub mod sampler;
pub mod shapes;
pub mod transforms;
