//! Training checkpoints as safetensors files, written atomically.
//!
//! One file holds the model tensors under their own names, the optimizer state under
//! `optimizer.`, the EMA weights under `ema.`, and the [`RunState`] as JSON in the safetensors
//! metadata under [`RUN_STATE_KEY`]. A file is written to `<name>.tmp` in the same folder,
//! flushed to disk and renamed over the target, so a crash at any moment leaves either the old
//! file or the new one, never a torn one. [`CheckpointDir`] names epoch files as mmdetection does
//! (`epoch_3.safetensors`), keeps `latest.safetensors` pointing at the newest, and keeps only the
//! last K epoch files.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The metadata key under which the run state is stored.
pub const RUN_STATE_KEY: &str = "nextdet.run_state";
/// Prefix of the optimizer state tensors.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";
/// Prefix of the EMA tensors.
pub const EMA_PREFIX: &str = "ema.";
/// File name of the newest checkpoint in a work dir.
pub const LATEST: &str = "latest.safetensors";

/// Everything that can go wrong reading or writing a checkpoint; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading, writing, renaming or removing a file failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file, or a tensor cannot be stored.
    #[error("{}: {msg}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

/// The best evaluation result seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestMetric {
    /// Metric name (`bbox_mAP`, `top1`, ...).
    pub name: String,
    /// Its value.
    pub value: f64,
    /// The epoch (from 1) it was reached at.
    pub epoch: usize,
}

/// Where a run stands: enough to continue it exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunState {
    /// The epoch (from 0) the next iteration belongs to.
    pub epoch: usize,
    /// Batches already done in that epoch (0 at an epoch boundary).
    pub iter: usize,
    /// Batches done in the whole run.
    pub global_iter: u64,
    /// Optimizer steps done in the whole run.
    pub global_step: u64,
    /// The run's seed; per-iteration randomness derives from (seed, epoch, iter).
    pub seed: u64,
    /// The merged config as YAML text, if the caller provided it.
    pub config: Option<String>,
    /// The best evaluation metric so far.
    pub best_metric: Option<BestMetric>,
    /// How many ranks trained the run (0 in files written before it was recorded: one); `iter`
    /// counts this many ranks' batches.
    pub world_size: usize,
}

/// The contents of a checkpoint file.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Model parameters and buffers by name.
    pub weights: HashMap<String, Tensor>,
    /// Optimizer state, keys without the `optimizer.` prefix.
    pub optimizer: HashMap<String, Tensor>,
    /// EMA weights, keys without the `ema.` prefix.
    pub ema: HashMap<String, Tensor>,
    /// The run state, absent in a weights-only file.
    pub run: Option<RunState>,
}

/// A tensor's raw little-endian bytes, for the safetensors writer.
struct Raw {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn raw(t: &Tensor) -> candle_core::Result<Raw> {
    use safetensors::Dtype as D;
    let shape = t.dims().to_vec();
    let flat = t.flatten_all()?;
    let (dtype, data): (D, Vec<u8>) = match t.dtype() {
        DType::F64 => (D::F64, flat.to_vec1::<f64>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::I64 => (D::I64, flat.to_vec1::<i64>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::U32 => (D::U32, flat.to_vec1::<u32>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::U8 => (D::U8, flat.to_vec1::<u8>()?),
        _ => (D::F32, flat.to_dtype(DType::F32)?.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
    };
    Ok(Raw { dtype, shape, data })
}

/// Serializes a checkpoint to safetensors bytes.
fn to_bytes(ckpt: &Checkpoint, path: &Path) -> Result<Vec<u8>, CheckpointError> {
    let format = |msg: String| CheckpointError::Format { path: path.to_path_buf(), msg };
    let mut tensors: Vec<(String, Raw)> = Vec::new();
    let parts = [("", &ckpt.weights), (OPTIMIZER_PREFIX, &ckpt.optimizer), (EMA_PREFIX, &ckpt.ema)];
    for (prefix, map) in parts {
        for (name, t) in map {
            let key = format!("{prefix}{name}");
            tensors.push((key.clone(), raw(t).map_err(|e| format(format!("tensor `{key}`: {e}")))?));
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = match &ckpt.run {
        Some(run) => {
            let json = serde_json::to_string(run).map_err(|e| format(format!("run state: {e}")))?;
            Some(HashMap::from([(RUN_STATE_KEY.to_string(), json)]))
        }
        None => None,
    };
    safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), &metadata)
        .map_err(|e| format(format!("cannot serialize: {e}")))
}

/// The temporary path `<name>.tmp` next to `path`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io { path: path.to_path_buf(), what, source }
}

/// Flushes a folder's entries (the rename) to disk; best effort where folders cannot be opened.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if let Ok(f) = fs::File::open(dir) {
            let _ = f.sync_all();
        }
    }
}

/// Writes `bytes` to `path` atomically: `<path>.tmp`, fsync, rename. When the write fails (a
/// full disk, a file-size limit), the temporary file is removed and the error names `path` and
/// says that the file already there, if any, is unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let tmp = tmp_path(path);
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(CheckpointError::Io {
            path: path.to_path_buf(),
            what: "cannot write the checkpoint (the file already there, if any, is unchanged)",
            source,
        });
    }
    fs::rename(&tmp, path).map_err(io(path, "cannot rename the temporary file over"))?;
    sync_dir(path);
    Ok(())
}

