//! Mixed precision from the config's `fp16` section (mmdetection's key for it):
//!
//! ```yaml
//! fp16:
//!   dtype: bf16          # bf16 (default) or f16: what convolutions and matmuls compute in
//!   loss_scale: dynamic  # f16 training only: dynamic (default) or a fixed number, as mmcv's
//! ```
//!
//! On a CUDA device the model's dense convolutions and matrix multiplies run in `dtype`
//! ([`nextdet_ops::autocast`]) while the parameters, their gradients and the optimizer state
//! stay `f32` (master weights). f16 training scales the loss so that small gradients survive
//! the f16 backward ([`nextdet_engine::loss_scale`]); bf16 has f32's range and needs no scaling.
//! On the CPU the fast kernels compute in `f32` and the section is ignored, with a warning.

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use nextdet_engine::config::Config;
use nextdet_engine::loss_scale::LossScale;
use serde::Deserialize;

/// The `fp16` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fp16Config {
    /// `bf16` or `f16`.
    #[serde(default = "bf16")]
    pub dtype: String,
    /// f16 training's loss scale: `dynamic`, or a fixed positive number.
    #[serde(default)]
    pub loss_scale: Option<LossScaleValue>,
}

/// A `loss_scale` value as written: a number or a name.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum LossScaleValue {
    /// A fixed scale.
    Number(f64),
    /// `dynamic`.
    Name(String),
}

fn bf16() -> String {
    "bf16".into()
}

/// The checked `fp16` section: the half dtype and, for f16, the loss scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixedPrecision {
    /// What convolutions and matrix multiplies compute in.
    pub dtype: DType,
    /// How f16 training scales the loss (`None` for bf16).
    pub loss_scale: Option<LossScale>,
}

/// The config's `fp16` section, checked (`None` without one: full precision). Errors name the
/// key and where it was set.
pub fn mixed_precision(cfg: &Config) -> Result<Option<MixedPrecision>> {
    let Some(section) = crate::config::optional_section::<Fp16Config>(cfg, "fp16")? else {
        return Ok(None);
    };
    let origin = || crate::config::origin_of(cfg, "fp16");
    let dtype = match section.dtype.as_str() {
        "bf16" => DType::BF16,
        "f16" | "fp16" => DType::F16,
        other => bail!("{}: fp16.dtype: `{other}` is not bf16 or f16", origin()),
    };
    let loss_scale = match (&section.loss_scale, dtype) {
        (_, DType::BF16) => None,
        (None, _) => Some(LossScale::dynamic()),
        (Some(LossScaleValue::Name(s)), _) if s == "dynamic" => Some(LossScale::dynamic()),
        (Some(LossScaleValue::Number(s)), _) if s.is_finite() && *s > 0.0 => Some(LossScale::fixed(*s)),
        (Some(v), _) => bail!("{}: fp16.loss_scale: expected `dynamic` or a positive number, got {v:?}", origin()),
    };
    Ok(Some(MixedPrecision { dtype, loss_scale }))
}

/// The autocast dtype for a model on `device`: the section's dtype on a GPU, `None` on the CPU
/// (where the section is ignored, with a warning) or without a section.
pub fn autocast_for(cfg: &Config, device: &Device) -> Result<Option<DType>> {
    let Some(p) = mixed_precision(cfg)? else { return Ok(None) };
    if device.is_cpu() {
        tracing::warn!("fp16: the CPU kernels compute in f32; mixed precision applies on a GPU (`--device cuda`)");
        return Ok(None);
    }
    Ok(Some(p.dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::from_yaml_str(text, "test.yaml").expect("test config parses")
    }

    #[test]
    fn sections_parse_to_dtype_and_loss_scale() {
        assert_eq!(mixed_precision(&cfg("a: 1\n")).unwrap(), None);
        let bf16 = mixed_precision(&cfg("fp16: {}\n")).unwrap().unwrap();
        assert_eq!((bf16.dtype, bf16.loss_scale), (DType::BF16, None), "bf16 is the default and needs no scaling");
        let f16 = mixed_precision(&cfg("fp16: {dtype: f16}\n")).unwrap().unwrap();
        assert_eq!((f16.dtype, f16.loss_scale), (DType::F16, Some(LossScale::dynamic())));
        let fixed = mixed_precision(&cfg("fp16: {dtype: f16, loss_scale: 512.0}\n")).unwrap().unwrap();
        assert_eq!(fixed.loss_scale, Some(LossScale::fixed(512.0)));
        for bad in ["fp16: {dtype: f32}\n", "fp16: {dtype: f16, loss_scale: -1.0}\n", "fp16: {dtyp: f16}\n"] {
            assert!(mixed_precision(&cfg(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_models_get_no_autocast() {
        let c = cfg("fp16: {dtype: bf16}\n");
        assert_eq!(autocast_for(&c, &Device::Cpu).unwrap(), None);
        assert_eq!(autocast_for(&cfg("a: 1\n"), &Device::Cpu).unwrap(), None);
    }
}
