//! Reading published checkpoints into a model's [`ParamStore`], whatever their layout.
//!
//! Detected, not declared: PyTorch `.pth` zip archives (a bare state dict, or one under
//! `model`, `state_dict` or `module`) and safetensors files; keys with a `module.` prefix
//! (DataParallel); timm's ConvNeXt names (`stem.0`, `stages.1.downsample.1`,
//! `stages.0.blocks.2.conv_dw`, `mlp.fc1`, `head.fc`), renamed to the official ones; timm's Swin
//! names (patch merging at the start of the next stage, `head.fc`), renamed to the official
//! Swin ones; the buffers the official Swin code saves (`relative_position_index`, `attn_mask`),
//! set aside because the model derives them from the window size; mmdetection detector
//! checkpoints (`backbone.`, `neck.`, ... prefixes, as Swin-Transformer-Object-Detection writes
//! them); torchvision ResNet names as they are.

use candle_core::{DType, Device, Tensor};
use nextdet_ops::params::LoadReport;
use nextdet_ops::ParamStore;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a checkpoint could not be used; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file does not exist.
    #[error("{0}: no such checkpoint file")]
    NotFound(PathBuf),
    /// Neither a PyTorch zip archive nor a safetensors file.
    #[error("{0}: not a checkpoint (expected a PyTorch .pth zip archive or a safetensors file)")]
    UnknownFormat(PathBuf),
    /// The format was recognised but reading failed (truncated, corrupt).
    #[error("{path}: cannot read checkpoint ({reason}); the file may be truncated or corrupt")]
    Unreadable {
        /// The checkpoint.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The tensors do not fit the model.
    #[error("{path}: checkpoint does not fit this model: {details}")]
    Mismatch {
        /// The checkpoint.
        path: PathBuf,
        /// Which tensors do not fit.
        details: String,
    },
}

/// What a load did, for the caller to print.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Names and shapes that did not match.
    pub report: LoadReport,
    /// Human-readable notes: the detected layout, a dropped classifier head, ignored parts.
    pub notes: Vec<String>,
    /// The loaded tensors that hold NaN or infinite values (see [`non_finite_tensors`]): the
    /// caller refuses such a checkpoint for evaluation and inference and warns when it only
    /// starts a training.
    pub non_finite: Vec<NonFinite>,
}

/// Reads every tensor of a checkpoint file onto the CPU, keyed by its name in the file.
///
/// Nothing in the file is trusted: a `.pth` archive's pickle is interpreted without running
/// anything and every tensor's declared shape, stride, offset and type is checked against the
/// bytes its storage entry holds before anything is allocated (`pth.rs`); a safetensors file's
/// header must fit in the file, and its offsets and shapes are checked against each other and
/// the file's length by the safetensors crate (`SafeTensors::read_metadata` validates every
/// tensor's byte range against its shape and dtype) before any tensor is read. A file that is
/// not a regular file (a folder, `/dev/zero`) is refused before it is read.
pub fn read_checkpoint(path: &Path) -> Result<HashMap<String, Tensor>, WeightsError> {
    let unreadable = |reason: String| WeightsError::Unreadable { path: path.to_path_buf(), reason };
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => WeightsError::NotFound(path.to_path_buf()),
        _ => unreadable(e.to_string()),
    })?;
    let meta = file.metadata().map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    let mut magic = [0u8; 16];
    let n = file.read(&mut magic).map_err(|e| unreadable(e.to_string()))?;
    drop(file);
    if n >= 4 && magic[..4] == *b"PK\x03\x04" {
        let list = crate::pth::read(path).map_err(unreadable)?;
        if list.is_empty() {
            return Err(unreadable("no tensors found in the archive".into()));
        }
        return Ok(list.into_iter().collect());
    }
    let header_len = if n >= 9 { u64::from_le_bytes(magic[..8].try_into().expect("8 bytes")) } else { 0 };
    if n >= 9 && magic[8] == b'{' && header_len > 0 {
        if header_len > meta.len() - 8 {
            return Err(unreadable(format!(
                "the safetensors header declares {header_len} bytes, but the file has {} after the length",
                meta.len() - 8
            )));
        }
        return candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| unreadable(e.to_string()));
    }
    Err(WeightsError::UnknownFormat(path.to_path_buf()))
}

