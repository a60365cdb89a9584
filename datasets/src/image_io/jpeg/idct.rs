//! The accurate integer inverse DCT with dequantization and range limiting, libjpeg-turbo's
//! default (`JDCT_ISLOW`, `jidctint.c`, `jpeg_idct_islow`).
//!
//! libjpeg-turbo short-cuts columns and rows whose AC terms are zero; the full computation gives
//! the same numbers, so it is always done (except for blocks with only a DC coefficient).

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
const FIX_0_298631336: i32 = 2446;
const FIX_0_390180644: i32 = 3196;
const FIX_0_541196100: i32 = 4433;
const FIX_0_765366865: i32 = 6270;
const FIX_0_899976223: i32 = 7373;
const FIX_1_175875602: i32 = 9633;
const FIX_1_501321110: i32 = 12299;
const FIX_1_847759065: i32 = 15137;
const FIX_1_961570560: i32 = 16069;
const FIX_2_053119869: i32 = 16819;
const FIX_2_562915447: i32 = 20995;
const FIX_3_072711026: i32 = 25172;

/// One 1-D IDCT of `jidctint.c` on eight inputs `x[0..8]` (in 64-bit arithmetic, as `JLONG`),
/// returning the eight outputs before their final descale, in output order.
#[inline(always)]
fn islow_1d(x: [i64; 8]) -> [i64; 8] {
    let c = |v: i32| i64::from(v);
    // Even part.
    let z1 = (x[2] + x[6]) * c(FIX_0_541196100);
    let tmp2 = z1 + x[6] * c(-FIX_1_847759065);
    let tmp3 = z1 + x[2] * c(FIX_0_765366865);
    let tmp0 = (x[0] + x[4]) << CONST_BITS;
    let tmp1 = (x[0] - x[4]) << CONST_BITS;
    let (tmp10, tmp13, tmp11, tmp12) = (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);
    // Odd part.
    let (t0, t1, t2, t3) = (x[7], x[5], x[3], x[1]);
    let z5 = (t0 + t2 + t1 + t3) * c(FIX_1_175875602);
    let z1 = (t0 + t3) * c(-FIX_0_899976223);
    let z2 = (t1 + t2) * c(-FIX_2_562915447);
    let z3 = (t0 + t2) * c(-FIX_1_961570560) + z5;
    let z4 = (t1 + t3) * c(-FIX_0_390180644) + z5;
    let t0 = t0 * c(FIX_0_298631336) + z1 + z3;
    let t1 = t1 * c(FIX_2_053119869) + z2 + z4;
    let t2 = t2 * c(FIX_3_072711026) + z2 + z3;
    let t3 = t3 * c(FIX_1_501321110) + z1 + z4;
    [tmp10 + t3, tmp11 + t2, tmp12 + t1, tmp13 + t0, tmp13 - t0, tmp12 - t1, tmp11 - t2, tmp10 - t3]
}

/// libjpeg's `DESCALE`: a rounding arithmetic right shift.
#[inline(always)]
fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// The post-IDCT range limit: libjpeg-turbo's `IDCT_range_limit` table indexed with
/// `& RANGE_MASK` (`jdmaster.c`, `prepare_range_limit_table`): values are taken modulo 1024 into
/// [-512, 512), shifted by 128 and clamped to [0, 255].
#[inline(always)]
fn range_limit(x: i64) -> u8 {
    let wrapped = ((x + 512) & 1023) - 512;
    (wrapped + 128).clamp(0, 255) as u8
}

/// The output value of a block whose only nonzero coefficient is the DC one (the shortcuts of
/// `jpeg_idct_islow` for a column, then rows, with zero AC terms).
#[inline(always)]
pub(super) fn dc_only_value(dc: i16, q0: i16) -> u8 {
    let dcval = (i32::from(dc) * i32::from(q0)).wrapping_shl(PASS1_BITS);
    range_limit(descale(i64::from(dcval), PASS1_BITS + 3))
}

