//! Named parameters: where a model's weights live, under the names the published checkpoints use.
//!
//! A model is built by asking a [`Scope`] for each parameter by its dotted name
//! (`stages.0.1.dwconv.weight`); the [`ParamStore`] behind it keeps one candle `Var` per name,
//! in creation order, initialised from one seeded generator so that a run is reproducible.
//! Loading a checkpoint overwrites the values in place and reports what did not fit.

use candle_core::{bail, DType, Device, Result, Shape, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// How a new parameter is filled before any checkpoint is loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every element equal to the value (zeros for biases, ones for norm weights).
    Const(f64),
    /// Normal with mean 0, truncated at two standard deviations (timm's `trunc_normal_`, the
    /// ConvNeXt init for convolutions and linears).
    TruncNormal {
        /// The standard deviation.
        std: f64,
    },
    /// Uniform on `[-bound, bound]` (PyTorch's default for convolutions and linears uses
    /// `bound = 1 / sqrt(fan_in)`).
    Uniform {
        /// The half-width of the interval.
        bound: f64,
    },
    /// Normal with mean 0 (mmdetection's `normal_init`, e.g. std 0.01 for RPN and classifier
    /// layers; Kaiming-normal is `std = sqrt(2 / fan)`).
    Normal {
        /// The standard deviation.
        std: f64,
    },
}

/// One registered parameter.
struct Entry {
    name: String,
    var: Var,
    trainable: bool,
}

/// All parameters of one model, in creation order.
struct Inner {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    rng: StdRng,
    /// Every parameter zeros instead of its `Init` (see [`ParamStore::zeros`]).
    zeros: bool,
    autocast: Option<DType>,
}

/// The parameters of one model, shared by the model's layers. Cheap to clone.
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
    device: Device,
}

