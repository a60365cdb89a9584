//! mmdetection 2.11's `MaxIoUAssigner` (`mmdet/core/bbox/assigners/max_iou_assigner.py`): which
//! ground-truth box, if any, each anchor or proposal is trained against.
//!
//! Shapes: `N` candidate boxes (anchors or proposals), `G` ground-truth boxes, all
//! `[x1, y1, x2, y2]` without `+1`. The rules, in mmdet's order:
//! 1. every candidate starts as "ignore" (`-1`);
//! 2. a candidate whose best IoU is in `[0, neg_iou_thr)` becomes negative (`0`);
//! 3. a candidate whose best IoU is `>= pos_iou_thr` is assigned to that best gt (`k + 1`,
//!    the first gt on ties);
//! 4. with `match_low_quality`, for each gt in order whose best IoU is `>= min_pos_iou`, every
//!    candidate with exactly that IoU is assigned to it (`gt_max_assign_all=True`),
//!    overwriting earlier assignments, so a later gt wins a shared candidate.
//!
//! With `ignore_iof_thr > 0`, candidates covered by an ignore region by more than the threshold
//! (intersection over the candidate's area) get IoU `-1` with every gt, so they stay ignored.
//! No gts: every candidate is negative. The overlaps are the project's one IoU,
//! [`nextdet_ops::box_iou`] (mmdet's `bbox_overlaps` arithmetic in `f32`, union clamped at
//! `1e-6`), so ties fall the same way; the rules then run on the host.

use candle_core::Result;
use nextdet_ops::{box_iof, box_iou, Boxes};
use serde::Deserialize;

/// The assigner's thresholds, as in an mmdet `assigner=dict(type='MaxIoUAssigner', ...)`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaxIoUAssignerConfig {
    /// IoU at or above which a candidate is positive.
    pub pos_iou_thr: f32,
    /// IoU below which (and at or above 0) a candidate is negative.
    pub neg_iou_thr: f32,
    /// Smallest IoU a gt's best candidate needs to be matched as a low-quality positive.
    pub min_pos_iou: f32,
    /// Whether each gt claims its best candidates even below `pos_iou_thr` (mmdet default true).
    #[serde(default = "default_true")]
    pub match_low_quality: bool,
    /// Intersection-over-candidate above which a candidate inside an ignore region is ignored;
    /// `-1` (mmdet's default) switches ignore regions off.
    #[serde(default = "default_ignore_iof_thr")]
    pub ignore_iof_thr: f32,
}

fn default_true() -> bool {
    true
}

fn default_ignore_iof_thr() -> f32 {
    -1.0
}

/// What the assigner decided for each of `N` candidates (mmdet's `AssignResult`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AssignResult {
    /// Number of gt boxes `G`.
    pub num_gts: usize,
    /// Per candidate: `0` negative, `-1` ignored, `k + 1` assigned to gt `k` (mmdet's convention).
    pub gt_inds: Vec<i64>,
    /// Per candidate, its best IoU with any gt (0 when there are no gts, `-1` if ignored by region).
    pub max_overlaps: Vec<f32>,
    /// Per candidate, the label of its gt when positive and labels were given, else `None`.
    pub labels: Vec<Option<usize>>,
}

impl AssignResult {
    /// Indices of positive candidates, ascending.
    pub fn positives(&self) -> Vec<usize> {
        self.gt_inds.iter().enumerate().filter(|(_, &g)| g > 0).map(|(i, _)| i).collect()
    }

    /// Indices of negative candidates, ascending.
    pub fn negatives(&self) -> Vec<usize> {
        self.gt_inds.iter().enumerate().filter(|(_, &g)| g == 0).map(|(i, _)| i).collect()
    }

    /// Prepends the gts themselves as candidates, each assigned to itself with overlap 1
    /// (mmdet's `add_gt_`, used by samplers with `add_gt_as_proposals`): the candidate list is then
    /// the gts followed by the proposals ([`crate::roi::sample_rois`] builds it).
    pub fn add_gt(&mut self, gt_labels: &[usize]) {
        let g = self.num_gts;
        let mut gt_inds: Vec<i64> = (1..=g as i64).collect();
        gt_inds.append(&mut self.gt_inds);
        self.gt_inds = gt_inds;
        let mut max_overlaps = vec![1.0; g];
        max_overlaps.append(&mut self.max_overlaps);
        self.max_overlaps = max_overlaps;
        let mut labels: Vec<Option<usize>> = (0..g).map(|k| gt_labels.get(k).copied()).collect();
        labels.append(&mut self.labels);
        self.labels = labels;
    }
}

