//! mmcv's `paramwise_cfg.custom_keys` (DefaultOptimizerConstructor, as the Swin detection
//! configs of Swin-Transformer-Object-Detection set it): which parameters of a Mask R-CNN Swin
//! lose their weight decay, the longest-key precedence, and the YAML form.

use candle_core::Device;
use nextdet_engine::layer_decay::{build_param_groups, matching_custom_key, CustomKey, ParamwiseConfig};
use nextdet_engine::optim::{Optimizer, OptimizerConfig};
use nextdet_ops::params::{Init, ParamStore};
use std::collections::{BTreeMap, HashMap};

/// The Swin recipe's three keys with `decay_mult: 0`.
const SWIN_YAML: &str = "type: AdamW
lr: 0.0001
weight_decay: 0.05
paramwise:
  type: CustomKeys
  custom_keys:
    absolute_pos_embed: {decay_mult: 0.0}
    relative_position_bias_table: {decay_mult: 0.0}
    norm: {decay_mult: 0.0}
";

/// Names of a Mask R-CNN Swin, one of each kind, with whether mmcv decays them.
const NAMES: &[(&str, bool)] = &[
    ("backbone.patch_embed.proj.weight", true),
    ("backbone.patch_embed.proj.bias", true),
    ("backbone.patch_embed.norm.weight", false),
    ("backbone.patch_embed.norm.bias", false),
    ("backbone.layers.0.blocks.0.norm1.weight", false),
    ("backbone.layers.0.blocks.0.attn.relative_position_bias_table", false),
    ("backbone.layers.0.blocks.0.attn.qkv.weight", true),
    ("backbone.layers.0.blocks.0.attn.qkv.bias", true), // biases decay: only the keys are special
    ("backbone.layers.0.blocks.0.norm2.bias", false),
    ("backbone.layers.0.blocks.0.mlp.fc1.weight", true),
    ("backbone.layers.0.downsample.norm.weight", false),
    ("backbone.layers.0.downsample.reduction.weight", true),
    ("backbone.norm0.weight", false),
    ("backbone.norm3.bias", false),
    ("neck.lateral_convs.0.conv.weight", true),
    ("rpn_head.rpn_cls.bias", true),
    ("roi_head.bbox_head.0.shared_convs.0.bn.weight", true), // `bn`, not `norm`
    ("roi_head.mask_head.conv_logits.weight", true),
];

fn store() -> ParamStore {
    let s = ParamStore::new(&Device::Cpu, 0);
    for (n, _) in NAMES {
        s.root().param(n, vec![2usize, 2], Init::Const(0.0)).unwrap();
    }
    s
}

#[test]
fn swin_recipe_takes_weight_decay_off_norms_and_bias_tables_only() {
    let cfg: OptimizerConfig = serde_yaml::from_str(SWIN_YAML).unwrap();
    let params = store();
    let groups = build_param_groups(&params, cfg.weight_decay, cfg.paramwise.as_ref()).unwrap();
    let wd: HashMap<&str, (f64, f64)> = groups
        .iter()
        .flat_map(|g| g.params.iter().map(move |(n, _)| (n.as_str(), (g.weight_decay, g.lr_scale))))
        .collect();
    assert_eq!(wd.len(), NAMES.len());
    for (name, decays) in NAMES {
        let (w, lr) = wd[name];
        assert_eq!(w, if *decays { 0.05 } else { 0.0 }, "{name}");
        assert_eq!(lr, 1.0, "{name}");
    }
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["default", "custom.norm", "custom.relative_position_bias_table"]);
    Optimizer::from_config(&cfg, &params).unwrap();
}

#[test]
fn the_longest_key_wins_then_the_alphabetically_first() {
    let key = |lr_mult| CustomKey { lr_mult, decay_mult: 1.0 };
    let keys: BTreeMap<String, CustomKey> =
        [("norm", key(0.1)), ("backbone.norm", key(0.2)), ("bias", key(0.3)), ("norm0", key(0.4)), ("neck", key(0.5))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    let m = |name: &str| matching_custom_key(name, &keys).map(|(k, _)| k);
    assert_eq!(m("backbone.norm0.bias"), Some("backbone.norm"));
    assert_eq!(m("backbone.layers.0.blocks.0.norm1.weight"), Some("norm"));
    // "bias" and "norm" are equally long: "bias" comes first alphabetically.
    assert_eq!(m("backbone.layers.0.blocks.0.norm1.bias"), Some("bias"));
    // "bias" and "neck" are equally long: "bias" comes first alphabetically.
    assert_eq!(m("neck.fpn.bias"), Some("bias"));
    assert_eq!(m("roi_head.fc.weight"), None);
    let params = ParamStore::new(&Device::Cpu, 0);
    params.root().param("backbone.norm0.weight", 3, Init::Const(0.0)).unwrap();
    let groups = build_param_groups(&params, 0.05, Some(&ParamwiseConfig::CustomKeys { custom_keys: keys })).unwrap();
    assert_eq!((groups[0].name.as_str(), groups[0].lr_scale), ("custom.backbone.norm", 0.2));
}

#[test]
fn custom_key_typos_are_errors() {
    let bad = SWIN_YAML.replace("decay_mult: 0.0}\n    norm", "decay_mul: 0.0}\n    norm");
    let err = serde_yaml::from_str::<OptimizerConfig>(&bad).err().unwrap().to_string();
    assert!(err.contains("decay_mul"), "{err}");
}