/// What a checkpoint load did not match, by name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Parameters of the model that the checkpoint did not provide.
    pub missing: Vec<String>,
    /// Checkpoint tensors the model has no parameter for.
    pub unexpected: Vec<String>,
    /// `(name, model shape, checkpoint shape)` for tensors whose shape differs (not loaded).
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    /// True when every parameter was loaded and nothing was left over.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    /// One line summarising the report: the count of each kind with up to three names, so that
    /// a checkpoint from another model gives a short error, not every name.
    pub fn summary(&self) -> String {
        fn some(names: &[String]) -> String {
            let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
            let more = if names.len() > 3 { format!(", ... ({} more)", names.len() - 3) } else { String::new() };
            format!("{}{more}", shown.join(", "))
        }
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("{} missing ({})", self.missing.len(), some(&self.missing)));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("{} unexpected ({})", self.unexpected.len(), some(&self.unexpected)));
        }
        if !self.mismatched.is_empty() {
            let shapes: Vec<String> =
                self.mismatched.iter().map(|(n, m, c)| format!("{n}: model {m:?} vs checkpoint {c:?}")).collect();
            parts.push(format!("{} mis-shaped ({})", shapes.len(), some(&shapes)));
        }
        if parts.is_empty() {
            "all tensors matched".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Counts changes of parameter values anywhere in the process (a checkpoint load, an optimizer
/// step): a layer that keeps a derived copy of its weight (a packed matrix for inference)
/// rebuilds it when the count has moved.
static WEIGHTS_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records that parameter values changed; every code path that writes parameters in place
/// ([`ParamStore::load`], the optimizers) calls it.
pub fn weights_changed() {
    WEIGHTS_GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// The current count of [`weights_changed`] calls.
pub fn weights_generation() -> u64 {
    WEIGHTS_GENERATION.load(std::sync::atomic::Ordering::SeqCst)
}

impl ParamStore {
    /// An empty store on `device` whose initialisations draw from `seed`.
    pub fn new(device: &Device, seed: u64) -> Self {
        let inner = Inner {
            entries: Vec::new(),
            index: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
            zeros: false,
            autocast: None,
        };
        Self { inner: Arc::new(Mutex::new(inner)), device: device.clone() }
    }

    /// An empty store whose parameters are all zeros, whatever their `Init`: a model built on
    /// it has its real shapes and names at almost no cost (the zero pages are not touched), for
    /// describing it (`nextdet analyze`) rather than running it.
    pub fn zeros(device: &Device) -> Self {
        let store = Self::new(device, 0);
        store.inner.lock().expect("param store lock").zeros = true;
        store
    }

    /// The root scope, with an empty name prefix.
    pub fn root(&self) -> Scope {
        Scope { store: self.clone(), prefix: String::new() }
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Mixed precision for the model these parameters belong to: the dtype its dense
    /// convolutions and matrix multiplies compute in on the device-generic paths (`None`, the
    /// default: the parameters' `f32`). The parameters themselves stay `f32`; see
    /// [`crate::autocast`].
    pub fn set_autocast(&self, dtype: Option<DType>) {
        self.inner.lock().expect("param store lock").autocast = dtype;
    }

    /// The dtype set by [`ParamStore::set_autocast`].
    pub fn autocast(&self) -> Option<DType> {
        self.inner.lock().expect("param store lock").autocast
    }

    /// `(name, var)` of every trainable parameter, in creation order.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let inner = self.inner.lock().expect("param store lock");
        inner.entries.iter().filter(|e| e.trainable).map(|e| (e.name.clone(), e.var.clone())).collect()
    }

    /// `(name, value)` of every parameter and buffer, in creation order (what a checkpoint saves).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let inner = self.inner.lock().expect("param store lock");
        inner.entries.iter().map(|e| (e.name.clone(), e.var.as_tensor().detach())).collect()
    }

    /// Copies the tensors whose names and shapes match into the parameters and reports the rest.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<LoadReport> {
        weights_changed();
        let inner = self.inner.lock().expect("param store lock");
        let mut report = LoadReport::default();
        for entry in &inner.entries {
            match tensors.get(&entry.name) {
                None => report.missing.push(entry.name.clone()),
                Some(t) if t.dims() != entry.var.dims() => {
                    report.mismatched.push((entry.name.clone(), entry.var.dims().to_vec(), t.dims().to_vec()))
                }
                Some(t) => entry.var.set(&t.to_dtype(DType::F32)?.to_device(&self.device)?)?,
            }
        }
        let known: BTreeSet<&str> = inner.entries.iter().map(|e| e.name.as_str()).collect();
        report.unexpected = tensors.keys().filter(|k| !known.contains(k.as_str())).cloned().collect();
        report.unexpected.sort();
        Ok(report)
    }

    fn create(&self, name: String, shape: Shape, init: Init, trainable: bool) -> Result<Tensor> {
        let mut inner = self.inner.lock().expect("param store lock");
        if inner.index.contains_key(&name) {
            bail!("parameter `{name}` is created twice");
        }
        let n = shape.elem_count();
        let var = if inner.zeros {
            Var::zeros(shape, DType::F32, &self.device)?
        } else {
            let values: Vec<f32> = match init {
                Init::Const(v) => vec![v as f32; n],
                Init::Uniform { bound } => (0..n).map(|_| inner.rng.gen_range(-bound..=bound) as f32).collect(),
                Init::TruncNormal { std } => (0..n).map(|_| truncated_normal(&mut inner.rng) * std as f32).collect(),
                Init::Normal { std } => (0..n).map(|_| standard_normal(&mut inner.rng) * std as f32).collect(),
            };
            Var::from_tensor(&Tensor::from_vec(values, shape, &self.device)?)?
        };
        let tensor = if trainable { var.as_tensor().clone() } else { var.as_tensor().detach() };
        let at = inner.entries.len();
        inner.index.insert(name.clone(), at);
        inner.entries.push(Entry { name, var, trainable });
        Ok(tensor)
    }
}

/// A standard normal sample (Box-Muller).
fn standard_normal(rng: &mut StdRng) -> f32 {
    let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(f64::MIN_POSITIVE), rng.gen());
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A standard normal sample redrawn until it lies within two standard deviations.
fn truncated_normal(rng: &mut StdRng) -> f32 {
    loop {
        let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(f64::MIN_POSITIVE), rng.gen());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        if z.abs() <= 2.0 {
            return z as f32;
        }
    }
}

/// A name prefix inside a [`ParamStore`]: `scope.pp("stages").pp(0)` names `stages.0.*`.
#[derive(Clone)]
pub struct Scope {
    store: ParamStore,
    prefix: String,
}

impl Scope {
    /// The sub-scope `prefix.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Scope {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Scope { store: self.store.clone(), prefix }
    }

    /// Creates the trainable parameter `prefix.name`.
    pub fn param(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Tensor> {
        self.store.create(self.pp(name).prefix, shape.into(), init, true)
    }

    /// Creates `prefix.name` as a buffer or frozen parameter: loaded and saved, never trained
    /// (batch-norm statistics, frozen stages).
    pub fn buffer(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Tensor> {
        self.store.create(self.pp(name).prefix, shape.into(), init, false)
    }

    /// The store this scope belongs to.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }
}
