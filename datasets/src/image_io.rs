//! Decoding image files into 8-bit RGB buffers.
//!
//! Decoding follows what the Python pipelines do, byte for byte. JPEG files are decoded by this
//! crate's own decoder (`image_io/jpeg`), whose output is that of libjpeg-turbo's default decode
//! (accurate integer IDCT, fancy upsampling), which both PIL and OpenCV use; PNG, BMP and WebP
//! files by the `image` crate. Grey images are replicated to three channels and an alpha channel
//! is dropped. The format is detected from the file's content, falling back to its extension.
//!
//! The two Python readers differ in two places, so the caller picks one with [`DecodeConvention`]:
//!
//! - [`DecodeConvention::Pil`] (timm and torchvision: `Image.open(path).convert("RGB")`, the
//!   default, [`load_rgb8`]): EXIF orientation is *not* applied; CMYK JPEGs become RGB by PIL's rule.
//! - [`DecodeConvention::OpenCv`] (mmdetection's `LoadImageFromFile`: `mmcv.imfrombytes` with
//!   flag `color`, i.e. `cv2.imdecode(buf, cv2.IMREAD_COLOR)`, then BGR to RGB): a JPEG's EXIF
//!   orientation is applied; CMYK JPEGs become RGB by OpenCV's rule (at most 1 level from PIL's).
//!   EXIF orientation in PNG or WebP files is not read.
//!
//! A JPEG is checked for completeness before it is decoded: its marker structure is walked to the
//! end-of-image marker, so a truncated file is an error rather than an image whose missing part
//! the decoder filled with grey. Corrupt entropy-coded data is an error too (libjpeg-turbo warns
//! and fills in zeros). Arithmetic-coded, lossless, hierarchical and 12-bit JPEGs are rejected as
//! unsupported.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageError, ImageFormat, ImageReader};

mod jpeg;

/// Whose conventions a file is decoded with, where PIL and OpenCV differ: EXIF orientation and
/// CMYK JPEGs. Everything else (in particular every RGB, YCbCr and grey JPEG pixel) is the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecodeConvention {
    /// PIL's `Image.open(path).convert("RGB")`, as timm and torchvision read images: EXIF
    /// orientation ignored; CMYK through PIL's `CMYK;I` reading and `cmyk2rgb`.
    #[default]
    Pil,
    /// OpenCV's `cv2.imdecode(buf, cv2.IMREAD_COLOR)` converted to RGB, as mmdetection reads
    /// images (`mmcv.imfrombytes` with flag `color`): a JPEG's EXIF orientation applied; CMYK
    /// through OpenCV's `icvCvt_CMYK2BGR_8u_C4C3R`.
    OpenCv,
}

/// An 8-bit RGB image stored row-major, channels interleaved (HWC): the byte of channel `c` of
/// pixel `(x, y)` is at `(y * width + x) * 3 + c`.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RgbImage").field("width", &self.width).field("height", &self.height).finish_non_exhaustive()
    }
}

impl RgbImage {
    /// Wraps an HWC buffer; `None` unless `data.len() == width * height * 3`.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        let expected = width.checked_mul(height)?.checked_mul(3)?;
        (data.len() == expected).then_some(Self { width, height, data })
    }

    /// A black image of the given size.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self { width, height, data: vec![0; width * height * 3] }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// `true` when the image has no pixels (zero width or height).
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// The HWC bytes.
    pub fn as_raw(&self) -> &[u8] {
        &self.data
    }

    /// The HWC bytes, mutably.
    pub fn as_raw_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Consumes the image and returns its HWC bytes.
    pub fn into_raw(self) -> Vec<u8> {
        self.data
    }

    /// The RGB value of pixel `(x, y)`; `None` outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y * self.width + x) * 3;
        Some([self.data[i], self.data[i + 1], self.data[i + 2]])
    }

    /// Copies the rectangle with top-left corner `(left, top)` and size `width` x `height`;
    /// `None` if it does not lie inside the image.
    pub fn crop(&self, left: usize, top: usize, width: usize, height: usize) -> Option<Self> {
        if left.checked_add(width)? > self.width || top.checked_add(height)? > self.height {
            return None;
        }
        let mut data = Vec::with_capacity(width * height * 3);
        for y in top..top + height {
            let start = (y * self.width + left) * 3;
            data.extend_from_slice(&self.data[start..start + width * 3]);
        }
        Some(Self { width, height, data })
    }
}