/// Writes `ckpt` to `path` atomically (see the module docs).
pub fn save(path: &Path, ckpt: &Checkpoint) -> Result<(), CheckpointError> {
    let bytes = to_bytes(ckpt, path)?;
    write_atomic(path, &bytes)
}

/// Reads a checkpoint onto `device`, splitting the tensors by prefix and parsing the run state.
///
/// Only a regular file is read, and only as many bytes as its length (so `/dev/zero` or a pipe
/// is an error, not an endless read). The safetensors header must fit in the file and every
/// tensor's byte range must match its shape and dtype and lie inside the file
/// (`SafeTensors::read_metadata` checks both) before any tensor is built.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint, CheckpointError> {
    use std::io::Read;
    let format = |msg: String| CheckpointError::Format { path: path.to_path_buf(), msg };
    let file = fs::File::open(path).map_err(io(path, "cannot read checkpoint"))?;
    let meta = file.metadata().map_err(io(path, "cannot read checkpoint"))?;
    if !meta.is_file() {
        return Err(format("not a regular file".into()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(meta.len()).read_to_end(&mut bytes).map_err(io(path, "cannot read checkpoint"))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| format(format!("not a valid safetensors checkpoint: {e}")))?;
    let run = match meta.metadata().as_ref().and_then(|m| m.get(RUN_STATE_KEY)) {
        Some(json) => Some(
            serde_json::from_str::<RunState>(json)
                .map_err(|e| format(format!("bad `{RUN_STATE_KEY}` metadata: {e}")))?,
        ),
        None => None,
    };
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| format(format!("cannot read tensors: {e}")))?;
    let mut ckpt = Checkpoint { run, ..Default::default() };
    for (key, t) in tensors {
        if let Some(name) = key.strip_prefix(OPTIMIZER_PREFIX) {
            ckpt.optimizer.insert(name.to_string(), t);
        } else if let Some(name) = key.strip_prefix(EMA_PREFIX) {
            ckpt.ema.insert(name.to_string(), t);
        } else {
            ckpt.weights.insert(key, t);
        }
    }
    Ok(ckpt)
}

/// The checkpoint folder of a run: epoch files, `latest`, and pruning.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
    keep_last: usize,
}

impl CheckpointDir {
    /// Checkpoints in `dir`, keeping the last `keep_last` epoch files (0 keeps all).
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> Self {
        Self { dir: dir.into(), keep_last }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the epoch file for `epoch` (from 1): `epoch_{epoch}.safetensors`.
    pub fn epoch_path(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("epoch_{epoch}.safetensors"))
    }

    /// The path [`Self::save_named`] writes for `name`: `<name>.safetensors`.
    pub fn named_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.safetensors"))
    }

    /// The `latest.safetensors` path.
    pub fn latest_path(&self) -> PathBuf {
        self.dir.join(LATEST)
    }

    /// Saves `epoch_{epoch}.safetensors`, points `latest` at it and removes epoch files beyond
    /// the last `keep_last`. Returns the epoch file's path.
    pub fn save_epoch(&self, epoch: usize, ckpt: &Checkpoint) -> Result<PathBuf, CheckpointError> {
        let path = self.save_named(&format!("epoch_{epoch}"), ckpt)?;
        self.prune()?;
        Ok(path)
    }

    /// Saves `<name>.safetensors` (e.g. `interrupted`) and points `latest` at it.
    pub fn save_named(&self, name: &str, ckpt: &Checkpoint) -> Result<PathBuf, CheckpointError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir, "cannot create the checkpoint folder"))?;
        let path = self.named_path(name);
        save(&path, ckpt)?;
        self.link_latest(&path)?;
        Ok(path)
    }

    /// Points `latest.safetensors` at `target` atomically: a hard link (or a copy where links
    /// fail) made under the temporary name, then renamed.
    fn link_latest(&self, target: &Path) -> Result<(), CheckpointError> {
        let latest = self.latest_path();
        let tmp = tmp_path(&latest);
        let _ = fs::remove_file(&tmp);
        if fs::hard_link(target, &tmp).is_err() {
            let bytes = fs::read(target).map_err(io(target, "cannot read"))?;
            return write_atomic(&latest, &bytes);
        }
        fs::rename(&tmp, &latest).map_err(io(&latest, "cannot rename the temporary file over"))?;
        sync_dir(&latest);
        Ok(())
    }

    /// The epoch numbers of the epoch files present, ascending.
    pub fn epochs(&self) -> Result<Vec<usize>, CheckpointError> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&self.dir, "cannot list")(e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(n) = name.strip_prefix("epoch_").and_then(|s| s.strip_suffix(".safetensors")) {
                if let Ok(n) = n.parse::<usize>() {
                    out.push(n);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn prune(&self) -> Result<(), CheckpointError> {
        if self.keep_last == 0 {
            return Ok(());
        }
        let epochs = self.epochs()?;
        let drop = epochs.len().saturating_sub(self.keep_last);
        for &e in &epochs[..drop] {
            let p = self.epoch_path(e);
            fs::remove_file(&p).map_err(io(&p, "cannot remove old checkpoint"))?;
        }
        Ok(())
    }
}