/// Dequantizes `coefs` (natural order) with `quant` and writes the 8x8 inverse DCT to `out`, row
/// `r` at `out[r * stride..r * stride + 8]`.
///
/// On x86-64 CPUs with AVX2 (checked at run time, cached by std) this runs [`avx2::idct`], eight
/// columns or rows at a time; elsewhere [`idct_scalar`], the statement-by-statement port.
#[inline]
pub(super) fn idct_islow(coefs: &[i16; 64], quant: &[i16; 64], out: &mut [u8], stride: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the feature `avx2::idct` was compiled for was just detected.
        return unsafe { avx2::idct(coefs, quant, out, stride) };
    }
    idct_scalar(coefs, quant, out, stride);
}

/// `jpeg_idct_islow` column by column, then row by row, with its 64-bit intermediates and 32-bit
/// workspace (its zero-AC shortcuts give the same numbers, so they are left out).
pub(super) fn idct_scalar(coefs: &[i16; 64], quant: &[i16; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i32; 64];
    for c in 0..8 {
        let x = std::array::from_fn(|k| i64::from(coefs[k * 8 + c]) * i64::from(quant[k * 8 + c]));
        for (r, v) in islow_1d(x).into_iter().enumerate() {
            ws[r * 8 + c] = descale(v, CONST_BITS - PASS1_BITS) as i32;
        }
    }
    for r in 0..8 {
        let x = std::array::from_fn(|k| i64::from(ws[r * 8 + k]));
        let row = &mut out[r * stride..r * stride + 8];
        for (o, v) in row.iter_mut().zip(islow_1d(x)) {
            *o = range_limit(descale(v, CONST_BITS + PASS1_BITS + 3));
        }
    }
}