/// mmdet's `MaxIoUAssigner` with `gt_max_assign_all=True` and `ignore_wrt_candidates=True`.
#[derive(Clone, Debug)]
pub struct MaxIoUAssigner {
    cfg: MaxIoUAssignerConfig,
}

impl MaxIoUAssignerConfig {
    /// Checks the thresholds: finite, and `neg_iou_thr <= pos_iou_thr`. `key` names the
    /// section in errors (e.g. `rpn_head.train.assigner`).
    pub fn validate(&self, key: &str) -> Result<()> {
        for (name, v) in
            [("pos_iou_thr", self.pos_iou_thr), ("neg_iou_thr", self.neg_iou_thr), ("min_pos_iou", self.min_pos_iou)]
        {
            if !v.is_finite() {
                candle_core::bail!("{key}.{name}: must be a finite number, got {v}");
            }
        }
        if self.neg_iou_thr > self.pos_iou_thr {
            candle_core::bail!("{key}: neg_iou_thr {} is above pos_iou_thr {}", self.neg_iou_thr, self.pos_iou_thr);
        }
        Ok(())
    }
}

impl MaxIoUAssigner {
    /// An assigner with these thresholds.
    pub fn new(cfg: &MaxIoUAssignerConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    /// The thresholds.
    pub fn config(&self) -> &MaxIoUAssignerConfig {
        &self.cfg
    }

    /// Assigns `bboxes` (`N` candidates) to `gt` (`G` boxes, labels `gt_labels`, which may be
    /// empty when labels are not needed, as in the RPN); `gt_ignore` holds ignore regions (used
    /// only when `ignore_iof_thr > 0`). See the module doc for the rules.
    pub fn assign(&self, bboxes: &Boxes, gt: &Boxes, gt_labels: &[usize], gt_ignore: &Boxes) -> Result<AssignResult> {
        let (n, g) = (bboxes.len(), gt.len());
        let cfg = &self.cfg;
        if n == 0 || g == 0 {
            return Ok(AssignResult {
                num_gts: g,
                gt_inds: vec![if g == 0 { 0 } else { -1 }; n],
                max_overlaps: vec![0.0; n],
                labels: vec![None; n],
            });
        }
        // Candidate-major `[N, G]` (mmdet's is `[G, N]`; the same numbers).
        let mut ious = box_iou(bboxes, gt)?.flatten_all()?.to_vec1::<f32>()?;
        if cfg.ignore_iof_thr > 0.0 && !gt_ignore.is_empty() {
            let iof = box_iof(bboxes, gt_ignore)?.flatten_all()?.to_vec1::<f32>()?;
            for (i, row) in iof.chunks_exact(gt_ignore.len()).enumerate() {
                let best = row.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
                if best > cfg.ignore_iof_thr {
                    ious[i * g..(i + 1) * g].iter_mut().for_each(|v| *v = -1.0);
                }
            }
        }
        let mut gt_inds = vec![-1i64; n];
        let mut max_overlaps = vec![0f32; n];
        let mut gt_max = vec![f32::NEG_INFINITY; g];
        for (i, row) in ious.chunks_exact(g).enumerate() {
            let (mut best, mut arg) = (row[0], 0);
            for (k, &v) in row.iter().enumerate() {
                if v > best {
                    (best, arg) = (v, k);
                }
                if v > gt_max[k] {
                    gt_max[k] = v;
                }
            }
            max_overlaps[i] = best;
            if best >= 0.0 && best < cfg.neg_iou_thr {
                gt_inds[i] = 0;
            }
            if best >= cfg.pos_iou_thr {
                gt_inds[i] = arg as i64 + 1;
            }
        }
        if cfg.match_low_quality {
            for (k, &m) in gt_max.iter().enumerate() {
                if m >= cfg.min_pos_iou {
                    for (i, row) in ious.chunks_exact(g).enumerate() {
                        if row[k] == m {
                            gt_inds[i] = k as i64 + 1;
                        }
                    }
                }
            }
        }
        let labels =
            gt_inds.iter().map(|&k| if k > 0 { gt_labels.get(k as usize - 1).copied() } else { None }).collect();
        Ok(AssignResult { num_gts: g, gt_inds, max_overlaps, labels })
    }
}
