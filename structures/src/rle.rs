//! COCO run-length encoding of binary masks, as pycocotools writes it: the one codec of the
//! project (datasets decode annotation masks with it, the mask paste and the shapes generator
//! encode with it, the evaluation reads and writes results with it).
//!
//! An [`Rle`] holds the uncompressed runs (column-major, starting with a run of zeros). COCO
//! results files store them compressed as an ASCII string (pycocotools' `maskApi.c`
//! `rleToString` / `rleFrString`): each run, from the fourth on as the difference to the run two
//! before it, is written in 5-bit groups, least significant first, as characters `'0' + group`
//! with bit `0x20` meaning "more groups follow" and bit `0x10` of the last group carrying the sign.

use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;

/// A binary mask in COCO's uncompressed run-length form: column-major runs, starting with a run
/// of zeros (pycocotools' `encode` before string compression).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rle {
    /// Image height.
    pub height: u32,
    /// Image width.
    pub width: u32,
    /// Alternating run lengths of 0s and 1s, column-major, summing to `height * width`.
    pub counts: Vec<u32>,
}

/// Builds run lengths from pixel values in column-major order: the encoder behind
/// [`Rle::from_row_major_mask`], and behind masks that store only a window of the image (they
/// push the zeros around the window as long runs).
#[derive(Clone, Debug, Default)]
pub struct RunLengthEncoder {
    counts: Vec<u32>,
    value: bool,
    run: u64,
}

impl RunLengthEncoder {
    /// An encoder at the start of an image (the first run counts zeros).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `len` pixels of `value` (nonzero is foreground).
    pub fn push(&mut self, value: bool, len: u64) {
        if len == 0 {
            return;
        }
        if value != self.value {
            self.counts.push(self.run as u32);
            self.value = value;
            self.run = 0;
        }
        self.run += len;
    }

    /// The runs of everything pushed, for an image of `height x width` (checked).
    pub fn finish(mut self, height: u32, width: u32) -> Result<Rle, RleError> {
        self.counts.push(self.run as u32);
        Rle::from_column_major_counts(height, width, self.counts)
    }
}

/// Why a run-length encoding is not a valid mask.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RleError {
    /// The runs do not cover the image exactly.
    #[error("RLE runs sum to {sum} but a {height}x{width} mask has {expected} pixels")]
    Length {
        /// Image height.
        height: u32,
        /// Image width.
        width: u32,
        /// The sum of the runs.
        sum: u64,
        /// `height * width`.
        expected: u64,
    },
    /// A dense mask has the wrong number of pixels.
    #[error("mask has {len} pixels but a {height}x{width} mask has {expected}")]
    MaskSize {
        /// Image height.
        height: u32,
        /// Image width.
        width: u32,
        /// The number of pixels given.
        len: usize,
        /// `height * width`.
        expected: u64,
    },
    /// A compressed `counts` string is not a valid encoding.
    #[error("invalid compressed RLE counts at byte {position}: {reason}")]
    Counts {
        /// Byte offset in the string.
        position: usize,
        /// What is wrong there.
        reason: &'static str,
    },
}

/// Adds the runs in u64 (a sum of u32 runs cannot overflow it for any realistic count).
fn runs_sum(counts: &[u32]) -> u64 {
    counts.iter().map(|&c| u64::from(c)).sum()
}

impl Rle {
    /// Wraps uncompressed COCO runs (column-major, the first run counts zeros) after checking
    /// that they cover the `height x width` image exactly.
    pub fn from_column_major_counts(height: u32, width: u32, counts: Vec<u32>) -> Result<Self, RleError> {
        let rle = Rle { height, width, counts };
        rle.validate()?;
        Ok(rle)
    }

    /// Encodes a row-major `height x width` mask (nonzero = foreground) as pycocotools'
    /// `mask.encode` does on the same image: runs in column-major order.
    pub fn from_row_major_mask(mask: &[u8], height: u32, width: u32) -> Result<Self, RleError> {
        let expected = u64::from(height) * u64::from(width);
        if mask.len() as u64 != expected {
            return Err(RleError::MaskSize { height, width, len: mask.len(), expected });
        }
        let (h, w) = (height as usize, width as usize);
        let mut enc = RunLengthEncoder::new();
        for x in 0..w {
            for y in 0..h {
                enc.push(mask[y * w + x] != 0, 1);
            }
        }
        enc.finish(height, width)
    }

    /// Checks that the runs sum to `height * width`.
    pub fn validate(&self) -> Result<(), RleError> {
        let sum = runs_sum(&self.counts);
        let expected = u64::from(self.height) * u64::from(self.width);
        if sum != expected {
            return Err(RleError::Length { height: self.height, width: self.width, sum, expected });
        }
        Ok(())
    }

