//! Chroma upsampling (libjpeg-turbo `jdsample.c`) and color conversion (libjpeg-turbo
//! `jdcolor.c`), plus the CMYK to RGB rules of PIL and OpenCV.

/// How a component is brought to the output resolution, chosen as libjpeg-turbo's
/// `jinit_upsampler` chooses with fancy upsampling on (its default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Upsample {
    /// Full resolution: no work.
    Full,
    /// 2:1 horizontally, triangle filter (`h2v1_fancy_upsample`).
    H2V1Fancy,
    /// 2:1 vertically, triangle filter (`h1v2_fancy_upsample`).
    H1V2Fancy,
    /// 2:1 both ways, triangle filter (`h2v2_fancy_upsample`).
    H2V2Fancy,
    /// Any integral ratio by replication (`int_upsample`; `h2v1_upsample` and `h2v2_upsample`
    /// are its 2:1 cases, used when the component is at most 2 samples wide).
    Replicate {
        /// Horizontal factor.
        h: usize,
        /// Vertical factor.
        v: usize,
    },
}

impl Upsample {
    /// The method for a component with sampling factors `(h, v)` in a frame whose largest factors
    /// are `(hmax, vmax)` and whose downsampled width is `dw`; `None` for the fractional ratios
    /// libjpeg-turbo does not support either.
    pub(super) fn select(h: usize, v: usize, hmax: usize, vmax: usize, dw: usize) -> Option<Self> {
        Some(if h == hmax && v == vmax {
            Self::Full
        } else if h * 2 == hmax && v == vmax {
            if dw > 2 {
                Self::H2V1Fancy
            } else {
                Self::Replicate { h: 2, v: 1 }
            }
        } else if h == hmax && v * 2 == vmax {
            Self::H1V2Fancy
        } else if h * 2 == hmax && v * 2 == vmax {
            if dw > 2 {
                Self::H2V2Fancy
            } else {
                Self::Replicate { h: 2, v: 2 }
            }
        } else if hmax.is_multiple_of(h) && vmax.is_multiple_of(v) {
            Self::Replicate { h: hmax / h, v: vmax / v }
        } else {
            return None;
        })
    }
}

/// A decoded component: its samples, `stride` bytes per row, of which the first `dw` columns and
/// `dh` rows are real, and how it is upsampled.
pub(super) struct Plane<'a> {
    /// The samples.
    pub data: &'a [u8],
    /// Bytes per row.
    pub stride: usize,
    /// Real columns.
    pub dw: usize,
    /// Real rows.
    pub dh: usize,
    /// The upsampling method.
    pub method: Upsample,
}

impl Plane<'_> {
    #[inline(always)]
    fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.stride..r * self.stride + self.dw]
    }

    /// Output row `y` of this component at the output resolution (at least `width` samples),
    /// computed into `scratch` unless the component is at full resolution; `sums` is scratch
    /// space for column sums.
    #[inline(always)]
    fn upsampled_row<'s>(&'s self, y: usize, width: usize, scratch: &'s mut [u8], sums: &mut [u16]) -> &'s [u8] {
        match self.method {
            Upsample::Full => &self.row(y)[..width],
            Upsample::H2V1Fancy => {
                h2v1_fancy(self.row(y), scratch);
                &scratch[..width]
            }
            Upsample::H1V2Fancy => {
                let (near, far, bias) = self.vertical_neighbours(y);
                for ((o, &n), &f) in scratch[..self.dw].iter_mut().zip(near).zip(far) {
                    *o = ((u32::from(n) * 3 + u32::from(f) + bias) >> 2) as u8;
                }
                &scratch[..width]
            }
            Upsample::H2V2Fancy => {
                let (near, far, _) = self.vertical_neighbours(y);
                h2v2_fancy(near, far, scratch, sums);
                &scratch[..width]
            }
            Upsample::Replicate { h, v } => {
                let row = self.row(y / v);
                for (x, o) in scratch[..width].iter_mut().enumerate() {
                    *o = row[x / h];
                }
                &scratch[..width]
            }
        }
    }

    /// For 2:1 vertical upsampling: the nearest input row of output row `y`, the next nearest
    /// (above for even `y`, below for odd; the edge rows stand in for rows outside the image, as
    /// libjpeg-turbo's `jdmainct.c` context rows do) and the rounding bias of `h1v2_fancy_upsample`.
    #[inline(always)]
    fn vertical_neighbours(&self, y: usize) -> (&[u8], &[u8], u32) {
        let r = y / 2;
        if y.is_multiple_of(2) {
            (self.row(r), self.row(r.saturating_sub(1)), 1)
        } else {
            (self.row(r), self.row((r + 1).min(self.dh - 1)), 2)
        }
    }
}

