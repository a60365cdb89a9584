//! Bias add fused with the exact (erf) GELU, PyTorch's `nn.GELU()` default, forward and backward.
//!
//! In a ConvNeXt block this runs on the widest tensor (4x the channels), so it is one pass over
//! memory with a branch-free erf that the compiler vectorizes.

use crate::cpu::{as_f32, fmadd, multiversion, rows_per_task, sum_partials};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `gelu(x + bias)` with `bias: [D]` broadcast over the rows of `x: [..., D]`.
/// Differentiable in both arguments.
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    if bias.dims() != [d] {
        bail!("bias_gelu: bias {:?} does not fit last dim {d}", bias.dims());
    }
    if !crate::generic::fast_cpu(x) {
        return crate::generic::bias_gelu(x, bias);
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, BiasGelu)
}

/// `e^x` for `x <= 0` to ~2 ulp: `2^k * e^r` with `|r| <= ln2 / 2` and a degree-6 polynomial.
/// Rounding and the power of two use float and integer bit tricks only, so it vectorizes.
#[inline(always)]
pub(crate) fn exp_neg<const FMA: bool>(x: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let shifted = x * std::f32::consts::LOG2_E + SHIFTER;
    let k = shifted - SHIFTER;
    let k_int = shifted.to_bits().wrapping_sub(SHIFTER.to_bits()) as i32;
    let r = fmadd::<FMA>(-k, 1.428_606_8e-6, fmadd::<FMA>(-k, 0.693_145_75, x));
    let p = horner::<FMA>(r, &[1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0]);
    p * f32::from_bits((k_int.wrapping_add(127) as u32) << 23)
}

/// `c[0] + x * (c[1] + x * (c[2] + ...))`: one multiply-add per coefficient after the last.
#[inline(always)]
fn horner<const FMA: bool>(x: f32, c: &[f32]) -> f32 {
    let (&last, rest) = c.split_last().expect("at least one coefficient");
    rest.iter().rev().fold(last, |acc, &ci| fmadd::<FMA>(acc, x, ci))
}

/// `1/sqrt(2)` and `1/sqrt(2*pi)`.
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// Standard normal CDF `Phi(z)` and density `phi(z)`, via the erfc approximation 7.1.26 of
/// Abramowitz and Stegun (absolute error below 1.5e-7), computed without cancellation in the
/// lower tail.
#[inline(always)]
pub(crate) fn normal_cdf_pdf<const FMA: bool>(z: f32) -> (f32, f32) {
    let a = z.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / fmadd::<FMA>(0.327_591_1, a, 1.0);
    let poly = t * horner::<FMA>(t, &[0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4]);
    let gauss = exp_neg::<FMA>(-0.5 * z * z);
    let upper_tail = 0.5 * poly * gauss;
    let cdf = if z >= 0.0 { 1.0 - upper_tail } else { upper_tail };
    (cdf, gauss * FRAC_1_SQRT_2PI)
}

multiversion! {
    /// `y = gelu(x + b)` over rows of `b.len()` values.
    pub(crate) fn gelu_rows(y: &mut [f32], x: &[f32], b: &[f32]) {
        for (yr, xr) in y.chunks_exact_mut(b.len()).zip(x.chunks_exact(b.len())) {
            for ((y, &v), &bv) in yr.iter_mut().zip(xr).zip(b) {
                let z = v + bv;
                *y = z * normal_cdf_pdf::<FMA>(z).0;
            }
        }
    }
}

multiversion! {
    /// `y = gelu(y + b)` in place over rows of `b.len()` values (the same values as [`gelu_rows`]).
    pub(crate) fn gelu_rows_in_place(y: &mut [f32], b: &[f32]) {
        for yr in y.chunks_exact_mut(b.len()) {
            for (y, &bv) in yr.iter_mut().zip(b) {
                let z = *y + bv;
                *y = z * normal_cdf_pdf::<FMA>(z).0;
            }
        }
    }
}

multiversion! {
    /// `dx = gy * gelu'(x + b)` over rows, adding each row's `dx` into `db`.
    fn gelu_grad_rows(dx: &mut [f32], x: &[f32], gy: &[f32], b: &[f32], db: &mut [f32]) {
        let d = b.len();
        for ((dr, xr), gr) in dx.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(gy.chunks_exact(d)) {
            for i in 0..d {
                let z = xr[i] + b[i];
                let (cdf, pdf) = normal_cdf_pdf::<FMA>(z);
                dr[i] = gr[i] * fmadd::<FMA>(z, pdf, cdf);
                db[i] += dr[i];
            }
        }
    }
}

/// Forward op: `(x, bias) -> gelu(x + bias)`.
struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s1, l1)?;
        let b = as_f32(self.name(), s2, l2)?;
        let d = b.len();
        let mut out = vec![0f32; x.len()];
        let rows = rows_per_task(d, 1 << 15);
        out.par_chunks_mut(d * rows).zip(x.par_chunks(d * rows)).for_each(|(yo, xi)| gelu_rows(yo, xi, b));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, bias: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(bias, &grad.contiguous()?, &BiasGeluGrad)?;
        let (n, d) = (x.elem_count(), bias.elem_count());
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let db = packed.narrow(0, n, d)?;
        Ok((Some(dx), Some(db)))
    }
}

/// Backward op: `(x, bias, grad_y) -> [dx, dbias]` packed flat, with
/// `gelu'(z) = Phi(z) + z * phi(z)`.
struct BiasGeluGrad;

impl candle_core::CustomOp3 for BiasGeluGrad {
    fn name(&self) -> &'static str {
        "bias-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(self.name(), s1, l1)?;
        let b = as_f32(self.name(), s2, l2)?;
        let gy = as_f32(self.name(), s3, l3)?;
        let d = b.len();
        let mut packed = vec![0f32; x.len() + d];
        let (dx, db) = packed.split_at_mut(x.len());
        let rows = rows_per_task(d, 1 << 15);
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(d * rows)
            .zip(x.par_chunks(d * rows))
            .zip(gy.par_chunks(d * rows))
            .map(|((dxo, xi), gi)| {
                let mut acc = vec![0f32; d];
                gelu_grad_rows(dxo, xi, gi, b, &mut acc);
                acc
            })
            .collect();
        db.copy_from_slice(&sum_partials(partials, d));
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}
