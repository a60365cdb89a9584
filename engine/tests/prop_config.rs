//! Property test of the config loader: thousands of YAML documents (generated trees in mixed
//! block and flow style with tricky scalars, `_base_`, `_delete_`, anchors and merge keys, and
//! byte-mutated copies of the shipped configs), random `_base_` trees of files (cycles, missing
//! files, diamonds, `_delete_`), and random `--cfg-options` overrides. Every one loads or gives
//! an error, never a panic or an abort, with memory bounded by the input's size; what loads
//! prints as YAML that loads back to the same document, every key path of its provenance
//! exists, and a successful override is what `get` then returns, with `--cfg-options` as its
//! origin. `NEXTDET_PROPTEST_CASES` sets the cases.

#[path = "../../tests/property/support.rs"]
mod support;

use nextdet_engine::config::{Config, Origin};
use nextdet_engine::optim::OptimizerConfig;
use nextdet_engine::schedule::LrScheduleConfig;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_yaml::Value;
use std::cell::Cell;
use std::path::Path;
use support::{bounded, config, mutated};

/// Keys, including the loader's own and ones that look like numbers, bools or paths.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,6}",
        1 => Just("_base_".to_string()),
        1 => Just("_delete_".to_string()),
        1 => Just("<<".to_string()),
        1 => prop_oneof![Just("0"), Just("1"), Just("true"), Just("null"), Just("a.b"), Just("~"), Just("")]
            .prop_map(str::to_string),
    ]
}

/// Scalars as YAML text: numbers, bools, nulls, special floats, quoted and odd strings, paths.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        prop_oneof![
            Just("true"),
            Just("null"),
            Just("~"),
            Just(".nan"),
            Just("-.inf"),
            Just("0x1F"),
            Just("0o17"),
            Just("1e-4"),
            Just("''"),
            Just("\"\\u00e9\\t\""),
            Just("'it''s'"),
            Just("base.yaml"),
            Just("../x.yaml"),
            Just("/dev/zero"),
            Just("!!binary aGk="),
            Just("*a"),
            Just("&a 1"),
            Just("|\n  text"),
        ]
        .prop_map(str::to_string),
        "[a-zA-Z0-9_ ./-]{0,12}",
    ]
}

/// A YAML tree rendered as text: each mapping or list in block or flow style.
#[derive(Debug, Clone)]
enum Tree {
    Scalar(String),
    Map(Vec<(String, Tree)>, bool),
    List(Vec<Tree>, bool),
}

fn tree() -> impl Strategy<Value = Tree> {
    scalar().prop_map(Tree::Scalar).prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            (prop::collection::vec((key(), inner.clone()), 0..5), any::<bool>()).prop_map(|(m, f)| Tree::Map(m, f)),
            (prop::collection::vec(inner, 0..5), any::<bool>()).prop_map(|(l, f)| Tree::List(l, f)),
        ]
    })
}

fn render_flow(t: &Tree) -> String {
    match t {
        Tree::Scalar(s) => s.replace('\n', " "),
        Tree::Map(m, _) => {
            let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {}", render_flow(v))).collect();
            format!("{{{}}}", items.join(", "))
        }
        Tree::List(l, _) => format!("[{}]", l.iter().map(render_flow).collect::<Vec<_>>().join(", ")),
    }
}

