//! Proposals from the RPN's outputs, mmdetection 2.11's `RPNHead._get_bboxes`: per level, the
//! `nms_pre` highest sigmoid scores; decode with clipping to the image; drop boxes narrower or
//! shorter than `min_bbox_size` (when > 0); NMS per level (`batched_nms` with the level as id);
//! keep the first `max_per_img`. (mmdet 2.11 skips its size filter when the *sum* of the kept
//! indices equals the box count, a slip that only matters for a handful of boxes; here the
//! filter always applies.) The top-k breaks score ties by anchor index, where mmdet's unstable
//! sort leaves them unspecified.

use super::{ProposalConfig, RpnHead, RpnOutput};
use crate::proposals::Proposals;
use candle_core::{bail, DType, Device, Result, Tensor};
use nextdet_ops::nms::{batched_nms_slices, top_k};
use nextdet_ops::{BatchedNmsOpts, Boxes};
use nextdet_structures::ImageMeta;

impl RpnHead {
    /// The proposals of each image, by descending score, detached, from the head outputs;
    /// `metas[i].img_size` is the image inside the padded input (boxes are clipped to it). See
    /// the module doc.
    pub fn proposals(&self, out: &RpnOutput, metas: &[ImageMeta], cfg: &ProposalConfig) -> Result<Vec<Proposals>> {
        let (n, sizes) = self.featmap_sizes(out)?;
        if metas.len() != n {
            bail!("RpnHead::proposals: {n} images but {} image metas", metas.len());
        }
        let a = self.num_anchors();
        let level_anchors = self.anchors.grid_anchors(&sizes, &Device::Cpu)?;
        let mut cls_levels = Vec::with_capacity(sizes.len());
        let mut reg_levels = Vec::with_capacity(sizes.len());
        for ((c, r), &(h, w)) in out.cls.iter().zip(&out.reg).zip(&sizes) {
            let c = c.detach().to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
            let r = r.detach().to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
            cls_levels.push(c.permute((0, 2, 3, 1))?.reshape((n, h * w * a))?.to_vec2::<f32>()?);
            reg_levels.push(r.permute((0, 2, 3, 1))?.reshape((n, h * w * a * 4))?.to_vec2::<f32>()?);
        }
        let anchor_vecs: Vec<Vec<f32>> =
            level_anchors.iter().map(|t| t.flatten_all()?.to_vec1::<f32>()).collect::<Result<_>>()?;
        let device = out.cls.first().map(|t| t.device().clone()).unwrap_or(Device::Cpu);
        let mut result = Vec::with_capacity(n);
        for (b, meta) in metas.iter().enumerate() {
            let (img_h, img_w) = meta.img_size;
            let (mut scores, mut deltas, mut base, mut ids) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for l in 0..sizes.len() {
                let logits = &cls_levels[l][b];
                let s: Vec<f32> = logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect();
                let keep: Vec<usize> =
                    if s.len() > cfg.nms_pre { top_k(&s, cfg.nms_pre)? } else { (0..s.len()).collect() };
                for k in keep {
                    scores.push(s[k]);
                    deltas.extend_from_slice(&reg_levels[l][b][4 * k..4 * k + 4]);
                    base.extend_from_slice(&anchor_vecs[l][4 * k..4 * k + 4]);
                    ids.push(l as i64);
                }
            }
            let m = scores.len();
            let boxes = if m == 0 {
                Vec::new()
            } else {
                let d = Tensor::from_vec(deltas, (m, 4), &Device::Cpu)?;
                let rois = Boxes::from_slice(&base, &Device::Cpu)?;
                self.coder.decode(&rois, &d, Some((img_h as f32, img_w as f32)))?.flatten_all()?.to_vec1::<f32>()?
            };
            let (boxes, scores, ids) = if cfg.min_bbox_size > 0.0 {
                let ok: Vec<usize> = (0..m)
                    .filter(|&i| {
                        let bx = &boxes[4 * i..4 * i + 4];
                        bx[2] - bx[0] >= cfg.min_bbox_size && bx[3] - bx[1] >= cfg.min_bbox_size
                    })
                    .collect();
                let bx: Vec<f32> = ok.iter().flat_map(|&i| boxes[4 * i..4 * i + 4].to_vec()).collect();
                (bx, ok.iter().map(|&i| scores[i]).collect(), ok.iter().map(|&i| ids[i]).collect())
            } else {
                (boxes, scores, ids)
            };
            let keep = batched_nms_slices(&boxes, &scores, &ids, &BatchedNmsOpts::new(cfg.nms_iou))?;
            let kept = keep.len().min(cfg.max_per_img);
            let (mut xyxy, mut score) = (Vec::with_capacity(kept * 4), Vec::with_capacity(kept));
            for &k in keep.iter().take(cfg.max_per_img) {
                xyxy.extend_from_slice(&boxes[4 * k..4 * k + 4]);
                score.push(scores[k]);
            }
            result.push(Proposals {
                boxes: Boxes::from_slice(&xyxy, &device)?,
                scores: Some(Tensor::from_vec(score, kept, &device)?),
            });
        }
        Ok(result)
    }
}
