//! The packed multiplies against a float64 reference: f32 within rounding of the sums, bf16
//! exact on bf16-rounded inputs up to f32 accumulation, and the two bf16 kernels (AMX and
//! AVX-512 BF16) against each other.

use super::*;

/// Shapes with every remainder: rows and columns not multiples of the tiles, `k` across blocks.
const SHAPES: [(usize, usize, usize); 6] =
    [(1, 1, 1), (1, 5, 3), (13, 33, 257), (45, 70, 300), (100, 96, 768), (33, 40, 31)];

/// Serializes the tests that switch the AMX kernel off (a process-wide switch).
static AMX_SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `x · wᵀ` in f64 for `x [m, k]`, `w [n, k]`, and the sums of `|x| · |w|` (the error scale).
fn reference(x: &[f32], w: &[f32], (m, n, k): (usize, usize, usize)) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; m * n];
    let mut scale = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let (a, b) = (f64::from(x[i * k + p]), f64::from(w[j * k + p]));
                y[i * n + j] += a * b;
                scale[i * n + j] += (a * b).abs();
            }
        }
    }
    (y, scale)
}

fn packed_product(x: &[f32], w: &PackedWeight, m: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; m * w.n];
    // SAFETY: x holds m * k floats, y room for m * n.
    unsafe { matmul_packed(m, y.as_mut_ptr(), x.as_ptr(), w, true) };
    y
}

/// Largest `|got - want| / scale` over the result.
fn worst(got: &[f32], want: &[f64], scale: &[f64]) -> f64 {
    got.iter().zip(want).zip(scale).map(|((g, w), s)| (f64::from(*g) - w).abs() / s.max(1e-30)).fold(0.0, f64::max)
}

fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f32::from_bits(u32::from(bf16_round(x)) << 16)).collect()
}

#[cfg(target_arch = "x86_64")]
fn bf16_round(x: f32) -> u16 {
    avx512::bf16_bits(x)
}

#[cfg(not(target_arch = "x86_64"))]
fn bf16_round(x: f32) -> u16 {
    (x.to_bits() >> 16) as u16
}

#[test]
fn packed_f32_matches_the_reference() {
    for (seed, &(m, n, k)) in SHAPES.iter().enumerate() {
        let (x, w) = (values(m * k, 2 * seed as u64), values(n * k, 2 * seed as u64 + 1));
        let Some(packed) = PackedWeight::new(&w, n, k, Precision::F32) else {
            assert!(!cfg!(target_arch = "x86_64") || !std::is_x86_feature_detected!("avx512f"));
            return;
        };
        assert_eq!((packed.dims(), packed.precision()), ((k, n), Precision::F32));
        let (want, scale) = reference(&x, &w, (m, n, k));
        let err = worst(&packed_product(&x, &packed, m), &want, &scale);
        assert!(err < 1e-6, "{m}x{n}x{k}: relative error {err}");
    }
}

#[test]
fn packed_bf16_is_the_product_of_bf16_rounded_inputs() {
    let _switch = AMX_SWITCH.lock().unwrap();
    for (seed, &(m, n, k)) in SHAPES.iter().enumerate() {
        let (x, w) = (values(m * k, 7 * seed as u64), values(n * k, 7 * seed as u64 + 3));
        let Some(packed) = PackedWeight::new(&w, n, k, Precision::Bf16) else {
            assert!(!bf16_supported());
            return;
        };
        assert_eq!(packed.precision(), Precision::Bf16);
        let (want, scale) = reference(&round_bf16(&x), &round_bf16(&w), (m, n, k));
        let err = worst(&packed_product(&x, &packed, m), &want, &scale);
        assert!(err < 1e-6, "{m}x{n}x{k}: relative error {err} against bf16-rounded inputs");
        // and against the f32 inputs: each product off by at most two bf16 roundings (2^-8 each)
        let (exact, _) = reference(&x, &w, (m, n, k));
        let drift = worst(&packed_product(&x, &packed, m), &exact, &scale);
        assert!(drift < 2.0 * 2f64.powi(-8), "{m}x{n}x{k}: bf16 drift {drift}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn amx_and_avx512_bf16_kernels_agree() {
    if !amx::available() {
        return;
    }
    let _switch = AMX_SWITCH.lock().unwrap();
    for (seed, &(m, n, k)) in SHAPES.iter().enumerate() {
        let (x, w) = (values(m * k, 11 * seed as u64), values(n * k, 11 * seed as u64 + 5));
        let packed = PackedWeight::new(&w, n, k, Precision::Bf16).expect("AMX implies AVX-512 BF16");
        let with_amx = packed_product(&x, &packed, m);
        amx::disable_for_tests(true);
        let without = packed_product(&x, &packed, m);
        amx::disable_for_tests(false);
        let (_, scale) = reference(&x, &w, (m, n, k));
        let want: Vec<f64> = without.iter().map(|&v| f64::from(v)).collect();
        let err = worst(&with_amx, &want, &scale);
        assert!(err < 1e-6, "{m}x{n}x{k}: AMX against AVX-512 BF16, relative error {err}");
    }
}

#[test]
fn every_tile_height_matches_the_reference() {
    // the kernels run a tile of exactly the rows left (1 to 12) at the bottom of each block, and
    // cut more than 144 rows into blocks of equal size; k = 300 spans two blocks of k, so every
    // height also adds to the partial sums already stored
    let _switch = AMX_SWITCH.lock().unwrap();
    for (m, k) in (1..=25).chain([145, 196, 301, 1729]).flat_map(|m| [(m, 21), (m, 300)]) {
        let n = 40;
        let (x, w) = (values(m * k, 100 + m as u64), values(n * k, 200 + m as u64));
        let Some(packed) = PackedWeight::new(&w, n, k, Precision::F32) else { return };
        let (want, scale) = reference(&x, &w, (m, n, k));
        let err = worst(&packed_product(&x, &packed, m), &want, &scale);
        assert!(err < 1e-6, "f32 {m}x{n}x{k}: relative error {err}");
        if let Some(packed) = PackedWeight::new(&w, n, k, Precision::Bf16) {
            let (want, scale) = reference(&round_bf16(&x), &round_bf16(&w), (m, n, k));
            let err = worst(&packed_product(&x, &packed, m), &want, &scale);
            assert!(err < 1e-6, "bf16 {m}x{n}x{k}: relative error {err}");
        }
    }
}