fn render_block(t: &Tree, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match t {
        Tree::Map(m, false) if !m.is_empty() => {
            for (k, v) in m {
                let nested_block = match v {
                    Tree::Map(c, false) => !c.is_empty(),
                    Tree::List(l, false) => !l.is_empty(),
                    _ => false,
                };
                if nested_block {
                    out.push_str(&format!("{pad}{k}:\n"));
                    render_block(v, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}{k}: {}\n", render_flow(v)));
                }
            }
        }
        Tree::List(l, false) if !l.is_empty() => {
            for v in l {
                match v {
                    Tree::Map(c, false) if !c.is_empty() => {
                        out.push_str(&format!("{pad}-\n"));
                        render_block(v, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", render_flow(v))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", render_flow(other))),
    }
}

/// A generated document: a top-level mapping, optionally with a `_base_` line and an anchor that
/// later keys merge.
fn document() -> impl Strategy<Value = String> {
    (prop::collection::vec((key(), tree()), 0..6), prop::option::of(scalar()), any::<bool>()).prop_map(
        |(items, base, anchors)| {
            let mut out = String::new();
            if let Some(b) = base {
                out.push_str(&format!("_base_: {}\n", b.replace('\n', " ")));
            }
            if anchors {
                out.push_str("shared: &s {a: 1, b: [2, 3]}\n");
            }
            for (i, (k, v)) in items.iter().enumerate() {
                let mut body = String::new();
                render_block(v, 2, &mut body);
                if anchors && i == 0 {
                    out.push_str(&format!("{k}_{i}:\n  <<: *s\n  c: 4\n"));
                }
                out.push_str(&format!("{k}{i}:\n{body}"));
            }
            out
        },
    )
}

/// Loads `text`, bounded; when it loads, checks that it prints as YAML that loads back to the
/// same document and that its provenance names only paths that exist.
fn load_text(dir: &Path, text: &[u8], loaded: &Cell<usize>) -> Result<(), TestCaseError> {
    let Ok(text) = std::str::from_utf8(text) else { return Ok(()) };
    let name = dir.join("cfg.yaml");
    let cfg = bounded("Config::from_yaml_str", text.len(), 512, 4 << 20, || Config::from_yaml_str(text, &name));
    let Ok(cfg) = cfg else { return Ok(()) };
    loaded.set(loaded.get() + 1);
    check_loaded(&cfg)
}

/// True when a mapping key anywhere in `v` contains a dot: such a key cannot be named by a
/// dotted path (`a.b` is `b` inside `a`), so the provenance check skips those documents.
fn has_dotted_key(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => m.iter().any(|(k, v)| k.as_str().is_some_and(|k| k.contains('.')) || has_dotted_key(v)),
        Value::Sequence(s) => s.iter().any(has_dotted_key),
        Value::Tagged(t) => has_dotted_key(&t.value),
        _ => false,
    }
}

fn check_loaded(cfg: &Config) -> Result<(), TestCaseError> {
    if !has_dotted_key(cfg.root()) {
        for (path, _) in cfg.provenance() {
            prop_assert!(cfg.get(path).is_some(), "provenance names `{path}`, which does not exist");
        }
    }
    prop_assert!(cfg.get("_base_").is_none());
    // What print-config prints loads back to the same document (typed values included).
    if let Ok(printed) = cfg.to_yaml_string() {
        match Config::from_yaml_str(&printed, "printed.yaml") {
            Ok(again) => prop_assert_eq!(again.root(), cfg.root(), "printed:\n{}", printed),
            Err(e) => prop_assert!(false, "print-config output does not load: {e}\n{printed}"),
        }
    }
    // Typed sections never panic.
    let _ = cfg.section::<OptimizerConfig>("optimizer");
    let _ = cfg.section::<LrScheduleConfig>("lr_config");
    let _ = cfg.section::<Value>("");
    Ok(())
}

/// A file of a random `_base_` tree: its bases (indices into the set, or a missing name), its
/// own keys, and whether they carry `_delete_: true`.
type BaseFile = (Vec<Option<usize>>, Vec<(String, Tree)>, bool);

fn file_set() -> impl Strategy<Value = Vec<BaseFile>> {
    prop::collection::vec(
        (
            prop::collection::vec(prop::option::weighted(0.9, 0usize..5), 0..4),
            prop::collection::vec((prop_oneof!["[a-c]", Just("_delete_".to_string())], tree()), 0..4),
            any::<bool>(),
        ),
        1..5,
    )
}

/// An override `key=value`: dotted keys of short, numeric, empty or reserved components, and
/// values as YAML text.
fn override_text() -> impl Strategy<Value = String> {
    let comp = prop_oneof![4 => "[a-c]", 2 => "[0-3]", 1 => Just(String::new()), 1 => Just("_base_".to_string())];
    (prop::collection::vec(comp, 1..4), prop_oneof![scalar(), tree().prop_map(|t| render_flow(&t))], any::<bool>())
        .prop_map(|(comps, value, eq)| format!("{}{}{value}", comps.join("."), if eq { "=" } else { "" }))
}

#[test]
fn configs_load_or_give_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The shipped configs' bases are found next to the generated file.
    let copy = |rel: &str| {
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(rel), &to).unwrap();
    };
    for rel in [
        "configs/_base_/models/mask_rcnn_convnext_fpn.yaml",
        "configs/_base_/datasets/shapes_instance.yaml",
        "configs/_base_/schedules/adamw_3x.yaml",
    ] {
        copy(rel);
    }
    let shapes = dir.path().join("configs/shapes");
    std::fs::create_dir_all(&shapes).unwrap();
    let loaded = Cell::new(0);

    // Generated documents.
    let mut runner = TestRunner::new(config(1500));
    runner.run(&document(), |text| load_text(&shapes, text.as_bytes(), &loaded)).unwrap();

    // Mutated shipped configs (with their real `_base_` files).
    for name in ["mask_rcnn_convnext_atto_shapes.yaml", "convnext_atto_shapes_cls.yaml"] {
        let seed = std::fs::read(root.join("configs/shapes").join(name)).unwrap();
        let mut runner = TestRunner::new(config(500));
        runner.run(&mutated(seed), |bytes| load_text(&shapes, &bytes, &loaded)).unwrap();
    }

    // `_base_` trees.
    let mut runner = TestRunner::new(config(500));
    runner
        .run(&file_set(), |files| {
            let tree_dir = tempfile::tempdir_in(dir.path()).unwrap();
            for (i, (bases, items, delete)) in files.iter().enumerate() {
                let bases: Vec<String> = bases
                    .iter()
                    .map(|b| b.map_or("missing.yaml".to_string(), |j| format!("f{}.yaml", j % files.len())))
                    .collect();
                let mut text = format!("_base_: [{}]\n", bases.join(", "));
                for (k, v) in items {
                    let mut body = String::new();
                    render_block(v, 2, &mut body);
                    let del = if *delete { "  _delete_: true\n" } else { "" };
                    text.push_str(&format!("{k}:\n{del}{body}"));
                }
                std::fs::write(tree_dir.path().join(format!("f{i}.yaml")), text).unwrap();
            }
            let top = tree_dir.path().join("f0.yaml");
            let total: usize = (0..files.len())
                .map(|i| std::fs::metadata(tree_dir.path().join(format!("f{i}.yaml"))).unwrap().len() as usize)
                .sum();
            // Each file may be loaded several times (diamonds), up to the 256-file bound.
            let cfg = bounded("Config::from_file", total * 256, 512, 4 << 20, || Config::from_file(&top));
            if let Ok(cfg) = cfg {
                loaded.set(loaded.get() + 1);
                prop_assert!(!serde_yaml::to_string(cfg.root()).unwrap().contains("_delete_"));
                check_loaded(&cfg)?;
            }
            Ok(())
        })
        .unwrap();

    // `--cfg-options` on a shipped config.
    let base = dir.path().join("configs/shapes/mask_rcnn_convnext_atto_shapes.yaml");
    std::fs::copy(root.join("configs/shapes/mask_rcnn_convnext_atto_shapes.yaml"), &base).unwrap();
    let original = Config::from_file(&base).unwrap();
    let mut runner = TestRunner::new(config(1500));
    runner
        .run(&prop::collection::vec(override_text(), 1..4), |overrides| {
            let mut cfg = original.clone();
            match cfg.apply_overrides(&overrides) {
                Err(_) => prop_assert_eq!(&cfg, &original, "a failed override changed the config"),
                Ok(()) => {
                    let last = overrides.last().unwrap();
                    let (k, v) = last.split_once('=').unwrap();
                    let mut want: Value = serde_yaml::from_str(v.trim()).unwrap();
                    while serde_yaml::to_string(&want).unwrap().contains("<<") && want.apply_merge().is_ok() {}
                    if !serde_yaml::to_string(&want).unwrap().contains("_delete_") {
                        prop_assert_eq!(cfg.get(k.trim()), Some(&want), "after {:?}", overrides);
                    }
                    prop_assert_eq!(cfg.origin(k.trim()), Some(&Origin::CfgOptions));
                    check_loaded(&cfg)?;
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!("{} of the generated or mutated configs loaded", loaded.get());
}