/// A tensor holding NaN or infinite values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFinite {
    /// The tensor's name.
    pub name: String,
    /// How many of its values are NaN or infinite.
    pub count: usize,
    /// How many values it has.
    pub len: usize,
}

/// The floating-point tensors among `tensors` that hold NaN or infinite values, sorted by name,
/// in one parallel pass over the values (no copy for contiguous CPU tensors). A checkpoint
/// written after a divergence loads without any error and gives garbage; the commands that
/// evaluate or infer refuse it with this list, the ones that start a training from it warn.
pub fn non_finite_tensors<'a>(tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>) -> Vec<NonFinite> {
    use rayon::prelude::*;
    let tensors: Vec<(&String, &Tensor)> = tensors.into_iter().collect();
    let mut found: Vec<NonFinite> = tensors
        .par_iter()
        .filter_map(|(name, t)| {
            let count = count_non_finite(t);
            (count > 0).then(|| NonFinite { name: (*name).clone(), count, len: t.elem_count() })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// How many values of `t` are NaN or infinite (0 for integer tensors).
fn count_non_finite(t: &Tensor) -> usize {
    use candle_core::{CpuStorage, Storage};
    use rayon::prelude::*;
    fn count<T: Copy + Send + Sync>(v: &[T], finite: impl Fn(T) -> bool + Send + Sync) -> usize {
        v.par_chunks(1 << 16).map(|c| c.iter().filter(|&&x| !finite(x)).count()).sum()
    }
    if !t.dtype().is_float() {
        return 0;
    }
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            match cpu {
                CpuStorage::F32(v) => return count(&v[start..end], f32::is_finite),
                CpuStorage::F64(v) => return count(&v[start..end], f64::is_finite),
                CpuStorage::F16(v) => return count(&v[start..end], half::f16::is_finite),
                CpuStorage::BF16(v) => return count(&v[start..end], half::bf16::is_finite),
                _ => {}
            }
        }
    }
    match t.flatten_all().and_then(|f| f.to_dtype(DType::F64)).and_then(|f| f.to_vec1::<f64>()) {
        Ok(v) => count(&v, f64::is_finite),
        Err(_) => 0,
    }
}

/// One line naming the tensors of [`non_finite_tensors`]: their count and up to three names
/// with how many of their values are not finite.
pub fn describe_non_finite(found: &[NonFinite]) -> String {
    let shown: Vec<String> = found.iter().take(3).map(|f| format!("{} ({} of {})", f.name, f.count, f.len)).collect();
    let more = if found.len() > 3 { format!(", ... ({} more)", found.len() - 3) } else { String::new() };
    let what = if found.len() == 1 { "tensor holds" } else { "tensors hold" };
    format!("{} {what} NaN or infinite values: {}{more}", found.len(), shown.join(", "))
}

/// Renames one timm ConvNeXt key to the official layout; other keys pass unchanged.
fn timm_to_official(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let rest = |from: usize| parts[from..].join(".");
    match parts.as_slice() {
        ["stem", i, ..] => format!("downsample_layers.0.{i}.{}", rest(2)),
        ["stages", s, "downsample", i, ..] => format!("downsample_layers.{s}.{i}.{}", rest(4)),
        ["stages", s, "blocks", b, "conv_dw", ..] => format!("stages.{s}.{b}.dwconv.{}", rest(5)),
        ["stages", s, "blocks", b, "mlp", "fc1", ..] => format!("stages.{s}.{b}.pwconv1.{}", rest(6)),
        ["stages", s, "blocks", b, "mlp", "fc2", ..] => format!("stages.{s}.{b}.pwconv2.{}", rest(6)),
        ["stages", s, "blocks", b, ..] => format!("stages.{s}.{b}.{}", rest(4)),
        ["head", "norm", ..] => format!("norm.{}", rest(2)),
        ["head", "fc", ..] => format!("head.{}", rest(2)),
        _ => name.to_string(),
    }
}