/// `h2v1_fancy_upsample` on one row of at least 3 samples: writes `2 * input.len()` samples.
#[inline(always)]
fn h2v1_fancy(input: &[u8], out: &mut [u8]) {
    let n = input.len();
    let inp = |i: usize| u16::from(input[i]);
    out[0] = input[0];
    out[1] = ((inp(0) * 3 + inp(1) + 2) >> 2) as u8;
    for (o, w) in out[2..2 * n - 2].chunks_exact_mut(2).zip(input.windows(3)) {
        let (last, this, next) = (u16::from(w[0]), u16::from(w[1]) * 3, u16::from(w[2]));
        o[0] = ((this + last + 1) >> 2) as u8;
        o[1] = ((this + next + 2) >> 2) as u8;
    }
    out[2 * n - 2] = ((inp(n - 1) * 3 + inp(n - 2) + 1) >> 2) as u8;
    out[2 * n - 1] = input[n - 1];
}

/// `h2v2_fancy_upsample` for one output row from its nearest and next-nearest input rows (at
/// least 3 samples): writes `2 * near.len()` samples, using `sums` for the column sums.
#[inline(always)]
fn h2v2_fancy(near: &[u8], far: &[u8], out: &mut [u8], sums: &mut [u16]) {
    let n = near.len();
    let sums = &mut sums[..n];
    for ((s, &a), &b) in sums.iter_mut().zip(near).zip(far) {
        *s = u16::from(a) * 3 + u16::from(b);
    }
    out[0] = ((sums[0] * 4 + 8) >> 4) as u8;
    out[1] = ((sums[0] * 3 + sums[1] + 7) >> 4) as u8;
    for (o, w) in out[2..2 * n - 2].chunks_exact_mut(2).zip(sums.windows(3)) {
        let (last, this, next) = (w[0], w[1] * 3, w[2]);
        o[0] = ((this + last + 8) >> 4) as u8;
        o[1] = ((this + next + 7) >> 4) as u8;
    }
    out[2 * n - 2] = ((sums[n - 1] * 3 + sums[n - 2] + 8) >> 4) as u8;
    out[2 * n - 1] = ((sums[n - 1] * 4 + 7) >> 4) as u8;
}

/// libjpeg's `FIX`: a constant in 16-bit fixed point (`jdcolor.c`, `SCALEBITS` = 16).
const fn fix(x: f64) -> i32 {
    (x * 65536.0 + 0.5) as i32
}
const CR_R: i32 = fix(1.40200);
const CB_B: i32 = fix(1.77200);
const CR_G: i32 = fix(0.71414);
const CB_G: i32 = fix(0.34414);
const ONE_HALF: i32 = 1 << 15;

/// The red, green and blue offsets of `jdcolor.c`'s `build_ycc_rgb_table` for chroma values
/// `cb` and `cr`: `Cr_r_tab[cr]`, `(Cb_g_tab[cb] + Cr_g_tab[cr]) >> 16` and `Cb_b_tab[cb]`.
#[inline(always)]
fn chroma_offsets(cb: u8, cr: u8) -> (i32, i32, i32) {
    let (cb, cr) = (i32::from(cb) - 128, i32::from(cr) - 128);
    ((CR_R * cr + ONE_HALF) >> 16, (-CB_G * cb + ONE_HALF - CR_G * cr) >> 16, (CB_B * cb + ONE_HALF) >> 16)
}

#[inline(always)]
fn clamp(x: i32) -> u8 {
    x.clamp(0, 255) as u8
}

/// `ycc_rgb_convert` for one row.
#[inline(always)]
fn ycc_rgb_row(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    for (((o, &y), &cb), &cr) in out.chunks_exact_mut(3).zip(y).zip(cb).zip(cr) {
        let (r, g, b) = chroma_offsets(cb, cr);
        let y = i32::from(y);
        o[0] = clamp(y + r);
        o[1] = clamp(y + g);
        o[2] = clamp(y + b);
    }
}

/// How a CMYK JPEG becomes RGB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmykRule {
    /// PIL: the samples are read as Adobe-inverted CMYK (`CMYK;I`) and `convert("RGB")` computes
    /// `255 - k' - (255 - k') * c' / 255` with its rounding (Pillow `Convert.c`, `cmyk2rgb`).
    Pil,
    /// OpenCV's `imdecode`: `k - (255 - c) * k / 256` on libjpeg's samples (OpenCV
    /// `imgcodecs/src/utils.cpp`, `icvCvt_CMYK2BGR_8u_C4C3R`).
    OpenCv,
}

