//! Tests of the generic config layer: `_base_` inheritance, deep merge, `_delete_`,
//! `--cfg-options` overrides, typed sections and their error messages.

use nextdet_engine::config::{Config, ConfigError, Origin};
use serde::Deserialize;
use serde_yaml::Value;
use std::path::{Path, PathBuf};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs").join(rel)
}

fn load(rel: &str) -> Config {
    Config::from_file(fixture(rel)).unwrap_or_else(|e| panic!("loading {rel}: {e}"))
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

/// The origin of `key`, as a path relative to the fixtures directory.
fn origin_rel(cfg: &Config, key: &str) -> String {
    match cfg.origin(key).unwrap() {
        Origin::File(p) => p
            .strip_prefix(fixture(""))
            .unwrap_or_else(|_| panic!("{} is not under the fixtures", p.display()))
            .display()
            .to_string(),
        Origin::CfgOptions => "--cfg-options".to_string(),
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct BackboneCfg {
    #[serde(rename = "type")]
    kind: String,
    depths: Vec<usize>,
    dims: Vec<usize>,
    drop_path_rate: f64,
    out_indices: Vec<usize>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct NeckCfg {
    #[serde(rename = "type")]
    kind: String,
    out_channels: usize,
    num_outs: usize,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct BboxHeadCfg {
    num_classes: usize,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct RoiHeadCfg {
    bbox_head: BboxHeadCfg,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ModelCfg {
    #[serde(rename = "type")]
    kind: String,
    backbone: BackboneCfg,
    neck: NeckCfg,
    roi_head: RoiHeadCfg,
}

/// An mmdet-style `type:`-tagged model, to check error paths through internally tagged enums.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", deny_unknown_fields)]
enum TaggedModel {
    MaskRCNN { backbone: BackboneCfg, neck: NeckCfg, roi_head: RoiHeadCfg },
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct OptimizerCfg {
    #[serde(rename = "type")]
    kind: String,
    lr: f64,
    weight_decay: f64,
    betas: (f64, f64),
}

// ---------------------------------------------------------------------------------------------
// Inheritance and merging
// ---------------------------------------------------------------------------------------------

#[test]
fn base_of_base_and_deep_merge() {
    let cfg = load("det/mask_rcnn_convnext_s_3x.yaml");
    // From convnext_s.yaml (a base of the file), overriding its own base convnext_t.yaml.
    assert_eq!(cfg.get("model.backbone.depths"), Some(&yaml("[3, 3, 27, 3]")));
    assert_eq!(cfg.get("model.backbone.drop_path_rate"), Some(&yaml("0.6")));
    // Kept from convnext_t.yaml (the base of the base) through the deep merge.
    assert_eq!(cfg.get("model.backbone.dims"), Some(&yaml("[96, 192, 384, 768]")));
    assert_eq!(cfg.get("model.backbone.type"), Some(&yaml("ConvNeXt")));
    assert_eq!(cfg.get("model.neck.out_channels"), Some(&yaml("256")));
    // Set by the file itself, deep inside an inherited mapping.
    assert_eq!(cfg.get("model.roi_head.bbox_head.num_classes"), Some(&yaml("3")));
    assert_eq!(cfg.get("optimizer.lr"), Some(&yaml("0.0002")));
    assert_eq!(cfg.get("optimizer.weight_decay"), Some(&yaml("0.05")));
    assert_eq!(cfg.get("optimizer.type"), Some(&yaml("AdamW")));
    // From the runtime base.
    assert_eq!(cfg.get("log_interval"), Some(&yaml("50")));
    assert_eq!(cfg.get("seed"), Some(&Value::Null));
    // Inheritance keys never survive into the merged document.
    assert_eq!(cfg.get("_base_"), None);
    assert_eq!(cfg.get("model._base_"), None);
    // Lookups of absent paths.
    assert_eq!(cfg.get("model.backbone.nope"), None);
    assert_eq!(cfg.get("model.backbone.depths.7"), None);
    assert_eq!(cfg.get("model.backbone.depths.x"), None);
    assert_eq!(cfg.get("model.backbone.depths.2"), Some(&yaml("27")));
}

#[test]
fn list_of_bases_merges_in_order() {
    // schedule_1x then schedule_3x: the later base wins, lists replace rather than merge.
    let cfg = load("det/mask_rcnn_convnext_s_3x.yaml");
    assert_eq!(cfg.get("lr_config.step"), Some(&yaml("[27, 33]")));
    assert_eq!(cfg.get("total_epochs"), Some(&yaml("36")));
    assert_eq!(cfg.get("lr_config.policy"), Some(&yaml("step")));
    assert_eq!(cfg.get("lr_config.warmup_iters"), Some(&yaml("500")));

    // The same two bases in the opposite order.
    let rev = load("det/bases_reversed.yaml");
    assert_eq!(rev.get("lr_config.step"), Some(&yaml("[8, 11]")));
    assert_eq!(rev.get("total_epochs"), Some(&yaml("12")));
}

#[test]
fn provenance_names_the_file_that_set_each_key() {
    let cfg = load("det/mask_rcnn_convnext_s_3x.yaml");
    let cases = [
        ("model.backbone.depths", "_base_/models/convnext_s.yaml"),
        ("model.backbone.dims", "_base_/models/convnext_t.yaml"),
        ("model.backbone.dims.1", "_base_/models/convnext_t.yaml"),
        ("model.roi_head.bbox_head.num_classes", "det/mask_rcnn_convnext_s_3x.yaml"),
        ("optimizer.lr", "det/mask_rcnn_convnext_s_3x.yaml"),
        ("optimizer.weight_decay", "_base_/schedules/schedule_1x.yaml"),
        ("lr_config.step", "_base_/schedules/schedule_3x.yaml"),
        ("lr_config.warmup_iters", "_base_/schedules/schedule_1x.yaml"),
        ("total_epochs", "_base_/schedules/schedule_3x.yaml"),
        ("log_interval", "_base_/default_runtime.yaml"),
        // Not recorded itself: falls back to the nearest recorded ancestor.
        ("optimizer.weight_decay.nope", "_base_/schedules/schedule_1x.yaml"),
    ];
    for (key, file) in cases {
        assert_eq!(origin_rel(&cfg, key), file, "origin of {key}");
    }
    // Bases are shown normalized (no `..`), relative to the top file's path as given.
    assert!(cfg.provenance().all(|(_, o)| match o {
        Origin::File(p) => !p.to_string_lossy().contains(".."),
        Origin::CfgOptions => false,
    }));
    assert_eq!(cfg.file(), Some(fixture("det/mask_rcnn_convnext_s_3x.yaml").as_path()));
}

#[test]
fn diamond_inheritance_is_not_a_cycle() {
    let cfg = load("det/diamond.yaml");
    assert_eq!(cfg.get("model.backbone.depths"), Some(&yaml("[3, 3, 27, 3]")));
    assert_eq!(origin_rel(&cfg, "model.backbone.depths"), "_base_/models/convnext_s.yaml");
}

#[test]
fn delete_replaces_instead_of_merging() {
    let cfg = load("det/delete.yaml");
    assert_eq!(cfg.get("optimizer"), Some(&yaml("{type: SGD, lr: 0.02, momentum: 0.9}")));
    assert_eq!(cfg.get("optimizer.weight_decay"), None);
    assert_eq!(cfg.get("optimizer._delete_"), None);
    // Without `_delete_`, the sibling section still merges deeply.
    assert_eq!(cfg.get("lr_config"), Some(&yaml("{policy: step, warmup_iters: 1000, step: [8, 11]}")));
    // `_delete_` on a key with nothing to replace is simply dropped.
    assert_eq!(cfg.get("brand_new"), Some(&yaml("{value: 1}")));
    // Provenance of the replaced section is only the replacing file.
    assert_eq!(origin_rel(&cfg, "optimizer.type"), "det/delete.yaml");
    assert!(cfg.provenance().all(|(k, _)| !k.contains("_delete_") && k != "optimizer.weight_decay"));
    assert!(!cfg.to_yaml_string().unwrap().contains("_delete_"));
}

#[test]
fn print_config_round_trips() {
    let cfg = load("det/mask_rcnn_convnext_s_3x.yaml");
    let text = cfg.to_yaml_string().unwrap();
    assert!(!text.contains("_base_"));
    let back: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(&back, cfg.root());
    assert_eq!(cfg.to_string(), text);
    // A stored config reloads to the same document.
    let again = Config::from_yaml_str(&text, "checkpoint.yaml").unwrap();
    assert_eq!(again.root(), cfg.root());
    assert_eq!(again.origin("model.backbone.depths"), Some(&Origin::File(PathBuf::from("checkpoint.yaml"))));
}

// ---------------------------------------------------------------------------------------------
// Overrides
// ---------------------------------------------------------------------------------------------

#[test]
fn overrides_parse_yaml_scalars_and_lists() {
    let mut cfg = load("det/mask_rcnn_convnext_s_3x.yaml");
    cfg.apply_overrides(&[
        "optimizer.lr=1e-4".to_string(),
        "total_epochs=24".to_string(),
        "model.backbone.type=ConvNeXtIsotropic".to_string(),
        "fp16=true".to_string(),
        "model.backbone.out_indices=[1,2,3]".to_string(),
        "work_dir=".to_string(),
    ])
    .unwrap();
    assert_eq!(cfg.get("optimizer.lr").unwrap().as_f64(), Some(1e-4));
    assert!(cfg.get("optimizer.lr").unwrap().is_f64());
    assert_eq!(cfg.get("total_epochs").unwrap().as_i64(), Some(24));
    assert_eq!(cfg.get("model.backbone.type").unwrap().as_str(), Some("ConvNeXtIsotropic"));
    assert_eq!(cfg.get("fp16").unwrap().as_bool(), Some(true));
    assert_eq!(cfg.get("model.backbone.out_indices"), Some(&yaml("[1, 2, 3]")));
    assert_eq!(cfg.get("work_dir"), Some(&Value::Null));
    // Untouched siblings stay.
    assert_eq!(cfg.get("optimizer.weight_decay"), Some(&yaml("0.05")));
    for key in ["optimizer.lr", "fp16", "model.backbone.out_indices.0"] {
        assert_eq!(cfg.origin(key), Some(&Origin::CfgOptions), "origin of {key}");
    }
    assert_eq!(origin_rel(&cfg, "optimizer.weight_decay"), "_base_/schedules/schedule_1x.yaml");
}

#[test]
fn overrides_create_nested_keys_and_index_lists() {
    let mut cfg = load("det/mask_rcnn_convnext_s_3x.yaml");
    cfg.apply_overrides(&["data.train.batch_size=4", "model.backbone.depths.2=18", "seed=7"]).unwrap();
    assert_eq!(cfg.get("data"), Some(&yaml("{train: {batch_size: 4}}")));
    assert_eq!(cfg.origin("data.train"), Some(&Origin::CfgOptions));
    assert_eq!(cfg.get("model.backbone.depths"), Some(&yaml("[3, 3, 18, 3]")));
    assert_eq!(cfg.origin("model.backbone.depths.2"), Some(&Origin::CfgOptions));
    assert_eq!(origin_rel(&cfg, "model.backbone.depths.1"), "_base_/models/convnext_s.yaml");
    assert_eq!(cfg.get("seed").unwrap().as_i64(), Some(7));

    // A null value is an empty mapping for the purpose of creating keys below it.
    let mut cfg = load("det/mask_rcnn_convnext_s_3x.yaml");
    cfg.apply_overrides(&["seed.value=3"]).unwrap();
    assert_eq!(cfg.get("seed"), Some(&yaml("{value: 3}")));

    // Overrides are applied in order: the later one wins.
    cfg.apply_overrides(&["optimizer.lr=0.1", "optimizer.lr=0.2"]).unwrap();
    assert_eq!(cfg.get("optimizer.lr").unwrap().as_f64(), Some(0.2));
}

#[test]
fn malformed_overrides_are_errors_naming_them() {
    let base = load("det/mask_rcnn_convnext_s_3x.yaml");
    let cases = [
        ("no_equals_sign", "expected KEY=VALUE"),
        ("=3", "empty key"),
        ("a..b=1", "empty component"),
        ("x=[1,2", "not valid YAML"),
        ("model.backbone.depths.9=1", "out of range"),
        ("model.backbone.depths.first=1", "not an index"),
        ("model.backbone.type.name=x", "is a string"),
        ("_base_=x.yaml", "cannot be overridden"),
    ];
    for (text, reason_part) in cases {
        let mut cfg = base.clone();
        let err = cfg.apply_overrides(&["optimizer.lr=0.5", text]).unwrap_err();
        match &err {
            ConfigError::BadOverride { text: t, reason } => {
                assert_eq!(t, text);
                assert!(reason.contains(reason_part), "{text}: reason `{reason}` lacks `{reason_part}`");
            }
            other => panic!("{text}: expected BadOverride, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(text), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        // All or nothing: the valid override before the bad one was not applied.
        assert_eq!(cfg, base, "{text}: config changed by a failed override");
    }
}

// ---------------------------------------------------------------------------------------------
// Typed sections
// ---------------------------------------------------------------------------------------------

#[test]
fn typed_sections_deserialize() {
    let cfg = load("det/mask_rcnn_convnext_s_3x.yaml");
    let model: ModelCfg = cfg.section("model").unwrap();
    assert_eq!(
        model,
        ModelCfg {
            kind: "MaskRCNN".into(),
            backbone: BackboneCfg {
                kind: "ConvNeXt".into(),
                depths: vec![3, 3, 27, 3],
                dims: vec![96, 192, 384, 768],
                drop_path_rate: 0.6,
                out_indices: vec![0, 1, 2, 3],
            },
            neck: NeckCfg { kind: "FPN".into(), out_channels: 256, num_outs: 5 },
            roi_head: RoiHeadCfg { bbox_head: BboxHeadCfg { num_classes: 3 } },
        }
    );
    let opt: OptimizerCfg = cfg.section("optimizer").unwrap();
    assert_eq!(opt.lr, 0.0002);
    assert_eq!(opt.betas, (0.9, 0.999));
    let epochs: u32 = cfg.section("total_epochs").unwrap();
    assert_eq!(epochs, 36);
    let depth: usize = cfg.section("model.backbone.depths.2").unwrap();
    assert_eq!(depth, 27);
    let tagged: TaggedModel = cfg.section("model").unwrap();
    let TaggedModel::MaskRCNN { backbone, .. } = tagged;
    assert_eq!(backbone.depths, vec![3, 3, 27, 3]);
    // An absent optional section is None; an absent required one is an error naming it.
    let ema: Option<BboxHeadCfg> = cfg.section("ema").unwrap();
    assert_eq!(ema, None);
    let err = cfg.section::<BboxHeadCfg>("ema").unwrap_err();
    assert!(err.to_string().contains("ema: missing section"), "{err}");
}

#[test]
fn typo_names_key_path_and_file() {
    let cfg = load("typo/typo.yaml");
    let err = cfg.section::<ModelCfg>("model").unwrap_err();
    let msg = err.to_string();
    match &err {
        ConfigError::Invalid { file, key_path, message } => {
            assert_eq!(key_path, "model.backbone.drop_path_rte");
            assert!(file.ends_with("typo/typo.yaml"), "{file}");
            assert!(message.contains("unknown field `drop_path_rte`"), "{message}");
            assert!(message.contains("drop_path_rate"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(msg.contains("typo/typo.yaml: model.backbone.drop_path_rte: unknown field"), "{msg}");
    assert!(!msg.contains('\n'));

    // Deserializing a deeper section still reports the full path.
    let err = cfg.section::<BackboneCfg>("model.backbone").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key_path, .. } if key_path == "model.backbone.drop_path_rte"),
        "{err}"
    );

    // serde loses the position inside internally tagged enums; the key is still found.
    let err = cfg.section::<TaggedModel>("model").unwrap_err();
    match &err {
        ConfigError::Invalid { file, key_path, .. } => {
            assert_eq!(key_path, "model.backbone.drop_path_rte");
            assert!(file.ends_with("typo/typo.yaml"), "{file}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn wrong_type_and_missing_field_name_key_path_and_file() {
    let cfg = load("typo/wrong_type.yaml");
    let err = cfg.section::<ModelCfg>("model").unwrap_err();
    match &err {
        ConfigError::Invalid { file, key_path, message } => {
            assert_eq!(key_path, "model.neck.out_channels");
            assert!(file.ends_with("typo/wrong_type.yaml"), "{file}");
            assert!(message.contains("invalid type"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }

    // A wrong type inside a list, set by an override, names the element and --cfg-options.
    let mut cfg = load("det/mask_rcnn_convnext_s_3x.yaml");
    cfg.apply_overrides(&["model.backbone.dims.1=wide"]).unwrap();
    let err = cfg.section::<ModelCfg>("model").unwrap_err();
    assert!(err.to_string().starts_with("--cfg-options: model.backbone.dims.1: invalid type"), "{err}");

    // A missing field is reported at its parent, named with the file that set the parent.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct SgdCfg {
        #[serde(rename = "type")]
        kind: String,
        lr: f64,
        momentum: f64,
        nesterov: bool,
    }
    let cfg = load("det/delete.yaml");
    let err = cfg.section::<SgdCfg>("optimizer").unwrap_err();
    match &err {
        ConfigError::Invalid { file, key_path, message } => {
            assert_eq!(key_path, "optimizer");
            assert!(file.ends_with("det/delete.yaml"), "{file}");
            assert!(message.contains("missing field `nesterov`"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Loading errors
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_base_is_an_error_naming_both_files() {
    let err = Config::from_file(fixture("errors/missing_base.yaml")).unwrap_err();
    match &err {
        ConfigError::BaseNotFound { including, base, resolved } => {
            assert!(including.ends_with("errors/missing_base.yaml"));
            assert_eq!(base, "../_base_/does_not_exist.yaml");
            assert_eq!(resolved, &fixture("_base_/does_not_exist.yaml"));
        }
        other => panic!("expected BaseNotFound, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("missing_base.yaml"), "{msg}");
    assert!(msg.contains("does_not_exist.yaml"), "{msg}");
}

#[test]
fn missing_top_file_is_an_io_error() {
    let err = Config::from_file(fixture("nope.yaml")).unwrap_err();
    assert!(matches!(&err, ConfigError::Io { path, .. } if path.ends_with("nope.yaml")), "{err}");
    assert!(err.to_string().contains("nope.yaml"));
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let err = Config::from_file(fixture("errors/bad_syntax.yaml")).unwrap_err();
    let msg = err.to_string();
    match &err {
        ConfigError::Yaml { path, source } => {
            assert!(path.ends_with("errors/bad_syntax.yaml"));
            let loc = source.location().expect("a syntax error has a location");
            assert!((3..=4).contains(&loc.line()), "line {}", loc.line());
        }
        other => panic!("expected Yaml, got {other:?}"),
    }
    assert!(msg.contains("bad_syntax.yaml: invalid YAML"), "{msg}");
    assert!(msg.contains("line"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    // A syntax error in a base names the base, not the including file.
    let err = Config::from_file(fixture("errors/includes_bad_syntax.yaml")).unwrap_err();
    assert!(matches!(&err, ConfigError::Yaml { path, .. } if path.ends_with("errors/bad_syntax.yaml")), "{err}");
}

#[test]
fn base_cycle_is_detected() {
    let err = Config::from_file(fixture("cycle/a.yaml")).unwrap_err();
    match &err {
        ConfigError::BaseCycle { chain } => {
            let names: Vec<String> =
                chain.iter().map(|p| p.strip_prefix(fixture("")).unwrap().display().to_string()).collect();
            assert_eq!(names, ["cycle/a.yaml", "cycle/b.yaml", "cycle/c.yaml", "cycle/a.yaml"]);
        }
        other => panic!("expected BaseCycle, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.starts_with("circular `_base_` inheritance:"), "{msg}");
    assert!(msg.contains("b.yaml -> "), "{msg}");

    let err = Config::from_file(fixture("cycle/self.yaml")).unwrap_err();
    assert!(matches!(&err, ConfigError::BaseCycle { chain } if chain.len() == 2), "{err}");
}

#[test]
fn malformed_inheritance_keys_are_invalid() {
    let cases = [
        ("errors/bad_delete.yaml", "optimizer._delete_"),
        ("errors/bad_base_type.yaml", "_base_"),
        ("errors/not_a_mapping.yaml", ""),
    ];
    for (rel, path) in cases {
        let err = Config::from_file(fixture(rel)).unwrap_err();
        match &err {
            ConfigError::Invalid { file, key_path, .. } => {
                assert!(file.ends_with(rel), "{file}");
                assert_eq!(key_path, path);
            }
            other => panic!("{rel}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn yaml_merge_keys_repeat_a_mapping_with_changes() {
    let cfg = load("merge_keys.yaml");
    let heads: Vec<Value> = cfg.section("heads").unwrap();
    assert_eq!(heads[1], yaml("{kind: box, channels: 64, stds: [0.05, 0.1]}"));
    assert_eq!(heads[0]["stds"], yaml("[0.1, 0.2]"));
}
