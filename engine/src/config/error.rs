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

    /// A config file is larger than [`super::MAX_CONFIG_BYTES`] (or never ends, as `/dev/zero`).
    #[error("{}: config file is larger than {limit} bytes; a config is a small YAML file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },

    /// A config file is not UTF-8 text.
    #[error("{}: not a text file (invalid UTF-8 at byte {offset})", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// The byte offset of the first invalid sequence.
        offset: usize,
    },

    /// A config file nests mappings and lists deeper than [`super::MAX_CONFIG_DEPTH`].
    #[error("{}: line {line} column {column}: mappings and lists nested deeper than {limit} levels", path.display())]
    TooDeep {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: usize,
        /// Line (from 1) of the first collection past the limit.
        line: u64,
        /// Column (from 1) of the first collection past the limit.
        column: u64,
    },

    /// The `_base_` tree loads more than [`super::MAX_CONFIG_FILES`] files.
    #[error("{}: its `_base_` files load more than {limit} files in all (a base included twice counts twice)", path.display())]
    TooManyFiles {
        /// The file whose `_base_` went past the limit.
        path: PathBuf,
        /// The limit.
        limit: usize,
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

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant") with the closest
/// expected name suggested after the unknown one: "unknown field `load_form` (did you mean
/// `load_from`?), expected ...". Other messages, and unknown names close to nothing, pass
/// unchanged.
pub(crate) fn with_suggestion(message: &str) -> String {
    let Some((head, name, rest)) = ["unknown field `", "unknown variant `"].iter().find_map(|prefix| {
        let after = message.strip_prefix(prefix)?;
        let end = after.find('`')?;
        Some((&message[..prefix.len() + end + 1], &after[..end], &after[end + 1..]))
    }) else {
        return message.to_string();
    };
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    match closest(name, &expected) {
        Some(best) => format!("{head} (did you mean `{best}`?){rest}"),
        None => message.to_string(),
    }
}

/// The candidate nearest to `name` by edit distance (adjacent transpositions count one, case is
/// ignored), if it is near enough to be a typo: at most a third of the name's length, and at
/// least one edit allowed. Ties go to the first candidate.
pub(crate) fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(&name.to_lowercase(), &c.to_lowercase()), *c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and transpositions
/// of adjacent characters each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_closest_expected_name() {
        let m = "unknown field `load_form`, expected one of `work_dir`, `load_from`, `resume_from`";
        assert_eq!(
            with_suggestion(m),
            "unknown field `load_form` (did you mean `load_from`?), expected one of `work_dir`, `load_from`, `resume_from`"
        );
        let m = "unknown variant `ConvNext`, expected one of `ConvNeXt`, `ResNet`";
        assert!(with_suggestion(m).contains("(did you mean `ConvNeXt`?)"));
        let m = "unknown field `lr`, expected `type` or `lr_scale`";
        assert_eq!(with_suggestion(m), m, "nothing close enough");
        assert_eq!(with_suggestion("unknown field `x`, there are no fields"), "unknown field `x`, there are no fields");
        assert_eq!(with_suggestion("missing field `type`"), "missing field `type`");
    }

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("load_form", "load_from"), 1);
        assert_eq!(edit_distance("optimzer", "optimizer"), 1);
        assert_eq!(edit_distance("runnner", "runner"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