/// The AVX2 version of [`idct_scalar`]: the same formulas on eight 32-bit lanes (columns in the
/// first pass, rows in the second, with a transpose in between and after). The lanes wrap where
/// the scalar version's 64-bit intermediates would exceed 32 bits, which only coefficients that
/// no encoder of 8-bit samples writes can cause.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    #[target_feature(enable = "avx2")]
    #[inline]
    fn mulc(a: __m256i, c: i32) -> __m256i {
        _mm256_mullo_epi32(a, _mm256_set1_epi32(c))
    }

    /// [`islow_1d`](super::islow_1d) on eight lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn islow_1d(x: [__m256i; 8]) -> [__m256i; 8] {
        let add = |a, b| _mm256_add_epi32(a, b);
        let sub = |a, b| _mm256_sub_epi32(a, b);
        let z1 = mulc(add(x[2], x[6]), FIX_0_541196100);
        let tmp2 = add(z1, mulc(x[6], -FIX_1_847759065));
        let tmp3 = add(z1, mulc(x[2], FIX_0_765366865));
        let tmp0 = _mm256_slli_epi32::<13>(add(x[0], x[4]));
        let tmp1 = _mm256_slli_epi32::<13>(sub(x[0], x[4]));
        let (tmp10, tmp13, tmp11, tmp12) = (add(tmp0, tmp3), sub(tmp0, tmp3), add(tmp1, tmp2), sub(tmp1, tmp2));
        let (t0, t1, t2, t3) = (x[7], x[5], x[3], x[1]);
        let z5 = mulc(add(add(t0, t2), add(t1, t3)), FIX_1_175875602);
        let z1 = mulc(add(t0, t3), -FIX_0_899976223);
        let z2 = mulc(add(t1, t2), -FIX_2_562915447);
        let z3 = add(mulc(add(t0, t2), -FIX_1_961570560), z5);
        let z4 = add(mulc(add(t1, t3), -FIX_0_390180644), z5);
        let t0 = add(add(mulc(t0, FIX_0_298631336), z1), z3);
        let t1 = add(add(mulc(t1, FIX_2_053119869), z2), z4);
        let t2 = add(add(mulc(t2, FIX_3_072711026), z2), z3);
        let t3 = add(add(mulc(t3, FIX_1_501321110), z1), z4);
        [
            add(tmp10, t3),
            add(tmp11, t2),
            add(tmp12, t1),
            add(tmp13, t0),
            sub(tmp13, t0),
            sub(tmp12, t1),
            sub(tmp11, t2),
            sub(tmp10, t3),
        ]
    }

    /// Transposes an 8x8 matrix of 32-bit values held as eight rows.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn transpose(m: [__m256i; 8]) -> [__m256i; 8] {
        let a0 = _mm256_unpacklo_epi32(m[0], m[1]);
        let a1 = _mm256_unpackhi_epi32(m[0], m[1]);
        let a2 = _mm256_unpacklo_epi32(m[2], m[3]);
        let a3 = _mm256_unpackhi_epi32(m[2], m[3]);
        let a4 = _mm256_unpacklo_epi32(m[4], m[5]);
        let a5 = _mm256_unpackhi_epi32(m[4], m[5]);
        let a6 = _mm256_unpacklo_epi32(m[6], m[7]);
        let a7 = _mm256_unpackhi_epi32(m[6], m[7]);
        let b0 = _mm256_unpacklo_epi64(a0, a2);
        let b1 = _mm256_unpackhi_epi64(a0, a2);
        let b2 = _mm256_unpacklo_epi64(a1, a3);
        let b3 = _mm256_unpackhi_epi64(a1, a3);
        let b4 = _mm256_unpacklo_epi64(a4, a6);
        let b5 = _mm256_unpackhi_epi64(a4, a6);
        let b6 = _mm256_unpacklo_epi64(a5, a7);
        let b7 = _mm256_unpackhi_epi64(a5, a7);
        [
            _mm256_permute2x128_si256::<0x20>(b0, b4),
            _mm256_permute2x128_si256::<0x20>(b1, b5),
            _mm256_permute2x128_si256::<0x20>(b2, b6),
            _mm256_permute2x128_si256::<0x20>(b3, b7),
            _mm256_permute2x128_si256::<0x31>(b0, b4),
            _mm256_permute2x128_si256::<0x31>(b1, b5),
            _mm256_permute2x128_si256::<0x31>(b2, b6),
            _mm256_permute2x128_si256::<0x31>(b3, b7),
        ]
    }

    /// Eight 16-bit values widened to 32-bit lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn widen(v: &[i16]) -> __m256i {
        let v: &[i16; 8] = v.try_into().unwrap_or(&[0; 8]);
        // SAFETY: `v` is 16 readable bytes; the load has no alignment requirement.
        _mm256_cvtepi16_epi32(unsafe { _mm_loadu_si128(v.as_ptr().cast()) })
    }

    /// See [`idct_scalar`](super::idct_scalar).
    #[target_feature(enable = "avx2")]
    pub(in super::super) fn idct(coefs: &[i16; 64], quant: &[i16; 64], out: &mut [u8], stride: usize) {
        let x: [__m256i; 8] = std::array::from_fn(|k| {
            _mm256_mullo_epi32(widen(&coefs[k * 8..k * 8 + 8]), widen(&quant[k * 8..k * 8 + 8]))
        });
        let round1 = _mm256_set1_epi32(1 << (CONST_BITS - PASS1_BITS - 1));
        let ws = islow_1d(x).map(|v| _mm256_srai_epi32::<11>(_mm256_add_epi32(v, round1)));
        let z = transpose(islow_1d(transpose(ws)));
        // Descale, then the range limit: ((v + 512) & 1023) - 384, clamped to [0, 255] by the
        // saturating packs.
        let round2 = _mm256_set1_epi32(1 << (CONST_BITS + PASS1_BITS + 3 - 1));
        let (c512, mask, c384) = (_mm256_set1_epi32(512), _mm256_set1_epi32(1023), _mm256_set1_epi32(384));
        let lim = z.map(|v| {
            let v = _mm256_srai_epi32::<18>(_mm256_add_epi32(v, round2));
            _mm256_sub_epi32(_mm256_and_si256(_mm256_add_epi32(v, c512), mask), c384)
        });
        for half in 0..2 {
            let r = &lim[half * 4..half * 4 + 4];
            let w = _mm256_packus_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
            // Per 128-bit lane: rows 0-3, four bytes each; gather each row's eight bytes.
            let w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            let rows: [i64; 4] = [
                _mm256_extract_epi64::<0>(w),
                _mm256_extract_epi64::<1>(w),
                _mm256_extract_epi64::<2>(w),
                _mm256_extract_epi64::<3>(w),
            ];
            for (i, row) in rows.iter().enumerate() {
                let y = half * 4 + i;
                out[y * stride..y * stride + 8].copy_from_slice(&row.to_le_bytes());
            }
        }
    }
}

