//! Test-time post-processing of the box head: mmdet `BBoxHead.get_bboxes` with
//! `multiclass_nms` (`mmdet/core/post_processing/bbox_nms.py`) and `regress_by_class`, which a
//! cascade stage uses to refine its RoIs.

use super::BBoxHead;
use crate::results::InstanceResult;
use crate::roi::RcnnTestConfig;
use candle_core::{Result, Tensor, D};
use nextdet_ops::nms::batched_nms_slices;
use nextdet_ops::{BatchedNmsOpts, Boxes};
use nextdet_structures::ImageMeta;

impl BBoxHead {
    /// mmdet `regress_by_class`: decodes, for each RoI, the deltas of class `labels[i]` of
    /// `bbox_pred: [P, 4K]` from `boxes: [P, 4]`, clipped to `img_size = (h, w)`. `[P, 4]`.
    pub fn regress_by_class(
        &self,
        boxes: &Tensor,
        labels: &[usize],
        bbox_pred: &Tensor,
        img_size: (usize, usize),
    ) -> Result<Tensor> {
        let rows: Vec<usize> = (0..labels.len()).collect();
        let deltas = self.select_class_boxes(bbox_pred, &rows, labels)?;
        self.coder.decode(&Boxes::new(boxes.clone())?, &deltas, Some((img_size.0 as f32, img_size.1 as f32)))
    }

    /// mmdet `get_bboxes` + `multiclass_nms` for one image: softmax of `cls_score: [P, K + 1]`,
    /// boxes decoded from `boxes: [P, 4]` (the RoIs without the batch column) by `bbox_pred`
    /// and clipped to `meta.img_size`, divided by the scale factor, then per class the scores
    /// `> score_thr`, class-wise NMS and the best `max_per_img`.
    pub fn get_bboxes(
        &self,
        boxes: &Tensor,
        cls_score: &Tensor,
        bbox_pred: &Tensor,
        meta: &ImageMeta,
        cfg: &RcnnTestConfig,
    ) -> Result<InstanceResult> {
        let p = boxes.dim(0)?;
        if p == 0 {
            return Ok(InstanceResult::default());
        }
        let k = self.num_classes();
        let scores = softmax_rows(&cls_score.detach())?;
        let (h, w) = meta.img_size;
        let decoded =
            self.coder.decode(&Boxes::new(boxes.detach())?, &bbox_pred.detach(), Some((h as f32, w as f32)))?;
        let [sx, sy] = meta.scale_factor;
        let decoded = decoded
            .reshape((p, decoded.dim(1)? / 4, 4))?
            .broadcast_div(&Tensor::new(&[[[sx, sy, sx, sy]]], boxes.device())?)?;
        let per_row = decoded.dim(1)?;
        let b = decoded.flatten_all()?.to_vec1::<f32>()?;
        let s = scores.flatten_all()?.to_vec1::<f32>()?;
        let (mut xyxy, mut sc, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..p {
            for c in 0..k {
                let v = s[i * (k + 1) + c];
                if v > cfg.score_thr {
                    let j = if per_row == 1 { 0 } else { c };
                    xyxy.extend_from_slice(&b[(i * per_row + j) * 4..(i * per_row + j) * 4 + 4]);
                    sc.push(v);
                    ids.push(c as i64);
                }
            }
        }
        let mut keep = batched_nms_slices(&xyxy, &sc, &ids, &BatchedNmsOpts::new(cfg.nms_iou))?;
        keep.truncate(cfg.max_per_img);
        Ok(InstanceResult {
            boxes: keep.iter().map(|&i| [xyxy[4 * i], xyxy[4 * i + 1], xyxy[4 * i + 2], xyxy[4 * i + 3]]).collect(),
            scores: keep.iter().map(|&i| sc[i]).collect(),
            labels: keep.iter().map(|&i| ids[i] as usize).collect(),
            masks: None,
        })
    }
}

/// Row-wise softmax of `[R, C]` (PyTorch's `F.softmax(dim=-1)`).
pub fn softmax_rows(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}