/// Why an image file could not be turned into an [`RgbImage`]. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageIoError {
    /// The file does not exist.
    #[error("image file not found: {}", path.display())]
    NotFound {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read image file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file's bytes are not a valid image: corrupt, truncated, or empty.
    #[error("corrupt or truncated image {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the decoder or the structure check found.
        reason: String,
    },
    /// The file is an image in a format this crate does not decode, or not recognizably an image.
    #[error("unsupported image format in {}: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What was detected.
        reason: String,
    },
}

impl ImageIoError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path }
            | Self::Io { path, .. }
            | Self::Corrupt { path, .. }
            | Self::Unsupported { path, .. } => path,
        }
    }
}

/// Reads and decodes the image file at `path` into 8-bit RGB, as PIL does
/// ([`DecodeConvention::Pil`]).
///
/// Errors: [`ImageIoError::NotFound`] for a missing file, [`ImageIoError::Io`] for an unreadable
/// one, [`ImageIoError::Corrupt`] for bad or truncated data, and [`ImageIoError::Unsupported`] for
/// a format other than JPEG, PNG, BMP or WebP.
pub fn load_rgb8(path: impl AsRef<Path>) -> Result<RgbImage, ImageIoError> {
    load_rgb8_with(path, DecodeConvention::Pil)
}

/// Reads and decodes the image file at `path` into 8-bit RGB with the given convention; errors as
/// for [`load_rgb8`].
pub fn load_rgb8_with(path: impl AsRef<Path>, convention: DecodeConvention) -> Result<RgbImage, ImageIoError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ImageIoError::NotFound { path: path.to_path_buf() }
        } else {
            ImageIoError::Io { path: path.to_path_buf(), source }
        }
    })?;
    decode_rgb8_with(&bytes, path, convention)
}

/// Decodes an in-memory image file into 8-bit RGB as PIL does ([`DecodeConvention::Pil`]).
/// `path` is used to name the image in errors and, when the content is not recognized, to guess
/// the format from its extension.
pub fn decode_rgb8(bytes: &[u8], path: impl AsRef<Path>) -> Result<RgbImage, ImageIoError> {
    decode_rgb8_with(bytes, path, DecodeConvention::Pil)
}

/// Decodes an in-memory image file into 8-bit RGB with the given convention; `path` as for
/// [`decode_rgb8`].
pub fn decode_rgb8_with(
    bytes: &[u8],
    path: impl AsRef<Path>,
    convention: DecodeConvention,
) -> Result<RgbImage, ImageIoError> {
    let path = path.as_ref();
    let corrupt = |reason: String| ImageIoError::Corrupt { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(corrupt("the file is empty".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| corrupt(e.to_string()))?;
    let format = match reader.format() {
        Some(f) => f,
        None => match ImageFormat::from_path(path) {
            Ok(f) => {
                reader.set_format(f);
                f
            }
            Err(_) => {
                return Err(ImageIoError::Unsupported {
                    path: path.to_path_buf(),
                    reason: "content is not a recognized image format and the extension does \
                             not name one"
                        .into(),
                })
            }
        },
    };
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Bmp | ImageFormat::WebP) {
        return Err(ImageIoError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("{format:?} images are not supported (JPEG, PNG, BMP, WebP are)"),
        });
    }
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes).map_err(corrupt)?;
        let rule = match convention {
            DecodeConvention::Pil => jpeg::CmykRule::Pil,
            DecodeConvention::OpenCv => jpeg::CmykRule::OpenCv,
        };
        let decoded = jpeg::decode(bytes, rule).map_err(|e| match e {
            jpeg::JpegError::Corrupt(reason) => corrupt(reason),
            jpeg::JpegError::Unsupported(reason) => ImageIoError::Unsupported { path: path.to_path_buf(), reason },
        })?;
        let image = RgbImage::from_raw(decoded.width, decoded.height, decoded.rgb)
            .ok_or_else(|| corrupt("decoder returned a buffer of the wrong size".into()))?;
        return Ok(match (convention, decoded.orientation) {
            (DecodeConvention::OpenCv, Some(o)) => apply_exif_orientation(&image, o),
            _ => image,
        });
    }
    let decoded = reader.decode().map_err(|e| match e {
        ImageError::Unsupported(u) => ImageIoError::Unsupported { path: path.to_path_buf(), reason: u.to_string() },
        other => corrupt(other.to_string()),
    })?;
    let rgb = decoded.into_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    RgbImage::from_raw(w, h, rgb.into_raw())
        .ok_or_else(|| corrupt("decoder returned a buffer of the wrong size".into()))
}

