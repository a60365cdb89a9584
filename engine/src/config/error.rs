//! The error type of the config layer.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while loading, merging, overriding or deserializing a config.
///
/// Every variant renders as one line that names the file (or `--cfg-options`) and the item.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file could not be read from disk.
    #[error("{}: cannot read config file: {source}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A config file is not valid YAML. The source error carries the line and column.
    #[error("{}: invalid YAML: {}", path.display(), one_line(&source.to_string()))]
    Yaml {
        /// The file that failed to parse.
        path: PathBuf,
        /// The parser error, with its location.
        source: serde_yaml::Error,
    },

    /// The `_base_` inheritance chain loops back on itself.
    #[error("circular `_base_` inheritance: {}", show_chain(chain))]
    BaseCycle {
        /// The files of the loop, in inclusion order; the last entry repeats an earlier one.
        chain: Vec<PathBuf>,
    },

    /// A file listed in `_base_` does not exist.
    #[error(
        "{}: `_base_` file `{base}` not found (looked for {})",
        including.display(),
        resolved.display()
    )]
    BaseNotFound {
        /// The file whose `_base_` names the missing file.
        including: PathBuf,
        /// The entry exactly as written in `_base_`.
        base: String,
        /// Where it was looked for (relative to the including file's directory).
        resolved: PathBuf,
    },

    /// A `--cfg-options` override could not be parsed or applied.
    #[error("bad --cfg-options override `{text}`: {reason}")]
    BadOverride {
        /// The override exactly as given.
        text: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A config value is not what the code expects: an unknown key, a wrong type, a missing
    /// field, or a malformed `_base_` / `_delete_`.
    #[error("{}", show_invalid(file, key_path, message))]
    Invalid {
        /// The file that set the offending key (or `--cfg-options`).
        file: String,
        /// The full dotted key path of the offending item (`model.backbone.drop_path_rte`);
        /// empty for the document as a whole.
        key_path: String,
        /// What is wrong with it.
        message: String,
    },
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn show_chain(chain: &[PathBuf]) -> String {
    chain.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" -> ")
}

fn show_invalid(file: &str, key_path: &str, message: &str) -> String {
    let message = one_line(message);
    if key_path.is_empty() {
        format!("{file}: {message}")
    } else {
        format!("{file}: {key_path}: {message}")
    }
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`] for a key set in `file`.
    pub(crate) fn invalid(file: &Path, key_path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { file: file.display().to_string(), key_path: key_path.into(), message: message.into() }
    }
}
