//! Generic YAML config layer with mmdetection's shape.
//!
//! A config file is a YAML mapping. Its optional top-level `_base_` key names one file or a list
//! of files (paths relative to the including file) that are loaded first, recursively, and merged
//! in order; the file's own keys are then merged on top. Mappings merge deeply; a mapping that
//! contains `_delete_: true` replaces the inherited value instead of merging into it (the
//! `_delete_` key itself is dropped). Lists and scalars replace.
//!
//! On top of that, [`Config::apply_overrides`] applies `--cfg-options a.b.c=value` overrides, and
//! [`Config::section`] deserializes a subtree into a typed struct. Because the loader records,
//! for every key path, which file set it (its *provenance*), a typo or a wrong type in a typed
//! section is reported with its full dotted key path and the file it came from:
//!
//! ```text
//! configs/foo.yaml: model.backbone.drop_path_rte: unknown field `drop_path_rte`, expected one of ...
//! ```
//!
//! Key paths are dotted; a numeric component indexes into a list (`model.backbone.depths.2`).

mod error;
mod limits;

pub use error::ConfigError;
pub use limits::{MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_CONFIG_FILES};

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The key that lists inherited files.
const BASE_KEY: &str = "_base_";
/// The key that turns a deep merge into a replacement.
const DELETE_KEY: &str = "_delete_";

/// Where a config value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Set by this config file (the path as it was reached: the top file's path as given, bases
    /// joined to their including file's directory and lexically normalized).
    File(PathBuf),
    /// Set by a `--cfg-options` override.
    CfgOptions,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::CfgOptions => f.write_str("--cfg-options"),
        }
    }
}

/// Provenance: for each dotted key path, the origin that last set it.
type Provenance = BTreeMap<String, Origin>;

/// A loaded, merged config document plus the provenance of each of its keys.
///
/// The document is always a YAML mapping with `_base_` and `_delete_` resolved away.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    root: Value,
    provenance: Provenance,
    file: Option<PathBuf>,
}