/// True when the keys are timm's ConvNeXt names rather than the official ones.
fn is_timm_convnext(names: &[&str]) -> bool {
    names.iter().any(|k| k.starts_with("stem.0.") || k.starts_with("stages.") && k.contains(".blocks."))
}

/// True when the keys are timm's Swin names (`timm/models/swin_transformer.py` since 0.9):
/// patch merging belongs to the stage after it, so stage 0 has none and stage 1 has one.
fn is_timm_swin(names: &[&str]) -> bool {
    names.contains(&"layers.1.downsample.reduction.weight") && !names.contains(&"layers.0.downsample.reduction.weight")
}

/// Renames one timm Swin key to the official layout (`layers.{i}.downsample` ->
/// `layers.{i-1}.downsample`, `head.fc` -> `head`); other keys pass unchanged. The inverse of
/// timm's `checkpoint_filter_fn` for Swin.
fn timm_swin_to_official(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["layers", i, "downsample", rest @ ..] => match i.parse::<usize>() {
            Ok(i) if i > 0 => format!("layers.{}.downsample.{}", i - 1, rest.join(".")),
            _ => name.to_string(),
        },
        ["head", "fc", rest @ ..] => format!("head.{}", rest.join(".")),
        _ => name.to_string(),
    }
}

/// True for the buffers the official Swin code saves next to the weights: the relative position
/// index of each block and the shifted blocks' attention mask, both fixed functions of the
/// window size and the training resolution that the model computes itself.
fn is_swin_derived_buffer(name: &str) -> bool {
    name.ends_with("attn.relative_position_index") || name.ends_with(".attn_mask")
}

/// Name prefixes of the training state our own checkpoints carry next to the weights
/// (`nextdet_engine::checkpoint`): not model parameters.
const TRAINING_STATE_PREFIXES: [&str; 2] = ["optimizer.", "ema."];

/// Sets aside training state and Swin's derived buffers, strips a `module.` prefix and renames
/// timm ConvNeXt and Swin keys to the official layouts; returns the tensors and notes on what
/// was detected.
fn canonical_names(tensors: HashMap<String, Tensor>) -> (HashMap<String, Tensor>, Vec<String>) {
    let mut notes = Vec::new();
    let before = tensors.len();
    let tensors: HashMap<String, Tensor> =
        tensors.into_iter().filter(|(k, _)| !TRAINING_STATE_PREFIXES.iter().any(|p| k.starts_with(p))).collect();
    if tensors.len() < before {
        notes.push(format!("training checkpoint: set aside {} optimizer / EMA tensors", before - tensors.len()));
    }
    let mut tensors: HashMap<String, Tensor> = if tensors.keys().all(|k| k.starts_with("module.")) {
        notes.push("stripped the `module.` prefix".into());
        tensors.into_iter().map(|(k, v)| (k["module.".len()..].to_string(), v)).collect()
    } else {
        tensors
    };
    let before = tensors.len();
    tensors.retain(|k, _| !is_swin_derived_buffer(k));
    if tensors.len() < before {
        notes.push(format!(
            "set aside {} Swin buffers (relative_position_index, attn_mask): derived from the window size",
            before - tensors.len()
        ));
    }
    let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    if is_timm_convnext(&names) {
        notes.push("timm ConvNeXt layout, renamed to the official names".into());
        tensors = tensors.into_iter().map(|(k, v)| (timm_to_official(&k), v)).collect();
    } else if is_timm_swin(&names) {
        notes.push("timm Swin layout, renamed to the official names".into());
        tensors = tensors.into_iter().map(|(k, v)| (timm_swin_to_official(&k), v)).collect();
    }
    (tensors, notes)
}

/// The class names a published mmdetection checkpoint carries (`meta.CLASSES` of its `.pth`),
/// so that drawings and listings name what the model was trained on; `None` when the file has
/// none (our safetensors checkpoints, classification checkpoints).
pub fn checkpoint_class_names(path: &Path) -> Option<Vec<String>> {
    crate::pth::class_names(path).filter(|names| !names.is_empty())
}

