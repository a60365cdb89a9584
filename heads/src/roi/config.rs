//! The `roi_head` section of a detector config, for both of mmdetection's RoI heads: a
//! `StandardRoIHead` (Mask R-CNN) names one box head and one `train` mapping, a
//! `CascadeRoIHead` names `num_stages` of each as lists, with `stage_loss_weights`. Both resolve
//! to the same list of stages ([`RoiHeadConfig::stages`]), so the heads are one design.

use crate::assigner::MaxIoUAssignerConfig;
use crate::bbox_head::BBoxHeadConfig;
use crate::mask_head::FcnMaskHeadConfig;
use crate::sampler::RandomSamplerConfig;
use candle_core::{bail, Result};
use nextdet_ops::SingleRoiExtractor;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

/// The RoI heads a config can name.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoiHeadType {
    /// One stage: Mask R-CNN's head (`mmdet/models/roi_heads/standard_roi_head.py`).
    StandardRoIHead,
    /// Several stages at rising IoU (`mmdet/models/roi_heads/cascade_roi_head.py`).
    CascadeRoIHead,
}

/// The RoI extractors a config can name.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RoiExtractorType {
    /// RoIAlign on the one FPN level each RoI maps to.
    #[default]
    SingleRoIExtractor,
}

/// mmdet's `SingleRoIExtractor(RoIAlign(output_size, sampling_ratio), featmap_strides,
/// finest_scale)`.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoiExtractorConfig {
    /// The extractor (only `SingleRoIExtractor`).
    #[serde(rename = "type", default)]
    pub kind: RoiExtractorType,
    /// Output bins per side (7 for boxes, 14 for masks).
    pub output_size: usize,
    /// RoIAlign samples per bin side, 0 for adaptive.
    #[serde(default)]
    pub sampling_ratio: usize,
    /// Strides of the pooled levels, finest first (`[4, 8, 16, 32]`).
    pub featmap_strides: Vec<f32>,
    /// Feature channels (derived; must match the neck when given).
    #[serde(default)]
    pub out_channels: Option<usize>,
    /// RoIs of `sqrt(area)` below `2 * finest_scale` pool from the finest level, each doubling
    /// moves one level up (mmdet: 56, sized for COCO objects at 1333x800).
    #[serde(default = "finest_scale")]
    pub finest_scale: f32,
}

fn finest_scale() -> f32 {
    56.0
}

impl RoiExtractorConfig {
    /// The extractor (RoIAlign aligned=True).
    pub fn build(&self, in_channels: usize) -> Result<SingleRoiExtractor> {
        if self.featmap_strides.is_empty() || self.output_size == 0 {
            bail!("roi extractor: needs an output_size > 0 and at least one featmap stride");
        }
        if !(self.finest_scale.is_finite() && self.finest_scale > 0.0) {
            bail!("roi extractor: finest_scale must be > 0, got {}", self.finest_scale);
        }
        if let Some(c) = self.out_channels {
            if c != in_channels {
                bail!("roi extractor: out_channels is {c} but the features have {in_channels} channels");
            }
        }
        let RoiExtractorType::SingleRoIExtractor = self.kind;
        let mut e = SingleRoiExtractor::new((self.output_size, self.output_size), &self.featmap_strides);
        e.sampling_ratio = self.sampling_ratio;
        e.finest_scale = self.finest_scale;
        Ok(e)
    }
}

/// R-CNN training settings of one stage (mmdet `train_cfg.rcnn`).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RcnnTrainConfig {
    /// Proposal to ground-truth assignment.
    pub assigner: MaxIoUAssignerConfig,
    /// RoI sampling.
    pub sampler: RandomSamplerConfig,
    /// Mask target size (28).
    #[serde(default = "mask_size")]
    pub mask_size: usize,
    /// Classification weight of positives; `<= 0` means 1.
    #[serde(default = "minus_one")]
    pub pos_weight: f32,
    /// mmdet's debug flag; only `false` is accepted (mmdet draws the sampled boxes with it).
    #[serde(default)]
    pub debug: bool,
}

fn mask_size() -> usize {
    28
}
fn minus_one() -> f32 {
    -1.0
}

/// R-CNN test settings (mmdet `test_cfg.rcnn`).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RcnnTestConfig {
    /// Keep class scores strictly above this (0.05).
    #[serde(default = "score_thr")]
    pub score_thr: f32,
    /// Class-wise NMS IoU threshold (0.5).
    #[serde(default = "half")]
    pub nms_iou: f64,
    /// Detections kept per image (100).
    #[serde(default = "hundred")]
    pub max_per_img: usize,
    /// Mask binarization threshold (0.5).
    #[serde(default = "half_f32")]
    pub mask_thr_binary: f32,
}

fn score_thr() -> f32 {
    0.05
}
fn half() -> f64 {
    0.5
}
fn half_f32() -> f32 {
    0.5
}
fn hundred() -> usize {
    100
}

impl Default for RcnnTestConfig {
    fn default() -> Self {
        Self { score_thr: 0.05, nms_iou: 0.5, max_per_img: 100, mask_thr_binary: 0.5 }
    }
}