impl Config {
    /// Loads `path`, resolving `_base_` inheritance recursively (see the module docs).
    ///
    /// Errors: [`ConfigError::Io`] for an unreadable file, [`ConfigError::Yaml`] for a syntax
    /// error (naming the file, line and column), [`ConfigError::BaseNotFound`] for a missing base,
    /// [`ConfigError::BaseCycle`] for circular inheritance and [`ConfigError::Invalid`] for a
    /// malformed `_base_` or `_delete_` or a document that is not a mapping. What one config may
    /// cost is bounded, each bound an error naming the file: [`ConfigError::TooLarge`] past
    /// [`MAX_CONFIG_BYTES`] per file (read no further, so `/dev/zero` is refused at once),
    /// [`ConfigError::TooDeep`] past [`MAX_CONFIG_DEPTH`] levels of nesting (checked before the
    /// YAML parse, whose cost grows with the depth) and [`ConfigError::TooManyFiles`] past
    /// [`MAX_CONFIG_FILES`] files loaded through `_base_`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let mut stack = LoadState::default();
        let (root, provenance) = load_file(path, &normalize(path), &mut stack)?;
        Ok(Config { root, provenance, file: Some(normalize(path)) })
    }

    /// Parses a config from YAML text, as if it had been read from the file `name`.
    ///
    /// `name` is used in error messages and provenance, and relative `_base_` entries are
    /// resolved against its directory. Useful for a config stored inside a checkpoint. The
    /// bounds of [`Config::from_file`] apply to the text and to every base it loads.
    pub fn from_yaml_str(text: &str, name: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let name = name.as_ref();
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { path: normalize(name), limit: MAX_CONFIG_BYTES });
        }
        let mut stack = LoadState::default();
        let (root, provenance) = load_text(text, name, &normalize(name), &mut stack)?;
        Ok(Config { root, provenance, file: Some(normalize(name)) })
    }

    /// The top-level file this config was loaded from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The whole merged document (always a mapping).
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The value at a dotted key path (`model.backbone.depths.0`); the empty path is the root.
    /// Numeric components index into lists. `None` if the path does not exist.
    pub fn get(&self, path: &str) -> Option<&Value> {
        if path.is_empty() {
            return Some(&self.root);
        }
        let mut cur = &self.root;
        for comp in path.split('.') {
            cur = match cur {
                Value::Mapping(m) => m.get(find_key(m, comp)?)?,
                Value::Sequence(s) => s.get(comp.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Where the value at `path` came from: the origin recorded for the path itself, or else
    /// for its nearest recorded ancestor. `None` only for a config with no provenance at all.
    pub fn origin(&self, path: &str) -> Option<&Origin> {
        let mut p = path;
        loop {
            if let Some(o) = self.provenance.get(p) {
                return Some(o);
            }
            if p.is_empty() {
                return None;
            }
            p = match p.rfind('.') {
                Some(i) => &p[..i],
                None => "",
            };
        }
    }

    /// Every recorded key path with the origin that last set it, in path order.
    pub fn provenance(&self) -> impl Iterator<Item = (&str, &Origin)> {
        self.provenance.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Applies `--cfg-options` overrides, each `a.b.c=value`, in order.
    ///
    /// The value is parsed as YAML (`lr=1e-4` is a float, `epochs=12` an integer, `flag=true` a
    /// bool, `name=foo` a string, `x=[1,2]` a list, `x=` null). Missing intermediate mappings are
    /// created; numeric components index into existing lists (`a.0.b=1`). The value replaces
    /// what was there (no deep merge). On error the config is left unchanged and the error
    /// ([`ConfigError::BadOverride`]) names the offending override.
    pub fn apply_overrides<S: AsRef<str>>(&mut self, overrides: &[S]) -> Result<(), ConfigError> {
        let mut next = self.clone();
        for text in overrides {
            next.apply_override(text.as_ref())?;
        }
        *self = next;
        Ok(())
    }

    fn apply_override(&mut self, text: &str) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::BadOverride { text: text.to_string(), reason };
        let (key, raw) = text.split_once('=').ok_or_else(|| bad("expected KEY=VALUE".into()))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(bad("empty key".into()));
        }
        let comps: Vec<&str> = key.split('.').collect();
        if comps.iter().any(|c| c.is_empty()) {
            return Err(bad(format!("empty component in key path `{key}`")));
        }
        if comps.iter().any(|c| *c == BASE_KEY || *c == DELETE_KEY) {
            return Err(bad(format!("`{BASE_KEY}` and `{DELETE_KEY}` cannot be overridden")));
        }
        let mut value: Value =
            serde_yaml::from_str(raw.trim()).map_err(|e| bad(format!("value `{raw}` is not valid YAML: {e}")))?;
        // Merge keys (`<<`) mean in an override what they mean in a file; resolving them here
        // also keeps the merged config printable as YAML that loads back.
        resolve_merge_keys(&mut value).map_err(|e| bad(format!("value `{raw}`: {e}")))?;
        let value = strip_delete(value);

        set_path(&mut self.root, &comps, value.clone()).map_err(bad)?;

        // Provenance: new intermediate containers and the whole new subtree come from here.
        for i in 1..comps.len() {
            let prefix = comps[..i].join(".");
            self.provenance.entry(prefix).or_insert(Origin::CfgOptions);
        }
        let full = comps.join(".");
        remove_subtree(&mut self.provenance, &full);
        record_all(&value, &full, &Origin::CfgOptions, &mut self.provenance);
        Ok(())
    }

    /// The merged document as YAML text (what `nextdet print-config` prints).
    pub fn to_yaml_string(&self) -> Result<String, ConfigError> {
        serde_yaml::to_string(&self.root).map_err(|e| ConfigError::Invalid {
            file: self.describe_file(),
            key_path: String::new(),
            message: format!("cannot serialize config: {e}"),
        })
    }

    /// Deserializes the subtree at the dotted `path` (empty: the whole document) into `T`.
    ///
    /// Typed sections use `#[serde(deny_unknown_fields)]`, so a typo is an error. Any error
    /// (unknown field, wrong type, missing field) is a [`ConfigError::Invalid`] carrying the
    /// full dotted key path of the offending item and the file that set it (the origin of the
    /// nearest recorded ancestor). A path that does not exist is deserialized from null, so an
    /// `Option<T>` section may be absent; for anything else it is a "missing section" error.
    pub fn section<T: DeserializeOwned>(&self, path: &str) -> Result<T, ConfigError> {
        let found = self.get(path);
        let value = found.cloned().unwrap_or(Value::Null);
        let err = match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => return Ok(t),
            Err(err) => err,
        };
        let message = err.inner().to_string();
        if found.is_none() {
            return Err(ConfigError::Invalid {
                file: self.describe_file(),
                key_path: path.to_string(),
                message: format!("missing section ({message})"),
            });
        }
        let mut key_path = path.to_string();
        for seg in err.path().iter() {
            use serde_path_to_error::Segment;
            let comp = match seg {
                Segment::Seq { index } => index.to_string(),
                Segment::Map { key } => key.clone(),
                Segment::Enum { variant } => variant.clone(),
                Segment::Unknown => continue,
            };
            key_path = join(&key_path, &comp);
        }
        let (key_path, message, origin) = self.locate(key_path, message);
        let file = origin
            .or_else(|| self.origin(&key_path).cloned())
            .map(|o| o.to_string())
            .unwrap_or_else(|| self.describe_file());
        Err(ConfigError::Invalid { file, key_path, message: error::with_suggestion(&message) })
    }

    /// Narrows an error serde reported at `at` to the offending key, from what the message names:
    /// an unknown field, a field a validating type names first (`` `lr` must be ...``, the name
    /// then dropped from the message), an unknown variant (the key holding that value), a missing
    /// field (the one mapping under `at` that lacks it), or an invalid scalar (the one key under
    /// `at` holding it). serde reports positions inside internally tagged enums and flattened
    /// structs at the enum, so without this an error in `model.backbone` would be reported at
    /// `model` and blamed on the file that set `model`, even when `--cfg-options` set the
    /// backbone. Where several keys fit, the position stays `at`, and the returned origin is the
    /// one all of them share, if they share one.
    fn locate(&self, at: String, message: String) -> (String, String, Option<Origin>) {
        if let Some(field) = unknown_field_name(&message) {
            return (self.locate_unknown_field(&at, field), message, None);
        }
        if let Some((field, rest)) = leading_field(&message) {
            let path = self.locate_unknown_field(&at, field);
            if self.get(&path).is_some() {
                return (path, rest.to_string(), None);
            }
            return (at, message, None);
        }
        let Some(value) = self.get(&at) else { return (at, message, None) };
        let mut found = Vec::new();
        if let Some(variant) = quoted_after(&message, "unknown variant `") {
            find_paths(value, &at, &mut found, &|v| v.as_str() == Some(variant));
        } else if let Some(field) = quoted_after(&message, "missing field `") {
            let lacks = |v: &Value| matches!(v, Value::Mapping(m) if find_key(m, field).is_none());
            find_paths(value, &at, &mut found, &lacks);
        } else if let Some(scalar) = invalid_scalar(&message) {
            find_paths(value, &at, &mut found, &|v| scalar_matches(v, &scalar));
        }
        match found.as_slice() {
            [one] => (one.clone(), message, None),
            [first, rest @ ..] => {
                let origin = self.origin(first).cloned();
                let shared = rest.iter().all(|p| self.origin(p) == origin.as_ref());
                (at, message, if shared { origin } else { None })
            }
            [] => (at, message, None),
        }
    }

    /// The full path of an unknown `field` reported at `at`: `at` itself when it already ends
    /// with the field, else `at.field`; when the reported position is imprecise (serde loses the path inside internally tagged enums and
    /// flattened structs), the first key named `field` found under `at`.
    fn locate_unknown_field(&self, at: &str, field: &str) -> String {
        // serde_path_to_error usually reports the unknown key itself as the last component.
        let already_there = at == field || at.ends_with(&format!(".{field}"));
        if already_there && self.get(at).is_some() {
            return at.to_string();
        }
        let direct = join(at, field);
        if self.get(&direct).is_some() {
            return direct;
        }
        self.get(at).and_then(|v| find_key_path(v, at, field)).unwrap_or(direct)
    }

    fn describe_file(&self) -> String {
        match &self.file {
            Some(p) => p.display().to_string(),
            None => "<config>".to_string(),
        }
    }
}

impl fmt::Display for Config {
    /// Writes the merged document as YAML.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_yaml_string().map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

/// One file on the `_base_` stack: its canonical path (for cycle detection) and its display path.
type StackEntry = (PathBuf, PathBuf);

/// The state of one load: the `_base_` stack and how many files were read so far.
#[derive(Default)]
struct LoadState {
    stack: Vec<StackEntry>,
    files: usize,
}

/// Reads at most [`MAX_CONFIG_BYTES`] of `path` as UTF-8 text; a longer file (or an endless
/// one such as `/dev/zero`) is [`ConfigError::TooLarge`] without reading the rest.
fn read_bounded(path: &Path, shown: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let io_err = |source| ConfigError::Io { path: shown.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { path: shown.to_path_buf(), limit: MAX_CONFIG_BYTES });
    }
    String::from_utf8(bytes)
        .map_err(|e| ConfigError::NotText { path: shown.to_path_buf(), offset: e.utf8_error().valid_up_to() })
}

/// Reads `path` (opened as given; `shown` is the normalized display path) and resolves its bases.
fn load_file(path: &Path, shown: &Path, state: &mut LoadState) -> Result<(Value, Provenance), ConfigError> {
    let io_err = |source| ConfigError::Io { path: shown.to_path_buf(), source };
    let canonical = std::fs::canonicalize(path).map_err(io_err)?;
    if let Some(pos) = state.stack.iter().position(|(c, _)| *c == canonical) {
        let mut chain: Vec<PathBuf> = state.stack[pos..].iter().map(|(_, s)| s.clone()).collect();
        chain.push(shown.to_path_buf());
        return Err(ConfigError::BaseCycle { chain });
    }
    let text = read_bounded(path, shown)?;
    state.stack.push((canonical, shown.to_path_buf()));
    let result = load_text(&text, path, shown, state);
    state.stack.pop();
    result
}

/// Parses `text` (the contents of `path`), loads and merges its bases, then merges it on top.
fn load_text(text: &str, path: &Path, shown: &Path, state: &mut LoadState) -> Result<(Value, Provenance), ConfigError> {
    state.files += 1;
    if state.files > MAX_CONFIG_FILES {
        let including = state.stack.iter().rev().nth(1).map_or(shown, |(_, s)| s.as_path());
        return Err(ConfigError::TooManyFiles { path: including.to_path_buf(), limit: MAX_CONFIG_FILES });
    }
    if let Some((line, column)) = limits::nesting_beyond(text, MAX_CONFIG_DEPTH) {
        return Err(ConfigError::TooDeep { path: shown.to_path_buf(), limit: MAX_CONFIG_DEPTH, line, column });
    }
    let mut doc: Value =
        serde_yaml::from_str(text).map_err(|source| ConfigError::Yaml { path: shown.to_path_buf(), source })?;
    // YAML merge keys (`<<: *anchor`), so one stage's head can be repeated with a change.
    resolve_merge_keys(&mut doc).map_err(|source| ConfigError::Yaml { path: shown.to_path_buf(), source })?;
    let mut own = match doc {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        other => {
            return Err(ConfigError::invalid(
                shown,
                "",
                format!("a config file must be a mapping at top level, found {}", kind(&other)),
            ))
        }
    };
    let bases = parse_bases(own.remove(BASE_KEY), shown)?;

    let dir = path.parent().unwrap_or_else(|| Path::new(""));
    let mut merged = Value::Mapping(Mapping::new());
    let mut provenance = Provenance::new();
    for base in bases {
        let resolved = dir.join(&base);
        let resolved_shown = normalize(&resolved);
        if !resolved.exists() {
            return Err(ConfigError::BaseNotFound { including: shown.to_path_buf(), base, resolved: resolved_shown });
        }
        let (value, base_prov) = load_file(&resolved, &resolved_shown, state)?;
        merge(&mut merged, &mut provenance, "", value, &base_prov);
    }

    let own = Value::Mapping(own);
    check_delete_flags(&own, "", shown)?;
    let mut own_prov = Provenance::new();
    record_all(&own, "", &Origin::File(shown.to_path_buf()), &mut own_prov);
    merge(&mut merged, &mut provenance, "", own, &own_prov);
    Ok((merged, provenance))
}

/// Applies YAML merge keys (`<<`) until none is left. serde_yaml's `apply_merge` merges one
/// level: a merged mapping that itself holds a `<<` key brings that key in unresolved (`a: {<<:
/// {<<: 0}}` became `a: {<<: 0}`, a config that printed as YAML that does not load). Each pass
/// resolves the outermost merge keys, so the nesting bound ends the loop.
fn resolve_merge_keys(value: &mut Value) -> Result<(), serde_yaml::Error> {
    fn has_merge_key(v: &Value) -> bool {
        match v {
            Value::Mapping(m) => m.iter().any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
            Value::Sequence(s) => s.iter().any(has_merge_key),
            Value::Tagged(t) => has_merge_key(&t.value),
            _ => false,
        }
    }
    for _ in 0..=MAX_CONFIG_DEPTH {
        if !has_merge_key(value) {
            return Ok(());
        }
        value.apply_merge()?;
    }
    Err(serde::de::Error::custom(format!("merge keys (`<<`) nested more than {MAX_CONFIG_DEPTH} levels deep")))
}

/// The entries of a `_base_` value: absent/null, one string, or a list of strings.
fn parse_bases(value: Option<Value>, shown: &Path) -> Result<Vec<String>, ConfigError> {
    let bad = || ConfigError::invalid(shown, BASE_KEY, "`_base_` must be a file path or a list of file paths");
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Sequence(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// Rejects a `_delete_` whose value is not a bool.
fn check_delete_flags(value: &Value, path: &str, shown: &Path) -> Result<(), ConfigError> {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                let ks = key_string(k);
                if ks == DELETE_KEY {
                    if !matches!(v, Value::Bool(_)) {
                        return Err(ConfigError::invalid(
                            shown,
                            join(path, DELETE_KEY),
                            format!("`{DELETE_KEY}` must be true or false, found {}", kind(v)),
                        ));
                    }
                } else {
                    check_delete_flags(v, &join(path, &ks), shown)?;
                }
            }
            Ok(())
        }
        Value::Sequence(s) => {
            for (i, v) in s.iter().enumerate() {
                check_delete_flags(v, &join(path, &i.to_string()), shown)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Merges `src` (with provenance `src_prov`, keyed by full paths) into `dst` at `path`.
fn merge(dst: &mut Value, prov: &mut Provenance, path: &str, src: Value, src_prov: &Provenance) {
    match (dst, src) {
        (Value::Mapping(d), Value::Mapping(mut s)) if !wants_delete(&s) => {
            s.remove(DELETE_KEY);
            if let Some(o) = src_prov.get(path) {
                prov.insert(path.to_string(), o.clone());
            }
            for (k, v) in s {
                let child = join(path, &key_string(&k));
                match d.get_mut(&k) {
                    Some(existing) => merge(existing, prov, &child, v, src_prov),
                    None => {
                        remove_subtree(prov, &child);
                        copy_subtree(prov, src_prov, &child);
                        d.insert(k, strip_delete(v));
                    }
                }
            }
        }
        (dst, src) => {
            *dst = strip_delete(src);
            remove_subtree(prov, path);
            copy_subtree(prov, src_prov, path);
        }
    }
}

fn wants_delete(m: &Mapping) -> bool {
    matches!(m.get(DELETE_KEY), Some(Value::Bool(true)))
}

/// Removes every `_delete_` key, at any depth.
fn strip_delete(value: Value) -> Value {
    match value {
        Value::Mapping(m) => Value::Mapping(
            m.into_iter().filter(|(k, _)| k.as_str() != Some(DELETE_KEY)).map(|(k, v)| (k, strip_delete(v))).collect(),
        ),
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(strip_delete).collect()),
        other => other,
    }
}

/// Records `origin` for `path` and every path below it (skipping `_delete_` markers).
fn record_all(value: &Value, path: &str, origin: &Origin, prov: &mut Provenance) {
    prov.insert(path.to_string(), origin.clone());
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                let ks = key_string(k);
                if ks != DELETE_KEY {
                    record_all(v, &join(path, &ks), origin, prov);
                }
            }
        }
        Value::Sequence(s) => {
            for (i, v) in s.iter().enumerate() {
                record_all(v, &join(path, &i.to_string()), origin, prov);
            }
        }
        _ => {}
    }
}

