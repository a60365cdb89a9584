//! Optimizers with parameter groups: AdamW and SGD with PyTorch's exact update rules.
//!
//! candle's own `AdamW` has one learning rate for every parameter and cannot save its state, but
//! the ConvNeXt recipes need per-group learning-rate scales (layer-wise decay) and per-group
//! weight decay (none on norms and biases), and a resumed run needs the moment estimates back.
//! An [`Optimizer`] holds [`ParamGroup`]s, applies `torch.optim.AdamW` (non-amsgrad) or
//! `torch.optim.SGD` to each parameter that has a gradient, and saves its per-parameter state as
//! named tensors (`<param name>.exp_avg`, `.exp_avg_sq`, `.momentum_buffer`, `.step`), which a
//! checkpoint stores under the `optimizer.` prefix.

use crate::layer_decay::{build_param_groups, ParamwiseConfig};
use candle_core::backprop::GradStore;
use candle_core::{bail, DType, Result, Tensor, Var};
use nextdet_ops::params::ParamStore;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// A set of parameters sharing one learning-rate scale and one weight decay.
#[derive(Clone)]
pub struct ParamGroup {
    /// The group's name (`layer_3_decay`, `all`, ...), for logs.
    pub name: String,
    /// `(name, var)` of each parameter of the group.
    pub params: Vec<(String, Var)>,
    /// The group's learning rate is the scheduled learning rate times this scale.
    pub lr_scale: f64,
    /// Weight decay of the group (decoupled for AdamW, added to the gradient for SGD).
    pub weight_decay: f64,
}

impl std::fmt::Debug for ParamGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ParamGroup")
            .field("name", &self.name)
            .field("params", &names)
            .field("lr_scale", &self.lr_scale)
            .field("weight_decay", &self.weight_decay)
            .finish()
    }
}

/// The update rule and its hyper-parameters (the learning rate comes with each step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    /// `torch.optim.AdamW` (amsgrad off): decoupled weight decay, then Adam with bias correction.
    AdamW {
        /// Decay rates of the first and second moment estimates.
        betas: (f64, f64),
        /// Added to the bias-corrected root of the second moment.
        eps: f64,
    },
    /// `torch.optim.SGD` (dampening 0): weight decay added to the gradient, then momentum.
    Sgd {
        /// Momentum factor (0 disables the buffer).
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
}

/// The `type` of an [`OptimizerConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerType {
    /// AdamW.
    AdamW,
    /// SGD with optional momentum.
    #[serde(rename = "SGD")]
    Sgd,
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}

fn default_eps() -> f64 {
    1e-8
}

/// The `optimizer` section of a config, shaped like mmdetection's:
/// `{type: AdamW, lr: 1e-4, weight_decay: 0.05, betas: [0.9, 0.999], paramwise: {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `AdamW` or `SGD`.
    #[serde(rename = "type")]
    pub kind: OptimizerType,
    /// Base learning rate (the schedule's reference value), greater than 0.
    #[serde(deserialize_with = "checks::lr")]
    pub lr: f64,
    /// Weight decay for the groups that decay, 0 or more.
    #[serde(default, deserialize_with = "checks::weight_decay")]
    pub weight_decay: f64,
    /// AdamW moment decay rates, each in `[0, 1)`.
    #[serde(default = "default_betas", deserialize_with = "checks::betas")]
    pub betas: [f64; 2],
    /// AdamW epsilon, greater than 0.
    #[serde(default = "default_eps", deserialize_with = "checks::eps")]
    pub eps: f64,
    /// SGD momentum, 0 or more.
    #[serde(default, deserialize_with = "checks::momentum")]
    pub momentum: f64,
    /// SGD Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
    /// How parameters are split into groups; absent: one group, weight decay on everything
    /// (mmcv's `DefaultOptimizerConstructor` without `paramwise_cfg`).
    #[serde(default)]
    pub paramwise: Option<ParamwiseConfig>,
}

impl OptimizerConfig {
    /// The update rule this config selects.
    pub fn algorithm(&self) -> Algorithm {
        match self.kind {
            OptimizerType::AdamW => Algorithm::AdamW { betas: (self.betas[0], self.betas[1]), eps: self.eps },
            OptimizerType::Sgd => Algorithm::Sgd { momentum: self.momentum, nesterov: self.nesterov },
        }
    }
}