/// One setting for the only stage (a mapping) or one per stage (a list), as mmdetection's
/// `StandardRoIHead` and `CascadeRoIHead` configs write `bbox_head` and `train`. Errors inside
/// an item keep their key path.
#[derive(Clone, Debug, PartialEq)]
pub enum PerStage<T> {
    /// A mapping: the setting of a one-stage head.
    One(T),
    /// A list: one setting per stage.
    Each(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for PerStage<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = PerStage<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping (one stage) or a list of mappings (one per stage)")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(PerStage::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(PerStage::Each)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// `roi_head: {type: StandardRoIHead | CascadeRoIHead, ...}` (see the module docs).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoiHeadConfig {
    /// Which head: it decides the parameter names (`bbox_head.*` or `bbox_head.{s}.*`), the loss
    /// names (`loss_cls` or `s{s}.loss_cls`) and how many stages the lists below must have.
    #[serde(rename = "type")]
    pub kind: RoiHeadType,
    /// Stages of a cascade (3).
    #[serde(default)]
    pub num_stages: Option<usize>,
    /// Loss weight per cascade stage (`[1, 0.5, 0.25]`).
    #[serde(default)]
    pub stage_loss_weights: Option<Vec<f64>>,
    /// RoI pooling for the box heads (shared by the stages).
    pub bbox_roi_extractor: RoiExtractorConfig,
    /// The box head, or one per cascade stage.
    pub bbox_head: PerStage<BBoxHeadConfig>,
    /// RoI pooling for the mask heads (the box extractor when absent).
    #[serde(default)]
    pub mask_roi_extractor: Option<RoiExtractorConfig>,
    /// The mask head config (none for Faster R-CNN); a cascade builds one per stage, as
    /// mmdetection does.
    #[serde(default)]
    pub mask_head: Option<FcnMaskHeadConfig>,
    /// Training settings, or one per cascade stage (required to train).
    #[serde(default)]
    pub train: Option<PerStage<RcnnTrainConfig>>,
    /// Test settings.
    #[serde(default)]
    pub test: RcnnTestConfig,
}

/// What one stage of an RoI head is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct StageConfig {
    /// The stage's box head.
    pub bbox_head: BBoxHeadConfig,
    /// Its training settings, if the config has them.
    pub train: Option<RcnnTrainConfig>,
    /// Its loss weight (1 for a one-stage head).
    pub loss_weight: f64,
}

impl RoiHeadConfig {
    /// The stages, checked against the head's type: a `StandardRoIHead` takes one box head and
    /// one `train` mapping; a `CascadeRoIHead` takes `num_stages` of each, as lists, and as many
    /// `stage_loss_weights`. Errors name the key.
    pub fn stages(&self) -> Result<Vec<StageConfig>> {
        match self.kind {
            RoiHeadType::StandardRoIHead => {
                if self.num_stages.is_some_and(|n| n != 1) || self.stage_loss_weights.is_some() {
                    bail!("roi_head: StandardRoIHead has one stage; num_stages and stage_loss_weights belong to CascadeRoIHead");
                }
                let PerStage::One(bbox_head) = &self.bbox_head else {
                    bail!("roi_head.bbox_head: StandardRoIHead takes one box head (a mapping), not a list");
                };
                let train = match &self.train {
                    None => None,
                    Some(PerStage::One(t)) => Some(t.clone()),
                    Some(PerStage::Each(_)) => {
                        bail!("roi_head.train: StandardRoIHead takes one train mapping, not a list")
                    }
                };
                Ok(vec![StageConfig { bbox_head: bbox_head.clone(), train, loss_weight: 1.0 }])
            }
            RoiHeadType::CascadeRoIHead => {
                let Some(n) = self.num_stages.filter(|&n| n > 0) else {
                    bail!("roi_head.num_stages: CascadeRoIHead needs a positive number of stages");
                };
                let PerStage::Each(heads) = &self.bbox_head else {
                    bail!("roi_head.bbox_head: CascadeRoIHead takes a list of {n} box heads");
                };
                let weights = self.stage_loss_weights.as_deref().unwrap_or(&[]);
                if heads.len() != n || weights.len() != n {
                    bail!(
                        "roi_head: num_stages {n} needs as many bbox_head configs ({}) and stage_loss_weights ({})",
                        heads.len(),
                        weights.len()
                    );
                }
                let trains: Vec<Option<RcnnTrainConfig>> = match &self.train {
                    None => vec![None; n],
                    Some(PerStage::Each(t)) if t.len() == n => t.iter().cloned().map(Some).collect(),
                    Some(PerStage::Each(t)) => bail!("roi_head.train: {} train configs for {n} stages", t.len()),
                    Some(PerStage::One(_)) => {
                        bail!("roi_head.train: CascadeRoIHead takes a list of {n} train mappings")
                    }
                };
                Ok(heads
                    .iter()
                    .zip(trains)
                    .zip(weights)
                    .map(|((h, train), &loss_weight)| StageConfig { bbox_head: h.clone(), train, loss_weight })
                    .collect())
            }
        }
    }

    /// Whether the head predicts masks.
    pub fn with_masks(&self) -> bool {
        self.mask_head.is_some()
    }

    /// Foreground classes of the (first) box head.
    pub fn num_classes(&self) -> usize {
        match &self.bbox_head {
            PerStage::One(h) => h.num_classes(),
            PerStage::Each(hs) => hs.first().map_or(0, BBoxHeadConfig::num_classes),
        }
    }
}