fn in_subtree(key: &str, path: &str) -> bool {
    path.is_empty() || key == path || (key.starts_with(path) && key.as_bytes().get(path.len()) == Some(&b'.'))
}

fn remove_subtree(prov: &mut Provenance, path: &str) {
    prov.retain(|k, _| !in_subtree(k, path));
}

fn copy_subtree(prov: &mut Provenance, src: &Provenance, path: &str) {
    for (k, o) in src {
        if in_subtree(k, path) {
            prov.insert(k.clone(), o.clone());
        }
    }
}

/// Sets the value at `comps`, creating missing intermediate mappings. Errors are reasons.
fn set_path(root: &mut Value, comps: &[&str], value: Value) -> Result<(), String> {
    let mut cur = root;
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let here = comps[..i].join(".");
        if cur.is_null() {
            *cur = Value::Mapping(Mapping::new());
        }
        cur = match cur {
            Value::Mapping(m) => {
                let key = find_key(m, comp).cloned().unwrap_or_else(|| Value::String(comp.to_string()));
                if last {
                    m.insert(key, value);
                    return Ok(());
                }
                m.entry(key).or_insert_with(|| Value::Mapping(Mapping::new()))
            }
            Value::Sequence(s) => {
                let len = s.len();
                let index: usize =
                    comp.parse().map_err(|_| format!("`{here}` is a list, and `{comp}` is not an index"))?;
                let slot = s
                    .get_mut(index)
                    .ok_or_else(|| format!("index {index} is out of range: `{here}` has {len} items"))?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            other => return Err(format!("`{here}` is {}, so it has no key `{comp}`", kind(other))),
        };
    }
    Ok(())
}