/// Range checks of optimizer and schedule values, run while a config section deserializes so
/// that every command rejects an out-of-range value at load time, naming the key. The ranges
/// are `torch.optim`'s (`AdamW`/`SGD` raise `ValueError` for a negative `lr`, `eps`,
/// `weight_decay` or `momentum` and for betas outside `[0, 1)`), except that a learning rate of
/// 0 is refused too (nothing would train). Each message starts with the field's name in
/// backquotes, which the config loader uses to point at the key.
pub(crate) mod checks {
    use serde::{Deserialize, Deserializer};

    /// Reads a number and keeps it when `ok`, else errors with "`field` `rule`, got value".
    pub(crate) fn number<'de, D: Deserializer<'de>>(
        d: D,
        field: &str,
        ok: fn(f64) -> bool,
        rule: &str,
    ) -> Result<f64, D::Error> {
        let v = f64::deserialize(d)?;
        if ok(v) {
            Ok(v)
        } else {
            Err(serde::de::Error::custom(format!("`{field}` {rule}, got {v}")))
        }
    }

    /// Greater than 0 (and finite).
    pub(crate) fn positive(v: f64) -> bool {
        v > 0.0 && v.is_finite()
    }

    /// 0 or more (and finite).
    pub(crate) fn non_negative(v: f64) -> bool {
        v >= 0.0 && v.is_finite()
    }

    pub(crate) fn lr<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        number(d, "lr", positive, "must be greater than 0")
    }

    pub(crate) fn weight_decay<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        number(d, "weight_decay", non_negative, "must be 0 or more")
    }

    pub(crate) fn eps<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        number(d, "eps", positive, "must be greater than 0")
    }

    pub(crate) fn momentum<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        number(d, "momentum", non_negative, "must be 0 or more")
    }

    pub(crate) fn betas<'de, D: Deserializer<'de>>(d: D) -> Result<[f64; 2], D::Error> {
        let v = <[f64; 2]>::deserialize(d)?;
        if v.iter().all(|b| (0.0..1.0).contains(b)) {
            Ok(v)
        } else {
            Err(serde::de::Error::custom(format!("`betas` must be two numbers in [0, 1), got {v:?}")))
        }
    }
}

/// A state buffer: a host vector updated in place by the fused CPU kernels, or a device tensor.
enum Buf {
    Host(Vec<f32>),
    Dev(Tensor),
}

impl Buf {
    /// A copy as a tensor of `var`'s shape and device.
    fn to_tensor(&self, var: &Var) -> Result<Tensor> {
        match self {
            Buf::Host(v) => Tensor::from_slice(v, var.dims(), var.device()),
            Buf::Dev(t) => t.copy(),
        }
    }

    /// The buffer for `var` holding `t` (host for CPU f32 parameters).
    fn from_tensor(t: &Tensor, var: &Var) -> Result<Self> {
        if fused(var) {
            Ok(Buf::Host(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?))
        } else {
            Ok(Buf::Dev(t.to_dtype(var.dtype())?.to_device(var.device())?))
        }
    }

    fn dev(&self) -> Option<&Tensor> {
        match self {
            Buf::Dev(t) => Some(t),
            Buf::Host(_) => None,
        }
    }
}

/// True for parameters the fused CPU kernels update in place.
fn fused(var: &Var) -> bool {
    var.device().is_cpu() && var.dtype() == DType::F32
}

/// Per-parameter state, as torch keeps it.
#[derive(Default)]
struct ParamState {
    step: u64,
    exp_avg: Option<Buf>,
    exp_avg_sq: Option<Buf>,
    momentum_buffer: Option<Buf>,
}

/// An optimizer over parameter groups (see the module docs).
pub struct Optimizer {
    algorithm: Algorithm,
    groups: Vec<ParamGroup>,
    state: HashMap<String, ParamState>,
}

impl Optimizer {
    /// An optimizer over `groups`. Errors if a parameter name appears twice.
    pub fn new(algorithm: Algorithm, groups: Vec<ParamGroup>) -> Result<Self> {
        let mut seen = HashSet::new();
        for g in &groups {
            for (name, _) in &g.params {
                if !seen.insert(name.clone()) {
                    bail!("optimizer: parameter `{name}` is in more than one group");
                }
            }
        }
        Ok(Self { algorithm, groups, state: HashMap::new() })
    }

    /// Builds the groups of `params` as `cfg.paramwise` says and the optimizer over them.
    pub fn from_config(cfg: &OptimizerConfig, params: &ParamStore) -> Result<Self> {
        let groups = build_param_groups(params, cfg.weight_decay, cfg.paramwise.as_ref())?;
        Self::new(cfg.algorithm(), groups)
    }