/// The image as EXIF orientation `orientation` says it is to be displayed, as OpenCV's
/// `ExifTransform` (`imgcodecs/src/loadsave.cpp`) turns it: 2 mirrors left-right, 3 rotates 180
/// degrees, 4 mirrors top-bottom, 5 transposes, 6 rotates 90 degrees clockwise, 7 transposes across
/// the anti-diagonal, 8 rotates 90 degrees counter-clockwise; 1 and values outside 1-8 leave the
/// image as it is.
pub fn apply_exif_orientation(image: &RgbImage, orientation: u16) -> RgbImage {
    let (w, h) = (image.width, image.height);
    if !(2..=8).contains(&orientation) {
        return image.clone();
    }
    let (ow, oh) = if orientation >= 5 { (h, w) } else { (w, h) };
    let mut data = Vec::with_capacity(w * h * 3);
    for oy in 0..oh {
        for ox in 0..ow {
            let (sx, sy) = match orientation {
                2 => (w - 1 - ox, oy),
                3 => (w - 1 - ox, h - 1 - oy),
                4 => (ox, h - 1 - oy),
                5 => (oy, ox),
                6 => (oy, h - 1 - ox),
                7 => (w - 1 - oy, h - 1 - ox),
                _ => (w - 1 - oy, ox),
            };
            let i = (sy * w + sx) * 3;
            data.extend_from_slice(&image.data[i..i + 3]);
        }
    }
    RgbImage { width: ow, height: oh, data }
}

/// Walks a JPEG's marker segments and entropy-coded scans up to the end-of-image marker (EOI).
/// Returns a description of the problem if the data ends before EOI or a segment is malformed.
/// Bytes after EOI are allowed (some writers append data).
fn check_jpeg_complete(b: &[u8]) -> Result<(), String> {
    let truncated = |at: usize| {
        format!("JPEG data ends at byte {at} of {} before the end-of-image marker (truncated file)", b.len())
    };
    if b.len() < 2 || b[0] != 0xFF || b[1] != 0xD8 {
        return Err("missing JPEG start-of-image marker".into());
    }
    let mut i = 2;
    loop {
        // Find the next marker, tolerating stray bytes and 0xFF fill bytes.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        if i >= b.len() {
            return Err(truncated(b.len()));
        }
        let marker = b[i];
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // Not a marker (stuffed zero), or a marker without a length field.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        if i + 2 > b.len() {
            return Err(truncated(b.len()));
        }
        let len = u16::from_be_bytes([b[i], b[i + 1]]) as usize;
        if len < 2 {
            return Err(format!("invalid JPEG segment length {len} for marker 0xFF{marker:02X} at byte {}", i - 2));
        }
        i += len;
        if i > b.len() {
            return Err(truncated(b.len()));
        }
        if marker == 0xDA {
            // Entropy-coded data runs until a marker other than a stuffed 0xFF00 or a restart.
            loop {
                if i >= b.len() {
                    return Err(truncated(b.len()));
                }
                if b[i] != 0xFF {
                    i += 1;
                    continue;
                }
                if i + 1 >= b.len() {
                    return Err(truncated(b.len()));
                }
                match b[i + 1] {
                    0x00 | 0xD0..=0xD7 => i += 2,
                    0xFF => i += 1,
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_structure_check() {
        // SOI, APP0 with length 4, SOS with length 2, data with stuffing and a restart, EOI.
        let ok = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x01, 0x02, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0,
            0x56, 0xFF, 0xD9,
        ];
        assert!(check_jpeg_complete(&ok).is_ok());
        let mut trailing = ok.to_vec();
        trailing.extend_from_slice(b"junk");
        assert!(check_jpeg_complete(&trailing).is_ok());
        for cut in 0..ok.len() - 1 {
            assert!(check_jpeg_complete(&ok[..cut]).is_err(), "cut at {cut}");
        }
        // An EOI-looking pair inside an APP segment does not count.
        let hidden = [0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x04, 0xFF, 0xD9, 0xFF, 0xDA, 0x00, 0x02, 0x12];
        assert!(check_jpeg_complete(&hidden).is_err());
    }

    #[test]
    fn crop_and_pixel() {
        let data: Vec<u8> = (0..4 * 3 * 3).map(|v| v as u8).collect();
        let img = RgbImage::from_raw(4, 3, data).unwrap();
        assert_eq!(img.pixel(1, 2), Some([27, 28, 29]));
        assert_eq!(img.pixel(4, 0), None);
        let c = img.crop(1, 1, 2, 2).unwrap();
        assert_eq!(c.as_raw(), &[15, 16, 17, 18, 19, 20, 27, 28, 29, 30, 31, 32]);
        assert!(img.crop(3, 0, 2, 1).is_none());
        assert!(RgbImage::from_raw(2, 2, vec![0; 11]).is_none());
    }
}