/// The key of `m` whose string form is `comp` (string keys first, then numbers/bools).
fn find_key<'a>(m: &'a Mapping, comp: &str) -> Option<&'a Value> {
    m.keys().find(|k| k.as_str() == Some(comp)).or_else(|| m.keys().find(|k| key_string(k) == comp))
}

/// The first dotted path under `value` (itself at `path`) whose last key is `field`.
fn find_key_path(value: &Value, path: &str, field: &str) -> Option<String> {
    match value {
        Value::Mapping(m) => {
            if m.keys().any(|k| key_string(k) == field) {
                return Some(join(path, field));
            }
            m.iter().find_map(|(k, v)| find_key_path(v, &join(path, &key_string(k)), field))
        }
        Value::Sequence(s) => {
            s.iter().enumerate().find_map(|(i, v)| find_key_path(v, &join(path, &i.to_string()), field))
        }
        _ => None,
    }
}

/// The field name of serde's "unknown field `x`, expected ..." message.
fn unknown_field_name(message: &str) -> Option<&str> {
    quoted_after(message, "unknown field `")
}

/// The name between `prefix` (ending in a backquote) at the start of `message` and the next
/// backquote.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    Some(&rest[..end])
}

/// A message of a validating type that starts with the field it is about: `` `lr` must be
/// greater than 0 `` gives (`lr`, `must be greater than 0`).
fn leading_field(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix('`')?;
    let end = rest.find('`')?;
    let field = &rest[..end];
    let ok = !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let after = rest[end + 1..].strip_prefix(' ')?;
    ok.then_some((field, after))
}