    /// The update rule.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The parameter groups, in order.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// One update of every parameter that has a gradient in `grads`; group `g` uses the
    /// learning rate `lr * g.lr_scale`. Parameters without a gradient are left untouched and
    /// their step count does not advance, as in torch.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        nextdet_ops::weights_changed();
        for group in &self.groups {
            let lr = lr * group.lr_scale;
            let wd = group.weight_decay;
            for (name, var) in &group.params {
                let Some(grad) = grads.get(var.as_tensor()) else { continue };
                let state = self.state.entry(name.clone()).or_default();
                state.step += 1;
                match (self.algorithm, fused(var)) {
                    (Algorithm::AdamW { betas, eps }, true) => cpu::adamw(var, grad, state, lr, wd, betas, eps)?,
                    (Algorithm::Sgd { momentum, nesterov }, true) => {
                        cpu::sgd(var, grad, state, lr, wd, momentum, nesterov)?
                    }
                    (Algorithm::AdamW { betas, eps }, false) => {
                        let grad = grad.to_dtype(var.dtype())?;
                        var.set(&adamw_update(var.as_tensor(), &grad, state, lr, wd, betas, eps)?)?
                    }
                    (Algorithm::Sgd { momentum, nesterov }, false) => {
                        let grad = grad.to_dtype(var.dtype())?;
                        var.set(&sgd_update(var.as_tensor(), &grad, state, lr, wd, momentum, nesterov)?)?
                    }
                }
            }
        }
        Ok(())
    }

    /// The state as named tensors, `<param name>.exp_avg` etc. plus `<param name>.step`
    /// (an F64 tensor of shape `[1]`); copies, independent of later steps.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for group in &self.groups {
            for (name, var) in &group.params {
                let Some(s) = self.state.get(name) else { continue };
                let device = var.device();
                out.push((format!("{name}.step"), Tensor::new(&[s.step as f64], device)?));
                for (key, t) in
                    [("exp_avg", &s.exp_avg), ("exp_avg_sq", &s.exp_avg_sq), ("momentum_buffer", &s.momentum_buffer)]
                {
                    if let Some(t) = t {
                        out.push((format!("{name}.{key}"), t.to_tensor(var)?));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Restores the state saved by [`Optimizer::state_tensors`] (keys without the `optimizer.`
    /// prefix). Parameters with no saved state start fresh. Errors name the key for state of an
    /// unknown parameter, an unknown key and a shape that does not match the parameter.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let vars: HashMap<&str, &Var> =
            self.groups.iter().flat_map(|g| g.params.iter().map(|(n, v)| (n.as_str(), v))).collect();
        let mut state: HashMap<String, ParamState> = HashMap::new();
        for (key, t) in tensors {
            let Some((name, field)) = key.rsplit_once('.') else {
                bail!("optimizer state `{key}`: not of the form <param>.<field>");
            };
            let Some(var) = vars.get(name) else {
                bail!("optimizer state `{key}`: no parameter `{name}` in the optimizer");
            };
            let s = state.entry(name.to_string()).or_default();
            if field == "step" {
                let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                match v.as_slice() {
                    [x] if *x >= 0.0 && x.fract() == 0.0 => s.step = *x as u64,
                    _ => bail!("optimizer state `{key}`: expected one non-negative integer, got {v:?}"),
                }
                continue;
            }
            if t.dims() != var.dims() {
                bail!("optimizer state `{key}`: shape {:?} does not match the parameter's {:?}", t.dims(), var.dims());
            }
            let kind = match self.algorithm {
                Algorithm::AdamW { .. } => "AdamW",
                Algorithm::Sgd { .. } => "SGD",
            };
            let saved_by = match field {
                "exp_avg" | "exp_avg_sq" => "AdamW",
                "momentum_buffer" => "SGD",
                _ => kind,
            };
            if saved_by != kind {
                bail!(
                    "optimizer state `{key}` was saved by {saved_by}, but the config's optimizer is {kind}; resume with \
                     the optimizer the run was trained with, or start from the weights only with --load-from"
                );
            }
            let t = Buf::from_tensor(t, var)?;
            match field {
                "exp_avg" => s.exp_avg = Some(t),
                "exp_avg_sq" => s.exp_avg_sq = Some(t),
                "momentum_buffer" => s.momentum_buffer = Some(t),
                _ => bail!("optimizer state `{key}`: unknown field `{field}`"),
            }
        }
        self.state = state;
        Ok(())
    }
}

/// `torch.optim.AdamW`'s single-tensor update with tensor ops (non-CPU devices); returns the
/// new parameter value.
fn adamw_update(
    p: &Tensor,
    g: &Tensor,
    s: &mut ParamState,
    lr: f64,
    wd: f64,
    (beta1, beta2): (f64, f64),
    eps: f64,
) -> Result<Tensor> {
    let p = p.affine(1.0 - lr * wd, 0.0)?;
    let m = match s.exp_avg.as_ref().and_then(Buf::dev) {
        // torch's lerp with weight 1 - beta1 < 0.5: m + w * (g - m)
        Some(m) => (m + (g - m)?.affine(1.0 - beta1, 0.0)?)?,
        None => g.affine(1.0 - beta1, 0.0)?,
    };
    let g2 = g.sqr()?.affine(1.0 - beta2, 0.0)?;
    let v = match s.exp_avg_sq.as_ref().and_then(Buf::dev) {
        Some(v) => (v.affine(beta2, 0.0)? + g2)?,
        None => g2,
    };
    let step = s.step as f64;
    let bias1 = 1.0 - beta1.powf(step);
    let bias2_sqrt = (1.0 - beta2.powf(step)).sqrt();
    let step_size = lr / bias1;
    let denom = (v.sqrt()? / bias2_sqrt)?.affine(1.0, eps)?;
    let p = (p - (m.affine(step_size, 0.0)? / denom)?)?;
    s.exp_avg = Some(Buf::Dev(m));
    s.exp_avg_sq = Some(Buf::Dev(v));
    Ok(p)
}

/// `torch.optim.SGD`'s single-tensor update (dampening 0) with tensor ops (non-CPU devices);
/// returns the new parameter value.
fn sgd_update(
    p: &Tensor,
    g: &Tensor,
    s: &mut ParamState,
    lr: f64,
    wd: f64,
    momentum: f64,
    nesterov: bool,
) -> Result<Tensor> {
    let g = if wd != 0.0 { (g + p.affine(wd, 0.0)?)? } else { g.clone() };
    let d = if momentum != 0.0 {
        let buf = match s.momentum_buffer.as_ref().and_then(Buf::dev) {
            Some(b) => (b.affine(momentum, 0.0)? + &g)?,
            None => g.copy()?,
        };
        let d = if nesterov { (&g + buf.affine(momentum, 0.0)?)? } else { buf.clone() };
        s.momentum_buffer = Some(Buf::Dev(buf));
        d
    } else {
        g
    };
    p - d.affine(lr, 0.0)?
}

/// Fused multi-threaded CPU updates, in place on the parameter's storage, with torch's f32
/// operation order (`_single_tensor_adamw` / `_single_tensor_sgd`).
mod cpu {
    use super::{Buf, ParamState};
    use candle_core::{bail, CpuStorage, DType, InplaceOp2, Layout, Result, Tensor, Var};
    use rayon::prelude::*;
    use std::sync::Mutex;

    /// Elements per parallel chunk.
    const CHUNK: usize = 1 << 14;

    /// The contiguous f32 elements of a CPU storage.
    fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
        let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) else {
            bail!("{what}: expected a contiguous f32 tensor")
        };
        Ok(&v[a..b])
    }

    fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
        let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) else {
            bail!("{what}: expected a contiguous f32 tensor")
        };
        Ok(&mut v[a..b])
    }

    /// A host state buffer of `n` zeros unless present (torch starts from zeros, and a zero
    /// buffer gives exactly torch's first-step values).
    fn host(b: &mut Option<Buf>, n: usize) -> Result<&mut Vec<f32>> {
        if !matches!(b, Some(Buf::Host(_))) {
            *b = Some(Buf::Host(vec![0.0; n]));
        }
        match b {
            Some(Buf::Host(v)) => {
                if v.len() != n {
                    bail!("optimizer state has {} elements, the parameter {n}", v.len());
                }
                Ok(v)
            }
            _ => bail!("optimizer state is not on the host"),
        }
    }

    fn grad_f32(g: &Tensor) -> Result<Tensor> {
        g.to_dtype(DType::F32)?.contiguous()
    }

    struct AdamW<'a> {
        m: Mutex<&'a mut [f32]>,
        v: Mutex<&'a mut [f32]>,
        decay: f32,
        w1: f32,
        beta2: f32,
        w2: f32,
        step_size: f32,
        bias2_sqrt: f32,
        eps: f32,
    }

    impl InplaceOp2 for AdamW<'_> {
        fn name(&self) -> &'static str {
            "adamw-step"
        }

        fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
            let p = slice_mut(s1, l1, "adamw parameter")?;
            let g = slice(s2, l2, "adamw gradient")?;
            let mut m = self.m.lock().expect("adamw state lock");
            let mut v = self.v.lock().expect("adamw state lock");
            if p.len() != g.len() || p.len() != m.len() || p.len() != v.len() {
                bail!("adamw: parameter, gradient and state sizes differ");
            }
            let o = self;
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), m), v)| {
                    for i in 0..p.len() {
                        let (gi, mi) = (g[i], m[i]);
                        // torch lerp: weight < 0.5 ? self + w * (end - self) : end - (end - self) * (1 - w)
                        let mi = if o.w1 < 0.5 { mi + o.w1 * (gi - mi) } else { gi - (gi - mi) * (1.0 - o.w1) };
                        let vi = v[i] * o.beta2 + o.w2 * gi * gi;
                        let denom = vi.sqrt() / o.bias2_sqrt + o.eps;
                        p[i] = p[i] * o.decay + (-o.step_size) * mi / denom;
                        m[i] = mi;
                        v[i] = vi;
                    }
                });
            Ok(())
        }
    }

    /// One AdamW step of `var` (its state step already incremented).
    pub(super) fn adamw(
        var: &Var,
        grad: &Tensor,
        s: &mut ParamState,
        lr: f64,
        wd: f64,
        (beta1, beta2): (f64, f64),
        eps: f64,
    ) -> Result<()> {
        let n = var.elem_count();
        let step = s.step as f64;
        let grad = grad_f32(grad)?;
        let op = AdamW {
            m: Mutex::new(host(&mut s.exp_avg, n)?.as_mut_slice()),
            v: Mutex::new(host(&mut s.exp_avg_sq, n)?.as_mut_slice()),
            decay: (1.0 - lr * wd) as f32,
            w1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            w2: (1.0 - beta2) as f32,
            step_size: (lr / (1.0 - beta1.powf(step))) as f32,
            bias2_sqrt: (1.0 - beta2.powf(step)).sqrt() as f32,
            eps: eps as f32,
        };
        var.as_tensor().inplace_op2(&grad, &op)
    }

    struct Sgd<'a> {
        buf: Option<Mutex<&'a mut [f32]>>,
        lr: f32,
        wd: f32,
        momentum: f32,
        nesterov: bool,
    }

    impl InplaceOp2 for Sgd<'_> {
        fn name(&self) -> &'static str {
            "sgd-step"
        }

        fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
            let p = slice_mut(s1, l1, "sgd parameter")?;
            let g = slice(s2, l2, "sgd gradient")?;
            if p.len() != g.len() {
                bail!("sgd: parameter and gradient sizes differ");
            }
            let o = self;
            match &self.buf {
                None => p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(p, g)| {
                    for i in 0..p.len() {
                        let d = if o.wd != 0.0 { g[i] + o.wd * p[i] } else { g[i] };
                        p[i] += -o.lr * d;
                    }
                }),
                Some(buf) => {
                    let mut buf = buf.lock().expect("sgd state lock");
                    if buf.len() != p.len() {
                        bail!("sgd: parameter and momentum buffer sizes differ");
                    }
                    p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(buf.par_chunks_mut(CHUNK)).for_each(
                        |((p, g), b)| {
                            for i in 0..p.len() {
                                let d = if o.wd != 0.0 { g[i] + o.wd * p[i] } else { g[i] };
                                let bi = b[i] * o.momentum + d;
                                let step = if o.nesterov { d + o.momentum * bi } else { bi };
                                p[i] += -o.lr * step;
                                b[i] = bi;
                            }
                        },
                    );
                }
            }
            Ok(())
        }
    }

    /// One SGD step of `var`.
    pub(super) fn sgd(
        var: &Var,
        grad: &Tensor,
        s: &mut ParamState,
        lr: f64,
        wd: f64,
        momentum: f64,
        nesterov: bool,
    ) -> Result<()> {
        let n = var.elem_count();
        let grad = grad_f32(grad)?;
        let buf =
            if momentum != 0.0 { Some(Mutex::new(host(&mut s.momentum_buffer, n)?.as_mut_slice())) } else { None };
        let op = Sgd { buf, lr: lr as f32, wd: wd as f32, momentum: momentum as f32, nesterov };
        var.as_tensor().inplace_op2(&grad, &op)
    }
}
