//! The RPN's training loss, mmdetection 2.11's `AnchorHead.loss`: per image, anchors inside the
//! image (`allowed_border`) and inside its padded area (valid flags) are assigned with the
//! `MaxIoUAssigner` and sampled; the sampled ones get classification weight 1 (target 1 for
//! positives), positives get regression targets from the coder. Both losses are summed and
//! divided by `avg_factor = sum_i max(#pos_i, 1) + sum_i max(#neg_i, 1)`.

use super::{RpnHead, RpnOutput};
use crate::losses::{reduce, sigmoid_bce_with_logits, zero_loss};
use crate::targets::ImageTargets;
use candle_core::{bail, Device, Result, Tensor};
use nextdet_ops::nms::indices_tensor;
use nextdet_ops::{anchor_inside_flags, Boxes, Losses};
use rand::rngs::StdRng;

/// Per-image training targets over all anchors of all levels (levels concatenated).
struct ImageAnchorTargets {
    /// Sampled anchors (flat index over all levels) with their objectness target (1 or 0).
    sampled: Vec<(usize, f32)>,
    /// Positive anchors (flat index) with their encoded regression targets.
    pos: Vec<(usize, [f32; 4])>,
    num_pos: usize,
    num_neg: usize,
}

impl RpnHead {
    /// `loss_rpn_cls` and `loss_rpn_bbox` (mmdet `AnchorHead.loss`). Each image's
    /// `meta.pad_size` (its own padded size, mmdet's `pad_shape`, not the batch's) decides the
    /// valid anchors; `meta.img_size` decides which anchors are inside the image for
    /// `allowed_border >= 0`.
    ///
    /// `rngs[i]` draws image `i`'s anchor sample, so that an image's sampling does not depend on
    /// the other images of its batch (or on the rank that trains it).
    pub fn loss(&self, out: &RpnOutput, targets: &[ImageTargets], rngs: &mut [StdRng]) -> Result<Losses> {
        let (n, sizes) = self.featmap_sizes(out)?;
        if targets.len() != n || rngs.len() != n {
            bail!("RpnHead::loss: {n} images but {} targets and {} generators", targets.len(), rngs.len());
        }
        let anchors = self.flat_anchors(&sizes)?;
        let total = anchors.dim(0)?;
        let mut per_image = Vec::with_capacity(n);
        for (t, rng) in targets.iter().zip(rngs.iter_mut()) {
            per_image.push(self.image_targets(&anchors, &sizes, t, rng)?);
        }
        let avg = per_image.iter().map(|p| p.num_pos.max(1) + p.num_neg.max(1)).sum::<usize>() as f64;
        // Predictions in anchor order: [N * total] logits and [N * total, 4] deltas.
        let a = self.num_anchors();
        let cls: Vec<Tensor> =
            out.cls.iter().map(|c| c.permute((0, 2, 3, 1))?.reshape((n, ()))).collect::<Result<_>>()?;
        let cls = Tensor::cat(&cls, 1)?.reshape(n * total)?;
        let reg: Vec<Tensor> = out
            .reg
            .iter()
            .zip(&sizes)
            .map(|(r, &(h, w))| r.permute((0, 2, 3, 1))?.reshape((n, h * w * a, 4)))
            .collect::<Result<_>>()?;
        let reg = Tensor::cat(&reg, 1)?.reshape((n * total, 4))?;
        let dev = cls.device().clone();
        // Only sampled anchors have a non-zero weight: gather them instead of weighting all.
        let (mut idx, mut lbl) = (Vec::new(), Vec::new());
        let (mut pidx, mut ptgt) = (Vec::new(), Vec::new());
        for (i, p) in per_image.iter().enumerate() {
            for &(k, l) in &p.sampled {
                idx.push(i * total + k);
                lbl.push(l);
            }
            for &(k, d) in &p.pos {
                pidx.push(i * total + k);
                ptgt.extend_from_slice(&d);
            }
        }
        let loss_cls = if idx.is_empty() {
            zero_loss(&cls)?
        } else {
            let logits = cls.index_select(&indices_tensor(&idx, &dev)?, 0)?;
            let labels = Tensor::from_vec(lbl, idx.len(), &dev)?;
            reduce(&sigmoid_bce_with_logits(&logits, &labels, None)?, None, Some(avg))?
        };
        let loss_bbox = if pidx.is_empty() {
            zero_loss(&reg)?
        } else {
            let pred = reg.index_select(&indices_tensor(&pidx, &dev)?, 0)?;
            let target = Tensor::from_vec(ptgt, (pidx.len(), 4), &dev)?;
            self.cfg.loss_bbox.compute(&pred, &target, None, Some(avg))?
        };
        let mut losses = Losses::new();
        losses.push_term("loss_rpn_cls", loss_cls);
        losses.push_term("loss_rpn_bbox", loss_bbox);
        Ok(losses)
    }

    /// Assignment, sampling and regression targets of one image (mmdet `_get_targets_single`).
    fn image_targets(
        &self,
        anchors: &Tensor,
        sizes: &[(usize, usize)],
        t: &ImageTargets,
        rng: &mut StdRng,
    ) -> Result<ImageAnchorTargets> {
        let cpu = Device::Cpu;
        let valid = Tensor::cat(&self.anchors.valid_flags(sizes, t.meta.pad_size, &cpu)?, 0)?;
        let flags = anchor_inside_flags(anchors, &valid, t.meta.img_size, self.cfg.train.allowed_border)?;
        let inside: Vec<usize> =
            flags.to_vec1::<u8>()?.iter().enumerate().filter(|(_, &f)| f != 0).map(|(k, _)| k).collect();
        let cand = Boxes::new(anchors.index_select(&indices_tensor(&inside, &cpu)?, 0)?)?;
        let gt = t.gt_boxes(&cpu)?;
        let assign = self.assigner.assign(&cand, &gt, &[], &t.ignore_boxes(&cpu)?)?;
        let s = self.sampler.sample(&assign, rng);
        let mut sampled: Vec<(usize, f32)> = s.pos_inds.iter().map(|&i| (inside[i], 1.0)).collect();
        sampled.extend(s.neg_inds.iter().map(|&i| (inside[i], 0.0)));
        let mut pos = Vec::with_capacity(s.pos_inds.len());
        if !s.pos_inds.is_empty() {
            let pa = cand.select(&indices_tensor(&s.pos_inds, &cpu)?)?;
            let pg = gt.select(&indices_tensor(&s.pos_gt_inds, &cpu)?)?;
            let d = self.coder.encode(&pa, &pg)?.flatten_all()?.to_vec1::<f32>()?;
            for (&i, c) in s.pos_inds.iter().zip(d.chunks_exact(4)) {
                pos.push((inside[i], [c[0], c[1], c[2], c[3]]));
            }
        }
        Ok(ImageAnchorTargets { sampled, pos, num_pos: s.pos_inds.len(), num_neg: s.neg_inds.len() })
    }
}