impl CmykRule {
    /// One RGB channel from libjpeg's CMYK output samples `c` (the channel's ink) and `k`.
    #[inline(always)]
    fn channel(self, c: u8, k: u8) -> u8 {
        let (c, k) = (u32::from(c), u32::from(k));
        match self {
            Self::Pil => {
                // PIL's samples are 255 - c and 255 - k; its MULDIV255(255 - c, k).
                let tmp = (255 - c) * k + 128;
                (k - (((tmp >> 8) + tmp) >> 8)) as u8
            }
            Self::OpenCv => (k - (((255 - c) * k) >> 8)) as u8,
        }
    }
}

/// The JPEG color space (libjpeg-turbo `jdapimin.c`, `default_decompress_parms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ColorSpace {
    /// One component.
    Gray,
    /// Three components, YCbCr.
    YCbCr,
    /// Three components stored as RGB.
    Rgb,
    /// Four components stored as CMYK.
    Cmyk,
    /// Four components stored as YCbCr + K.
    Ycck,
}

/// Upsamples the components and converts them to interleaved 8-bit RGB.
///
/// On x86-64 CPUs with AVX2 (checked at run time, cached by std) the same code runs compiled for
/// AVX2, where the compiler vectorizes the 16- and 32-bit arithmetic; the binary stays portable.
pub(super) fn to_rgb(planes: &[Plane<'_>], space: ColorSpace, cmyk: CmykRule, width: usize, height: usize) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2(planes: &[Plane<'_>], space: ColorSpace, cmyk: CmykRule, width: usize, height: usize) -> Vec<u8> {
            to_rgb_generic(planes, space, cmyk, width, height)
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the feature `avx2` was compiled for was just detected.
            return unsafe { avx2(planes, space, cmyk, width, height) };
        }
    }
    to_rgb_generic(planes, space, cmyk, width, height)
}

#[inline(always)]
fn to_rgb_generic(planes: &[Plane<'_>], space: ColorSpace, cmyk: CmykRule, width: usize, height: usize) -> Vec<u8> {
    let mut out = vec![0u8; width * height * 3];
    let scratch_len = planes.iter().map(|p| (2 * p.dw).max(width)).max().unwrap_or(width);
    let mut scratch: Vec<Vec<u8>> = planes.iter().map(|_| vec![0u8; scratch_len]).collect();
    let mut sums = vec![0u16; scratch_len];
    for (y, out_row) in out.chunks_exact_mut(width * 3).enumerate() {
        let mut rows: [&[u8]; 4] = [&[]; 4];
        for ((row, plane), s) in rows.iter_mut().zip(planes).zip(scratch.iter_mut()) {
            *row = plane.upsampled_row(y, width, s, &mut sums);
        }
        match space {
            ColorSpace::Gray => {
                for (o, &g) in out_row.chunks_exact_mut(3).zip(rows[0]) {
                    o.fill(g);
                }
            }
            ColorSpace::YCbCr => ycc_rgb_row(rows[0], rows[1], rows[2], out_row),
            ColorSpace::Rgb => {
                for (((o, &r), &g), &b) in out_row.chunks_exact_mut(3).zip(rows[0]).zip(rows[1]).zip(rows[2]) {
                    o.copy_from_slice(&[r, g, b]);
                }
            }
            ColorSpace::Cmyk => {
                for (x, o) in out_row.chunks_exact_mut(3).enumerate() {
                    let k = rows[3][x];
                    for (ch, o) in o.iter_mut().enumerate() {
                        *o = cmyk.channel(rows[ch][x], k);
                    }
                }
            }
            ColorSpace::Ycck => {
                // ycck_cmyk_convert: CMY = 255 - RGB of the YCbCr triple, K unchanged.
                for (x, o) in out_row.chunks_exact_mut(3).enumerate() {
                    let (r, g, b) = chroma_offsets(rows[1][x], rows[2][x]);
                    let yy = i32::from(rows[0][x]);
                    let k = rows[3][x];
                    let inks = [clamp(255 - (yy + r)), clamp(255 - (yy + g)), clamp(255 - (yy + b))];
                    for (o, ink) in o.iter_mut().zip(inks) {
                        *o = cmyk.channel(ink, k);
                    }
                }
            }
        }
    }
    out
}
