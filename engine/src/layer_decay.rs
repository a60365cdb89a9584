//! Parameter groups for ConvNeXt's layer-wise learning-rate decay, and mmcv's `custom_keys`
//! multipliers (the Swin detection recipes).
//!
//! The ConvNeXt detection recipes (`facebookresearch/ConvNeXt object_detection/mmcv_custom/layer_decay_optimizer_constructor.py`) and the ImageNet
//! fine-tuning recipe (ConvNeXt's `optim_factory.get_parameter_groups` with `get_num_layer_for_convnext`)
//! give every parameter a layer id from its name: early layers get small ids and a learning rate
//! scaled by `decay_rate ^ (num_layers + 1 - id)`, the heads get `num_layers + 1` and scale 1.
//! Independently, 1-D parameters (norm weights, `gamma`) and names ending in `.bias` get no
//! weight decay. Groups are named `layer_{id}_{decay|no_decay}` and ordered by first appearance,
//! as the Python dicts are.

use crate::optim::ParamGroup;
use candle_core::{bail, Result};
use nextdet_ops::params::ParamStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How layer ids are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayType {
    /// Detection, by block (`get_num_layer_layer_wise`), on full names with a `backbone.` prefix.
    #[default]
    LayerWise,
    /// Detection, by stage (`get_num_layer_stage_wise`), on full names with a `backbone.` prefix.
    StageWise,
    /// Classification fine-tuning (`get_num_layer_for_convnext`), names without a prefix;
    /// ConvNeXt's `optim_factory.py` fixes `num_layers` at 12.
    Classification,
}

/// The `paramwise` entry of an optimizer config: how parameters are split into groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ParamwiseConfig {
    /// Layer-wise learning-rate decay plus no weight decay on 1-D parameters and biases.
    LayerDecay {
        /// The recipe's `num_layers` (6 for ConvNeXt-T detection, 12 otherwise).
        num_layers: usize,
        /// The per-layer learning-rate factor, greater than 0.
        #[serde(deserialize_with = "decay_rate")]
        decay_rate: f64,
        /// Which id rule.
        #[serde(default)]
        decay_type: DecayType,
    },
    /// No weight decay on 1-D parameters and biases, one learning rate (ConvNeXt's ImageNet training
    /// without `--layer_decay`): groups `decay` and `no_decay`.
    NoDecayNormBias,
    /// mmcv's `DefaultOptimizerConstructor` with `paramwise_cfg.custom_keys`, as the Swin
    /// detection configs use it (`decay_mult: 0` for `absolute_pos_embed`,
    /// `relative_position_bias_table` and `norm`): a parameter whose full name contains a key
    /// gets that key's learning-rate and weight-decay multipliers, the longest matching key
    /// winning (ties: the alphabetically first); every other parameter, biases included, keeps
    /// the base values. Groups are named `custom.<key>` and `default`.
    CustomKeys {
        /// Substring of a parameter name -> its multipliers.
        custom_keys: BTreeMap<String, CustomKey>,
    },
}

/// The multipliers of one mmcv `custom_keys` entry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomKey {
    /// Factor on the learning rate.
    #[serde(default = "one")]
    pub lr_mult: f64,
    /// Factor on the weight decay.
    #[serde(default = "one")]
    pub decay_mult: f64,
}

fn one() -> f64 {
    1.0
}

/// The custom key that applies to parameter `name`: the longest key contained in it, the
/// alphabetically first among equally long ones (mmcv sorts the keys by name, then stably by
/// length, longest first, and takes the first that matches).
pub fn matching_custom_key<'a>(name: &str, keys: &'a BTreeMap<String, CustomKey>) -> Option<(&'a str, &'a CustomKey)> {
    let mut sorted: Vec<(&String, &CustomKey)> = keys.iter().collect();
    sorted.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    sorted.into_iter().find(|(k, _)| name.contains(k.as_str())).map(|(k, v)| (k.as_str(), v))
}

/// `decay_rate` greater than 0: 0 or less would zero or flip the sign of every learning rate
/// but the heads'.
fn decay_rate<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    crate::optim::checks::number(d, "decay_rate", crate::optim::checks::positive, "must be greater than 0")
}

/// Splits a dotted name into its integer component at `at`, or errors naming the parameter.
fn index_at(name: &str, at: usize) -> Result<usize> {
    match name.split('.').nth(at).map(str::parse::<usize>) {
        Some(Ok(v)) => Ok(v),
        _ => bail!("layer decay: parameter `{name}` has no integer at position {at} of its dotted name"),
    }
}