/// Fills the 8x8 block at `out` with one value.
#[inline]
pub(super) fn fill_block(value: u8, out: &mut [u8], stride: usize) {
    for r in 0..8 {
        out[r * stride..r * stride + 8].fill(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Quantized coefficients of an 8-bit sample block, as an encoder makes them: the forward DCT
    /// of JPEG (in f64) divided by `quant` and rounded.
    fn encode(samples: &[u8; 64], quant: &[i16; 64]) -> [i16; 64] {
        let c = |u: usize| if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
        std::array::from_fn(|i| {
            let (v, u) = (i / 8, i % 8);
            let mut sum = 0.0;
            for y in 0..8 {
                for x in 0..8 {
                    let f = f64::from(samples[y * 8 + x]) - 128.0;
                    sum += f
                        * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()
                        * ((2 * y + 1) as f64 * v as f64 * std::f64::consts::PI / 16.0).cos();
                }
            }
            (0.25 * c(u) * c(v) * sum / f64::from(quant[i])).round() as i16
        })
    }

    #[test]
    fn avx2_matches_scalar() {
        #[cfg(target_arch = "x86_64")]
        {
            if !std::is_x86_feature_detected!("avx2") {
                println!("no AVX2 on this CPU: nothing to compare");
                return;
            }
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let mut compared = 0;
            for case in 0..3000 {
                // Smooth, noisy, extreme (checkerboards, flat 0/255) blocks; fine to coarse tables.
                let samples: [u8; 64] = match case % 4 {
                    0 => std::array::from_fn(|_| rng.below(256) as u8),
                    1 => {
                        let (a, b) = (rng.below(256) as i64, rng.below(9) as i64 - 4);
                        std::array::from_fn(|i| (a + b * (i as i64 % 8 + i as i64 / 8)).clamp(0, 255) as u8)
                    }
                    2 => std::array::from_fn(|i| if (i / 8 + i % 8) % 2 == 0 { 255 } else { 0 }),
                    _ => [if rng.below(2) == 0 { 0 } else { 255 }; 64],
                };
                let q_max = [1, 4, 32, 256][case % 4 / 2 * 2 + (case / 4) % 2];
                let quant: [i16; 64] = std::array::from_fn(|_| 1 + rng.below(q_max) as i16);
                let mut coefs = encode(&samples, &quant);
                if case % 7 == 0 {
                    // Sparse blocks, as most are: keep the first few coefficients in zigzag order.
                    let keep = 1 + rng.below(10) as usize;
                    for &p in &super::super::entropy::NATURAL_ORDER[keep..64] {
                        coefs[p] = 0;
                    }
                }
                let stride = 11;
                let mut a = vec![0u8; 8 * stride];
                let mut b = vec![0u8; 8 * stride];
                idct_scalar(&coefs, &quant, &mut a, stride);
                // SAFETY: AVX2 was detected above.
                unsafe { avx2::idct(&coefs, &quant, &mut b, stride) };
                assert_eq!(a, b, "case {case}: coefficients {coefs:?}, quant {quant:?}");
                if coefs[1..].iter().all(|&c| c == 0) {
                    assert!(a.chunks(stride).all(|r| r[..8].iter().all(|&v| v == dc_only_value(coefs[0], quant[0]))));
                }
                compared += 1;
            }
            assert_eq!(compared, 3000);
        }
    }
}