    /// The number of foreground pixels (pycocotools' `mask.area`): the sum of the odd runs.
    pub fn area(&self) -> u64 {
        self.counts.iter().skip(1).step_by(2).map(|&c| u64::from(c)).sum()
    }

    /// The row-major `height x width` 0/1 mask.
    pub fn to_row_major_mask(&self) -> Vec<u8> {
        let (h, w) = (self.height as usize, self.width as usize);
        let mut mask = vec![0u8; h * w];
        let mut pos = 0usize;
        for (i, &run) in self.counts.iter().enumerate() {
            let end = (pos + run as usize).min(h * w);
            if i % 2 == 1 {
                for p in pos..end {
                    // Column-major position p is pixel (y = p % h, x = p / h).
                    mask[(p % h) * w + p / h] = 1;
                }
            }
            pos = end;
        }
        mask
    }

    /// The compressed `counts` string (pycocotools' `rleToString`).
    pub fn counts_string(&self) -> String {
        let mut s = String::with_capacity(self.counts.len() * 2);
        for (i, &count) in self.counts.iter().enumerate() {
            let mut x = i64::from(count);
            if i > 2 {
                x -= i64::from(self.counts[i - 2]);
            }
            loop {
                let mut c = x & 0x1f;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push(char::from(b'0' + c as u8));
                if !more {
                    break;
                }
            }
        }
        s
    }

    /// Decodes a compressed `counts` string (pycocotools' `rleFrString`) for a
    /// `height x width` image, checking every character and that the runs cover the image.
    pub fn from_counts_string(s: &str, height: u32, width: u32) -> Result<Self, RleError> {
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::new();
        let mut p = 0usize;
        while p < bytes.len() {
            let (mut x, mut k) = (0i64, 0u32);
            loop {
                let Some(&b) = bytes.get(p) else {
                    return Err(RleError::Counts { position: p, reason: "the string ends inside a run" });
                };
                if !(48..48 + 64).contains(&b) {
                    return Err(RleError::Counts { position: p, reason: "character outside '0'..='o'" });
                }
                if k >= 12 {
                    return Err(RleError::Counts { position: p, reason: "run too long" });
                }
                let c = i64::from(b - 48);
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            let m = counts.len();
            if m > 2 {
                x += i64::from(counts[m - 2]);
            }
            let run = u32::try_from(x)
                .map_err(|_| RleError::Counts { position: p - 1, reason: "run length outside 0..2^32" })?;
            counts.push(run);
        }
        Self::from_column_major_counts(height, width, counts)
    }

    /// The COCO JSON form pycocotools' `mask.encode` gives (with `counts` decoded to text, as
    /// mmdetection writes it): `{"size": [height, width], "counts": "<compressed>"}`.
    pub fn to_coco_json(&self) -> serde_json::Value {
        json!({"size": [self.height, self.width], "counts": self.counts_string()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_string_round_trip() {
        let counts = vec![0, 5, 3, 100, 2, 70000, 1, 0, 31, 32, 1000, 7];
        let total: u32 = counts.iter().sum();
        let rle = Rle::from_column_major_counts(total, 1, counts.clone()).unwrap();
        let s = rle.counts_string();
        assert_eq!(Rle::from_counts_string(&s, total, 1).unwrap().counts, counts);
        assert!(Rle::from_counts_string(&s, total + 1, 1).is_err());
        // pycocotools: maskUtils.encode of the 3x2 mask [[0,1],[1,1],[0,0]] gives b"11110"
        // (column-major [0,1,0, 1,1,0] -> runs [1,1,1,2,1], the 4th and 5th as differences).
        assert_eq!(Rle::from_column_major_counts(3, 2, vec![1, 1, 1, 2, 1]).unwrap().counts_string(), "11110");
        assert!(Rle::from_counts_string("1O", 1, 1).is_err());
    }

    #[test]
    fn row_major_masks_and_windowed_runs_agree() {
        // Column-major: x=0: [0,1], x=1: [1,0], x=2: [1,1] -> 0 1 1 0 1 1 -> runs 1,2,1,2.
        let mask = [0, 1, 1, 1, 0, 1];
        let rle = Rle::from_row_major_mask(&mask, 2, 3).unwrap();
        assert_eq!(rle.counts, vec![1, 2, 1, 2]);
        assert_eq!(rle.to_row_major_mask(), mask);
        assert_eq!(rle.area(), 4);
        let mut enc = RunLengthEncoder::new();
        enc.push(false, 1);
        enc.push(true, 2);
        enc.push(false, 0);
        enc.push(false, 1);
        enc.push(true, 2);
        assert_eq!(enc.finish(2, 3).unwrap(), rle);
        let mut short = RunLengthEncoder::new();
        short.push(true, 5);
        assert!(short.finish(2, 3).is_err());
    }
}