/// The layer id of a full detection-model parameter name (`get_num_layer_layer_wise`).
pub fn layer_id_layer_wise(name: &str, num_layers: usize) -> Result<usize> {
    if matches!(name, "backbone.cls_token" | "backbone.mask_token" | "backbone.pos_embed") {
        Ok(0)
    } else if name.starts_with("backbone.downsample_layers") {
        Ok(match index_at(name, 2)? {
            0 => 0,
            1 => 2,
            2 => 3,
            3 => num_layers,
            s => bail!("layer decay: parameter `{name}`: downsample layer {s} does not exist"),
        })
    } else if name.starts_with("backbone.stages") {
        let block = index_at(name, 3)?;
        Ok(match index_at(name, 2)? {
            0 => 1,
            1 => 2,
            2 => 3 + block / 3,
            3 => num_layers,
            s => bail!("layer decay: parameter `{name}`: stage {s} does not exist"),
        })
    } else {
        Ok(num_layers + 1)
    }
}

/// The layer id of a full detection-model parameter name by stage (`get_num_layer_stage_wise`,
/// called by ConvNeXt's code with `num_layers + 2`).
pub fn layer_id_stage_wise(name: &str, num_layers: usize) -> Result<usize> {
    if matches!(name, "backbone.cls_token" | "backbone.mask_token" | "backbone.pos_embed")
        || name.starts_with("backbone.downsample_layers")
    {
        Ok(0)
    } else if name.starts_with("backbone.stages") {
        Ok(index_at(name, 2)? + 1)
    } else {
        Ok(num_layers + 1)
    }
}

/// The layer id of a classifier parameter name (`get_num_layer_for_convnext`, 12 layers).
pub fn layer_id_classification(name: &str) -> Result<usize> {
    if name.starts_with("downsample_layers") {
        Ok(match index_at(name, 1)? {
            0 => 0,
            s @ (1 | 2) => s + 1,
            3 => 12,
            s => bail!("layer decay: parameter `{name}`: downsample layer {s} does not exist"),
        })
    } else if name.starts_with("stages") {
        let block = index_at(name, 2)?;
        Ok(match index_at(name, 1)? {
            s @ (0 | 1) => s + 1,
            2 => 3 + block / 3,
            3 => 12,
            s => bail!("layer decay: parameter `{name}`: stage {s} does not exist"),
        })
    } else {
        Ok(13)
    }
}

/// The learning-rate scale of layer `layer_id`: `decay_rate ^ (num_layers + 1 - layer_id)`.
pub fn layer_scale(decay_rate: f64, num_layers: usize, layer_id: usize) -> f64 {
    decay_rate.powf(num_layers as f64 + 1.0 - layer_id as f64)
}

/// True for parameters that get no weight decay: 1-D shapes and names ending in `.bias`.
pub fn skips_weight_decay(name: &str, dims: &[usize]) -> bool {
    dims.len() == 1 || name.ends_with(".bias")
}

/// Builds the optimizer's parameter groups from the trainable parameters of `params`.
///
/// Without `paramwise` all parameters form one group `all` with `weight_decay`. Errors name a
/// parameter whose name the layer rule cannot parse, or a classification rule with
/// `num_layers != 12`.
pub fn build_param_groups(
    params: &ParamStore,
    weight_decay: f64,
    paramwise: Option<&ParamwiseConfig>,
) -> Result<Vec<ParamGroup>> {
    let trainable = params.trainable();
    let Some(paramwise) = paramwise else {
        return Ok(vec![ParamGroup { name: "all".into(), params: trainable, lr_scale: 1.0, weight_decay }]);
    };
    if let ParamwiseConfig::LayerDecay { num_layers, decay_type: DecayType::Classification, .. } = paramwise {
        if *num_layers != 12 {
            bail!("layer decay: decay_type classification needs num_layers 12 (as ConvNeXt's optim_factory.py), got {num_layers}");
        }
    }
    let mut groups: Vec<ParamGroup> = Vec::new();
    for (name, var) in trainable {
        let no_decay = skips_weight_decay(&name, var.dims());
        let (suffix, wd) = if no_decay { ("no_decay", 0.0) } else { ("decay", weight_decay) };
        let (group_name, scale, wd) = match paramwise {
            ParamwiseConfig::NoDecayNormBias => (suffix.to_string(), 1.0, wd),
            ParamwiseConfig::LayerDecay { num_layers, decay_rate, decay_type } => {
                let id = match decay_type {
                    DecayType::LayerWise => layer_id_layer_wise(&name, *num_layers)?,
                    DecayType::StageWise => layer_id_stage_wise(&name, *num_layers)?,
                    DecayType::Classification => layer_id_classification(&name)?,
                };
                (format!("layer_{id}_{suffix}"), layer_scale(*decay_rate, *num_layers, id), wd)
            }
            ParamwiseConfig::CustomKeys { custom_keys } => match matching_custom_key(&name, custom_keys) {
                Some((key, m)) => (format!("custom.{key}"), m.lr_mult, weight_decay * m.decay_mult),
                None => ("default".to_string(), 1.0, weight_decay),
            },
        };
        match groups.iter_mut().find(|g| g.name == group_name) {
            Some(g) => g.params.push((name, var)),
            None => groups.push(ParamGroup {
                name: group_name,
                params: vec![(name, var)],
                lr_scale: scale,
                weight_decay: wd,
            }),
        }
    }
    Ok(groups)
}