/// Reads a checkpoint and brings its names to the official layout; returns the tensors and
/// notes on what was renamed.
pub fn read_canonical(path: &Path) -> Result<(HashMap<String, Tensor>, Vec<String>), WeightsError> {
    Ok(canonical_names(read_checkpoint(path)?))
}

/// Brings checkpoint names to the model's: the canonical names, then between detector
/// (`backbone.`-prefixed) and bare-backbone naming. Returns the renamed tensors and notes on
/// what was detected or set aside.
fn to_model_names(tensors: HashMap<String, Tensor>, model_is_detector: bool) -> (HashMap<String, Tensor>, Vec<String>) {
    let has_detector_keys = tensors.keys().any(|k| k.starts_with("backbone.") || k.starts_with("module.backbone."));
    let (mut tensors, mut notes) = canonical_names(tensors);
    if has_detector_keys && !model_is_detector {
        let before = tensors.len();
        tensors =
            tensors.into_iter().filter_map(|(k, v)| k.strip_prefix("backbone.").map(|b| (b.to_string(), v))).collect();
        notes.push(format!(
            "detector checkpoint: took the backbone, ignored {} other tensors (neck, heads)",
            before - tensors.len()
        ));
        let (renamed, more) = canonical_names(tensors);
        tensors = renamed;
        notes.extend(more);
    }
    if model_is_detector && !has_detector_keys {
        notes.push("classification checkpoint loaded as the detector's backbone".into());
        tensors = tensors.into_iter().map(|(k, v)| (format!("backbone.{k}"), v)).collect();
    }
    (tensors, notes)
}

/// Drops a classifier head (`head.*`, `fc.*`) whose class count differs from the model's, so
/// that an ImageNet checkpoint can start a fine-tune with another number of classes.
fn drop_mismatched_head(tensors: &mut HashMap<String, Tensor>, model: &HashMap<String, Vec<usize>>) -> Vec<String> {
    let mut notes = Vec::new();
    for head in ["head", "fc"] {
        let w = format!("{head}.weight");
        if let (Some(t), Some(shape)) = (tensors.get(&w), model.get(&w)) {
            if t.dims() != shape.as_slice() {
                notes.push(format!(
                    "warning: dropped the checkpoint's `{head}` ({} classes); the model's {} classes start from their init",
                    t.dims()[0],
                    shape[0]
                ));
                tensors.remove(&w);
                tensors.remove(&format!("{head}.bias"));
            }
        }
    }
    notes
}

/// Loads the checkpoint at `path` into `store`. With `strict`, any missing, unexpected or
/// mis-shaped tensor is an error listing them by name; otherwise the outcome reports them.
pub fn load_checkpoint(store: &ParamStore, path: &Path, strict: bool) -> Result<LoadOutcome, WeightsError> {
    load_tensors(store, read_checkpoint(path)?, path, strict)
}

/// Loads tensors already read from a checkpoint (keyed by their names in it) into `store`, with
/// the same layout detection and renaming as [`load_checkpoint`]; `origin` is the file (or a
/// description of the source) that errors name.
pub fn load_tensors(
    store: &ParamStore,
    tensors: HashMap<String, Tensor>,
    origin: &Path,
    strict: bool,
) -> Result<LoadOutcome, WeightsError> {
    let model: HashMap<String, Vec<usize>> = store.tensors().into_iter().map(|(k, t)| (k, t.dims().to_vec())).collect();
    let is_detector = model.keys().any(|k| k.starts_with("backbone."));
    let (mut tensors, mut notes) = to_model_names(tensors, is_detector);
    notes.extend(drop_mismatched_head(&mut tensors, &model));
    let report = store
        .load(&tensors)
        .map_err(|e| WeightsError::Unreadable { path: origin.to_path_buf(), reason: e.to_string() })?;
    if strict && !report.is_exact() {
        return Err(WeightsError::Mismatch { path: origin.to_path_buf(), details: report.summary() });
    }
    let loaded = tensors.iter().filter(|(k, t)| model.get(*k).is_some_and(|shape| shape.as_slice() == t.dims()));
    let non_finite = non_finite_tensors(loaded);
    Ok(LoadOutcome { report, notes, non_finite })
}