/// The scalar serde's "invalid type: integer `3`, expected ..." (or "invalid value: ...") found,
/// as the YAML value it was read from.
fn invalid_scalar(message: &str) -> Option<Value> {
    let rest = message.strip_prefix("invalid type: ").or_else(|| message.strip_prefix("invalid value: "))?;
    let (what, _) = rest.split_once(", expected")?;
    if let Some(s) = what.strip_prefix("string \"").and_then(|s| s.strip_suffix('"')) {
        return Some(Value::String(s.to_string()));
    }
    if what == "unit value" {
        return Some(Value::Null);
    }
    let inner = ["integer `", "floating point `", "boolean `"]
        .iter()
        .find_map(|p| what.strip_prefix(p))
        .and_then(|s| s.strip_suffix('`'))?;
    serde_yaml::from_str(inner).ok()
}

/// True when the YAML value `v` is the scalar `want` (numbers compared as numbers).
fn scalar_matches(v: &Value, want: &Value) -> bool {
    match (v, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// Every dotted path under `value` (itself at `path`, included) whose value satisfies `pred`, in
/// document order.
fn find_paths(value: &Value, path: &str, out: &mut Vec<String>, pred: &dyn Fn(&Value) -> bool) {
    if pred(value) {
        out.push(path.to_string());
    }
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                find_paths(v, &join(path, &key_string(k)), out, pred);
            }
        }
        Value::Sequence(s) => {
            for (i, v) in s.iter().enumerate() {
                find_paths(v, &join(path, &i.to_string()), out, pred);
            }
        }
        _ => {}
    }
}

