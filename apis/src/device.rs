//! The device a run computes on: the config's top-level `device` key, `cpu` (the default),
//! `cuda` (GPU 0) or `cuda:N`, which the command line's `--device` sets.
//!
//! The parameters are created on this device and each batch is moved to it as it enters the
//! model; the data pipeline, the assignment of targets and NMS work on the host. A CUDA device
//! needs a build with the `cuda` feature (`cargo build --release --features cuda`); without it,
//! asking for one is an error that says so.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use nextdet_engine::config::Config;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

/// A parsed `device` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU, with the fast CPU kernels.
    #[default]
    Cpu,
    /// CUDA GPU number `.0` (`cuda` is GPU 0).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => bail!("unknown device `{other}` (expected cpu, cuda or cuda:N)"),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The candle device, opened once per process: every call for the same GPU returns the same
    /// device (candle tells devices apart by the instance, so tensors made on two openings of
    /// one GPU could not meet in an op).
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => open_cuda(n),
        }
    }
}

/// Whether this build can run on CUDA (the `cuda` feature).
pub fn cuda_built() -> bool {
    cfg!(feature = "cuda")
}

/// The devices opened so far, by GPU number.
fn opened() -> &'static Mutex<HashMap<usize, Device>> {
    static OPENED: OnceLock<Mutex<HashMap<usize, Device>>> = OnceLock::new();
    OPENED.get_or_init(|| Mutex::new(HashMap::new()))
}

fn open_cuda(n: usize) -> Result<Device> {
    if !cuda_built() {
        bail!(
            "device cuda:{n}: this nextdet was built without CUDA support; build it with \
             `cargo build --release --features cuda` (tools/cuda-toolchain.sh sets up the compiler)"
        );
    }
    let mut opened = opened().lock().expect("device table lock");
    if let Some(d) = opened.get(&n) {
        return Ok(d.clone());
    }
    let device = Device::new_cuda(n).with_context(|| format!("cannot open CUDA device {n}"))?;
    opened.insert(n, device.clone());
    Ok(device)
}

/// The config's `device` (default `cpu`), checked; errors name where the key was set.
pub fn device_spec(cfg: &Config) -> Result<DeviceSpec> {
    match cfg.section::<Option<String>>("device")? {
        None => Ok(DeviceSpec::Cpu),
        Some(s) => s.parse().with_context(|| format!("{}: `device`", crate::config::origin_of(cfg, "device"))),
    }
}

/// The device of the config's `device` key, opened (see [`DeviceSpec::open`]).
pub fn config_device(cfg: &Config) -> Result<Device> {
    device_spec(cfg)?.open()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "metal", ""] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn cpu_opens_and_cuda_without_the_feature_says_how_to_build() {
        assert!(DeviceSpec::Cpu.open().unwrap().is_cpu());
        if !cuda_built() {
            let e = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
            assert!(e.contains("without CUDA support") && e.contains("--features cuda"), "{e}");
        }
    }
}
