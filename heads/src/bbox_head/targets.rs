//! Training targets and losses of the box head: mmdet `BBoxHead.get_targets` (with
//! `concat=True`) and `BBoxHead.loss`.

use super::BBoxHead;
use crate::losses::cross_entropy;
use crate::roi::SampledRois;
use crate::targets::{flat, ImageTargets};
use candle_core::{bail, DType, Device, Result, Tensor, D};
use nextdet_ops::nms::indices_tensor;
use nextdet_ops::{Boxes, Losses};

/// Classification and regression targets of all sampled RoIs of a batch (mmdet `get_targets`
/// with `concat=True`).
#[derive(Clone, Debug)]
pub struct BBoxTargets {
    /// Label per RoI, `num_classes` for background.
    pub labels: Vec<usize>,
    /// Classification weight per RoI (`pos_weight` for positives, 1 for negatives).
    pub label_weights: Vec<f32>,
    /// Row of each positive RoI in the batch.
    pub pos_rows: Vec<usize>,
    /// `[num_pos, 4]` regression targets of the positives: encoded deltas, or the ground-truth
    /// boxes with `reg_decoded_bbox`.
    pub pos_targets: Tensor,
}

impl BBoxHead {
    /// mmdet `get_targets` over the images of a batch: positives get their ground-truth label
    /// and weight `pos_weight` (1 when `<= 0`), negatives the background label `K` and weight 1;
    /// regression targets of the positives are encoded deltas, or the ground-truth boxes when
    /// `reg_decoded_bbox`. `targets[i]` is image `i`'s ground truth.
    pub fn get_targets(
        &self,
        samples: &[SampledRois],
        targets: &[ImageTargets],
        pos_weight: f32,
        device: &Device,
    ) -> Result<BBoxTargets> {
        let k = self.num_classes();
        let w = if pos_weight <= 0.0 { 1.0 } else { pos_weight };
        let (mut labels, mut label_weights, mut pos_rows) = (Vec::new(), Vec::new(), Vec::new());
        let (mut pos_boxes, mut pos_gts) = (Vec::new(), Vec::new());
        for (img, (s, t)) in samples.iter().zip(targets).enumerate() {
            for (j, &g) in s.pos_gt_inds.iter().enumerate() {
                let (Some(gb), Some(&gl)) = (t.boxes.get(g), t.labels.get(g)) else {
                    bail!("bbox targets: positive {j} of image {img} names ground truth {g} of {}", t.boxes.len());
                };
                pos_rows.push(labels.len());
                labels.push(gl);
                label_weights.push(w);
                pos_gts.push(*gb);
            }
            labels.extend(std::iter::repeat_n(k, s.boxes.len() - s.num_pos));
            label_weights.extend(std::iter::repeat_n(1.0, s.boxes.len() - s.num_pos));
            if s.num_pos > 0 {
                pos_boxes.push(s.boxes.tensor().narrow(0, 0, s.num_pos)?);
            }
        }
        let n = pos_rows.len();
        let gt = Tensor::from_vec(flat(&pos_gts), (n, 4), device)?;
        let pos_targets = if self.cfg.reg_decoded_bbox || n == 0 {
            gt
        } else {
            let p = Boxes::new(Tensor::cat(&pos_boxes, 0)?)?;
            self.coder.encode(&p, &Boxes::new(gt)?)?
        };
        Ok(BBoxTargets { labels, label_weights, pos_rows, pos_targets })
    }

    /// mmdet `BBoxHead.loss`: `loss_cls` (softmax cross entropy weighted by the label weights,
    /// averaged over the RoIs with a positive weight), `loss_bbox` (the regression loss of the
    /// positives' ground-truth-class boxes, summed and divided by the number of sampled RoIs)
    /// and `acc` (top-1 accuracy in percent over all RoIs, detached). `rois: [R, 5]` are the
    /// sampled RoIs (needed to decode boxes with `reg_decoded_bbox`).
    pub fn loss(&self, cls_score: &Tensor, bbox_pred: &Tensor, rois: &Tensor, t: &BBoxTargets) -> Result<Losses> {
        let r = cls_score.dim(0)?;
        if r != t.labels.len() || bbox_pred.dim(0)? != r || rois.dims() != [r, 5] {
            bail!(
                "bbox loss: {r} scores, {} box predictions, rois {:?} for {} targets",
                bbox_pred.dim(0)?,
                rois.dims(),
                t.labels.len()
            );
        }
        let dev = cls_score.device();
        let mut out = Losses::new();
        if r > 0 {
            let nll = cross_entropy(cls_score, &t.labels)?;
            let weights = Tensor::new(t.label_weights.as_slice(), dev)?;
            let avg = (t.label_weights.iter().filter(|&&w| w > 0.0).count() as f64).max(1.0);
            let loss_cls = ((nll * weights)?.sum_all()? * (self.cfg.loss_cls.loss_weight / avg))?;
            out.push_term("loss_cls", loss_cls);
            out.push_metric("acc", accuracy(&cls_score.detach(), &t.labels)?);
        }
        let loss_bbox = if t.pos_rows.is_empty() {
            (bbox_pred.sum_all()? * 0.0)?
        } else {
            let pred = if self.cfg.reg_decoded_bbox {
                self.coder.decode(&Boxes::new(rois.narrow(1, 1, 4)?)?, bbox_pred, None)?
            } else {
                bbox_pred.clone()
            };
            let pos_pred = self.select_class_boxes(&pred, &t.pos_rows, &t.labels)?;
            self.cfg.loss_bbox.compute(&pos_pred, &t.pos_targets, None, Some(r as f64))?
        };
        out.push_term("loss_bbox", loss_bbox);
        Ok(out)
    }

    /// `[rows.len(), 4]`: for each `rows[i]`, the 4 columns of class `labels[rows[i]]` of `pred:
    /// [R, 4K]` (all of `pred`'s columns when class-agnostic). Differentiable.
    pub(super) fn select_class_boxes(&self, pred: &Tensor, rows: &[usize], labels: &[usize]) -> Result<Tensor> {
        let dev = pred.device();
        if self.cfg.reg_class_agnostic {
            return pred.index_select(&indices_tensor(rows, dev)?, 0);
        }
        let k = self.num_classes();
        let flat: Vec<usize> = rows.iter().map(|&i| i * k + labels[i]).collect();
        let r = pred.dim(0)?;
        pred.reshape((r * k, 4))?.index_select(&indices_tensor(&flat, dev)?, 0)
    }
}

/// mmdet `accuracy(topk=1)`: the percentage of rows whose arg-max (first on ties) is the label.
fn accuracy(scores: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let pred = scores.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let hit = pred.iter().zip(labels).filter(|(&p, &l)| p as usize == l).count();
    Tensor::new(100.0 * hit as f32 / labels.len().max(1) as f32, scores.device())
}