/// The string form of a mapping key, as used in dotted paths.
fn key_string(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => serde_yaml::to_string(other).map(|s| s.trim().to_string()).unwrap_or_default(),
    }
}

fn join(path: &str, comp: &str) -> String {
    if path.is_empty() {
        comp.to_string()
    } else {
        format!("{path}.{comp}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Lexically normalizes a path: drops `.` and folds `dir/..`, keeping leading `..`.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_parent_dirs() {
        assert_eq!(normalize(Path::new("configs/det/../_base_/./x.yaml")), PathBuf::from("configs/_base_/x.yaml"));
        assert_eq!(normalize(Path::new("../a/../../b.yaml")), PathBuf::from("../../b.yaml"));
        assert_eq!(normalize(Path::new("/../x.yaml")), PathBuf::from("/x.yaml"));
    }

    #[test]
    fn unknown_field_is_parsed() {
        assert_eq!(unknown_field_name("unknown field `drop_path_rte`, expected one of `a`"), Some("drop_path_rte"));
        assert_eq!(unknown_field_name("missing field `a`"), None);
    }

    #[test]
    fn subtree_membership_respects_component_boundaries() {
        assert!(in_subtree("model.backbone", "model"));
        assert!(in_subtree("model", "model"));
        assert!(!in_subtree("model_ema", "model"));
        assert!(in_subtree("anything", ""));
    }
}
