//! mmdetection 2.11's `RandomSampler` (`mmdet/core/bbox/samplers/random_sampler.py`,
//! `base_sampler.py`): a fixed-size random subset of the assigned candidates to train on.
//!
//! At most `floor(num * pos_fraction)` positives are drawn uniformly from the positives; the
//! rest of `num` is filled with negatives (capped at `neg_pos_ub * max(1, #pos)` when
//! `neg_pos_ub >= 0`). Chosen indices are returned ascending, as mmdet's `unique()` sorts them.
//! The random draw is this crate's (a seeded [`StdRng`]), not torch's `randperm`, so only the
//! sizes and the candidate pools match mmdet, not the particular subset.
//!
//! With `add_gt_as_proposals`, mmdet assigns the proposals first and then prepends the gts as
//! extra positive candidates ([`AssignResult::add_gt`]); [`RandomSampler::sample_with_gt`]
//! does both steps (the candidate list is then the gts followed by the proposals).

use crate::assigner::AssignResult;
use rand::rngs::StdRng;
use serde::Deserialize;

/// The sampler's settings, as in an mmdet `sampler=dict(type='RandomSampler', ...)`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RandomSamplerConfig {
    /// Total samples per image (positives plus negatives).
    pub num: usize,
    /// Largest share of `num` that positives may take.
    pub pos_fraction: f32,
    /// Upper bound on negatives per positive; `-1` for none (mmdet's default).
    #[serde(default = "default_neg_pos_ub")]
    pub neg_pos_ub: i64,
    /// Whether the gt boxes are added to the candidates as positives (R-CNN stages).
    pub add_gt_as_proposals: bool,
}

fn default_neg_pos_ub() -> i64 {
    -1
}

/// The sampled candidates of one image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingResult {
    /// Sampled positive candidates, ascending (indices into the candidate list the assignment
    /// was made on; with gts prepended, the first `G` are the gts).
    pub pos_inds: Vec<usize>,
    /// Sampled negative candidates, ascending.
    pub neg_inds: Vec<usize>,
    /// 0-based gt index of each positive, aligned with `pos_inds`.
    pub pos_gt_inds: Vec<usize>,
}

/// mmdet's `RandomSampler`.
#[derive(Clone, Debug)]
pub struct RandomSampler {
    cfg: RandomSamplerConfig,
}

/// `min(k, pool.len())` uniformly chosen members of `pool`, ascending.
fn choose(pool: Vec<usize>, k: usize, rng: &mut StdRng) -> Vec<usize> {
    if pool.len() <= k {
        return pool;
    }
    let mut picked: Vec<usize> = rand::seq::index::sample(rng, pool.len(), k).into_iter().map(|i| pool[i]).collect();
    picked.sort_unstable();
    picked
}

impl RandomSamplerConfig {
    /// Checks the settings: at least one sample, a positive fraction in `[0, 1]`. `key` names
    /// the section in errors (e.g. `rpn_head.train.sampler`).
    pub fn validate(&self, key: &str) -> candle_core::Result<()> {
        if self.num == 0 {
            candle_core::bail!("{key}.num: must be at least 1 (no RoI would be trained on)");
        }
        if !(0.0..=1.0).contains(&self.pos_fraction) {
            candle_core::bail!("{key}.pos_fraction: must be in [0, 1], got {}", self.pos_fraction);
        }
        Ok(())
    }
}

impl RandomSampler {
    /// A sampler with these settings.
    pub fn new(cfg: &RandomSamplerConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    /// The settings.
    pub fn config(&self) -> &RandomSamplerConfig {
        &self.cfg
    }

    /// Samples positives and negatives of `assign` as is (no gts added; see
    /// [`RandomSampler::sample_with_gt`] for `add_gt_as_proposals`).
    pub fn sample(&self, assign: &AssignResult, rng: &mut StdRng) -> SamplingResult {
        let cfg = &self.cfg;
        let num_expected_pos = (cfg.num as f64 * cfg.pos_fraction as f64) as usize;
        let pos_inds = choose(assign.positives(), num_expected_pos, rng);
        let mut num_expected_neg = cfg.num.saturating_sub(pos_inds.len());
        if cfg.neg_pos_ub >= 0 {
            let bound = cfg.neg_pos_ub as usize * pos_inds.len().max(1);
            num_expected_neg = num_expected_neg.min(bound);
        }
        let neg_inds = choose(assign.negatives(), num_expected_neg, rng);
        let pos_gt_inds = pos_inds.iter().map(|&i| (assign.gt_inds[i] - 1) as usize).collect();
        SamplingResult { pos_inds, neg_inds, pos_gt_inds }
    }

    /// mmdet's `BaseSampler.sample`: when `add_gt_as_proposals` and there are gts, prepends
    /// the gts to `assign` (each positive for itself, [`AssignResult::add_gt`]) and samples
    /// from that; indices then point into the gts followed by the proposals. Without the
    /// option, or without gts, the same as [`RandomSampler::sample`].
    pub fn sample_with_gt(&self, assign: &mut AssignResult, gt_labels: &[usize], rng: &mut StdRng) -> SamplingResult {
        if self.cfg.add_gt_as_proposals && assign.num_gts > 0 {
            assign.add_gt(gt_labels);
        }
        self.sample(assign, rng)
    }
}
