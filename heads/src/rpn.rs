//! mmdetection 2.11's `RPNHead` (SWD `models/dense_heads/rpn_head.py`, `anchor_head.py`): the
//! region proposal network, its training loss and its proposals.
//!
//! Shapes: `N` images, `L` pyramid levels, `A` anchors per position, level `l` is `H_l x W_l`.
//! The head is a shared 3x3 conv + ReLU, then 1x1 convs giving `cls: [N, A, H, W]` (one sigmoid
//! logit per anchor, `use_sigmoid_cls=True`) and `reg: [N, 4A, H, W]` (DeltaXYWH deltas).
//! Anchors of a level are ordered position-major then anchor (mmdet's), which is the order of
//! `cls.permute(0, 2, 3, 1)` flattened.
//!
//! Training (`AnchorHead.loss`): per image, anchors inside the image (`allowed_border`) and
//! inside its padded area (valid flags) are assigned with the `MaxIoUAssigner` and sampled; the
//! sampled ones get classification weight 1 (target 1 for positives), positives get regression
//! targets from the coder. Both losses are summed and divided by `avg_factor =
//! sum_i max(#pos_i, 1) + sum_i max(#neg_i, 1)`.
//!
//! Proposals (`RPNHead._get_bboxes`): per level, the `nms_pre` highest sigmoid scores; decode
//! with clipping to the image; drop boxes narrower or shorter than `min_bbox_size` (when > 0);
//! NMS per level (`batched_nms` with the level as id); keep the first `max_per_img`. (mmdet
//! 2.11 skips its size filter when the *sum* of the kept indices equals the box count, a slip
//! that only matters for a handful of boxes; here the filter always applies.) The top-k breaks
//! score ties by anchor index, where mmdet's unstable sort leaves them unspecified.

use crate::assigner::{MaxIoUAssigner, MaxIoUAssignerConfig};
use crate::losses::{reduce, sigmoid_bce_with_logits, zero_loss, RegLossConfig};
use crate::sampler::{RandomSampler, RandomSamplerConfig};
use crate::targets::ImageTargets;
use candle_core::{bail, DType, Device, Result, Tensor};
use nextdet_ops::nms::{batched_nms_slices, indices_tensor, top_k};
use nextdet_ops::nn::Conv2d;
use nextdet_ops::{relu, AnchorGenerator, BatchedNmsOpts, Boxes, DeltaXywhCoder, Init, Scope};
use rand::rngs::StdRng;
use serde::Deserialize;

/// mmdet's `anchor_generator=dict(type='AnchorGenerator', ...)` without the type.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnchorGeneratorConfig {
    /// Anchor sizes in multiples of the level's stride (`[8]`).
    pub scales: Vec<f32>,
    /// Height / width ratios (`[0.5, 1, 2]`).
    pub ratios: Vec<f32>,
    /// Stride of each pyramid level (`[4, 8, 16, 32, 64]`).
    pub strides: Vec<usize>,
}

/// mmdet's `bbox_coder=dict(type='DeltaXYWHBBoxCoder', ...)` without the type.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BboxCoderConfig {
    /// Subtracted from the deltas when encoding (default zeros).
    #[serde(default)]
    pub target_means: [f32; 4],
    /// Divides the deltas when encoding (default ones).
    #[serde(default = "ones")]
    pub target_stds: [f32; 4],
}

fn ones() -> [f32; 4] {
    [1.0; 4]
}

/// The RPN's part of mmdet's `train_cfg.rpn`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RpnTrainConfig {
    /// Which anchors are positive, negative or ignored.
    pub assigner: MaxIoUAssignerConfig,
    /// How many anchors per image are trained on.
    pub sampler: RandomSamplerConfig,
    /// Pixels an anchor may stick out of the image and still train; negative: no limit.
    pub allowed_border: f32,
}

/// Proposal generation settings (mmdet's `train_cfg.rpn_proposal` / `test_cfg.rpn`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProposalConfig {
    /// Highest-scored anchors kept per level before NMS.
    pub nms_pre: usize,
    /// Proposals kept per image after NMS.
    pub max_per_img: usize,
    /// NMS IoU threshold (a box is suppressed above it).
    pub nms_iou: f32,
    /// Boxes with a side below this are dropped before NMS (0: none).
    #[serde(default)]
    pub min_bbox_size: f32,
}

/// The `rpn_head` section of a config, mmdet's `RPNHead` arguments plus its train/test settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RpnHeadConfig {
    /// Channels of the shared 3x3 conv (256).
    #[serde(default = "default_feat_channels")]
    pub feat_channels: usize,
    /// Anchors per level.
    pub anchor_generator: AnchorGeneratorConfig,
    /// Delta normalization.
    #[serde(default = "default_coder")]
    pub bbox_coder: BboxCoderConfig,
    /// Regression loss (L1 for Mask R-CNN, SmoothL1 beta 1/9 for Cascade).
    pub loss_bbox: RegLossConfig,
    /// Assignment and sampling of anchors.
    pub train: RpnTrainConfig,
    /// Proposals handed to the RoI head during training.
    pub train_proposals: ProposalConfig,
    /// Proposals at test time.
    pub test_proposals: ProposalConfig,
}

fn default_feat_channels() -> usize {
    256
}

fn default_coder() -> BboxCoderConfig {
    BboxCoderConfig { target_means: [0.0; 4], target_stds: [1.0; 4] }
}

/// Raw head outputs per level.
#[derive(Clone, Debug)]
pub struct RpnOutput {
    /// `[N, A, H, W]` objectness logits per level.
    pub cls: Vec<Tensor>,
    /// `[N, 4A, H, W]` box deltas per level.
    pub reg: Vec<Tensor>,
}

/// The RPN head: layers, anchors, coder, assigner and sampler.
pub struct RpnHead {
    rpn_conv: Conv2d,
    rpn_cls: Conv2d,
    rpn_reg: Conv2d,
    anchors: AnchorGenerator,
    coder: DeltaXywhCoder,
    assigner: MaxIoUAssigner,
    sampler: RandomSampler,
    cfg: RpnHeadConfig,
}

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
    /// Builds the head for `in_channels`-channel pyramid levels under `scope` (the caller passes
    /// `root.pp("rpn_head")`): `rpn_conv`, `rpn_cls` (`A` outputs) and `rpn_reg` (`4A`), each
    /// with `weight` and `bias`, initialised normal(0, 0.01) with zero bias as mmdet does.
    pub fn new(cfg: &RpnHeadConfig, in_channels: usize, scope: &Scope) -> Result<Self> {
        let ag = &cfg.anchor_generator;
        let anchors = AnchorGenerator::new(&ag.strides, &ag.ratios, &ag.scales)
            .map_err(|e| candle_core::Error::Msg(format!("rpn_head.anchor_generator: {e}")))?;
        if cfg.bbox_coder.target_stds.iter().any(|&s| s <= 0.0) {
            bail!("rpn_head.bbox_coder.target_stds: must be positive, got {:?}", cfg.bbox_coder.target_stds);
        }
        if cfg.feat_channels == 0 || in_channels == 0 {
            bail!("rpn_head.feat_channels: {} and in_channels {in_channels} must be positive", cfg.feat_channels);
        }
        if cfg.loss_bbox.on_decoded_boxes() {
            bail!("rpn_head.loss_bbox: GIoULoss needs decoded boxes, which the RPN does not regress");
        }
        let a = anchors.num_base_anchors();
        let (f, init) = (cfg.feat_channels, Init::Normal { std: 0.01 });
        Ok(Self {
            rpn_conv: Conv2d::new(&scope.pp("rpn_conv"), in_channels, f, 3, 1, 1, init)?,
            rpn_cls: Conv2d::new(&scope.pp("rpn_cls"), f, a, 1, 1, 0, init)?,
            rpn_reg: Conv2d::new(&scope.pp("rpn_reg"), f, 4 * a, 1, 1, 0, init)?,
            anchors,
            coder: DeltaXywhCoder::new(cfg.bbox_coder.target_means, cfg.bbox_coder.target_stds),
            assigner: MaxIoUAssigner::new(&cfg.train.assigner),
            sampler: RandomSampler::new(&cfg.train.sampler),
            cfg: cfg.clone(),
        })
    }

    /// The configuration the head was built from.
    pub fn config(&self) -> &RpnHeadConfig {
        &self.cfg
    }

    /// Anchors per position `A`.
    pub fn num_anchors(&self) -> usize {
        self.anchors.num_base_anchors()
    }

    /// Head outputs for the pyramid `feats` (one NCHW tensor per anchor level).
    pub fn forward(&self, feats: &[Tensor]) -> Result<RpnOutput> {
        if feats.len() != self.anchors.num_levels() {
            bail!("RpnHead::forward: {} feature maps for {} anchor strides", feats.len(), self.anchors.num_levels());
        }
        let (mut cls, mut reg) = (Vec::with_capacity(feats.len()), Vec::with_capacity(feats.len()));
        for x in feats {
            let x = relu(&self.rpn_conv.forward(x)?)?;
            cls.push(self.rpn_cls.forward(&x)?);
            reg.push(self.rpn_reg.forward(&x)?);
        }
        Ok(RpnOutput { cls, reg })
    }

    /// `(h, w)` of each level's map, checking that `out` fits this head.
    fn featmap_sizes(&self, out: &RpnOutput) -> Result<(usize, Vec<(usize, usize)>)> {
        let a = self.num_anchors();
        if out.cls.len() != self.anchors.num_levels() || out.reg.len() != out.cls.len() {
            bail!(
                "RpnHead: {} cls / {} reg levels for {} anchor strides",
                out.cls.len(),
                out.reg.len(),
                self.anchors.num_levels()
            );
        }
        let mut n = None;
        let mut sizes = Vec::with_capacity(out.cls.len());
        for (c, r) in out.cls.iter().zip(&out.reg) {
            let (bn, ca, h, w) = c.dims4()?;
            if ca != a || r.dims() != [bn, 4 * a, h, w] || n.is_some_and(|m| m != bn) {
                bail!("RpnHead: level outputs {:?} / {:?} do not fit {a} anchors per position", c.dims(), r.dims());
            }
            n = Some(bn);
            sizes.push((h, w));
        }
        Ok((n.unwrap_or(0), sizes))
    }

    /// All anchors of all levels, concatenated, as `[x1, y1, x2, y2]`.
    fn flat_anchors(&self, sizes: &[(usize, usize)]) -> Result<Vec<[f32; 4]>> {
        let mut all = Vec::new();
        for t in self.anchors.grid_anchors(sizes, &Device::Cpu)? {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            all.extend(v.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]));
        }
        Ok(all)
    }

    /// `loss_rpn_cls` and `loss_rpn_bbox` for a batch whose images are all padded to `pad_size`
    /// (see [`RpnHead::loss_with_pad_shapes`]).
    pub fn loss(
        &self,
        out: &RpnOutput,
        targets: &[ImageTargets],
        pad_size: (usize, usize),
        rng: &mut StdRng,
    ) -> Result<Vec<(String, Tensor)>> {
        self.loss_with_pad_shapes(out, targets, &vec![pad_size; targets.len()], rng)
    }

    /// `loss_rpn_cls` and `loss_rpn_bbox` (mmdet `AnchorHead.loss`). `pad_shapes[i]` is image
    /// `i`'s own padded size (mmdet's `img_meta['pad_shape']`: its size rounded up to the size
    /// divisor, not the batch's), which decides the valid anchors; `targets[i].img_size` decides
    /// which anchors are inside the image for `allowed_border >= 0`.
    pub fn loss_with_pad_shapes(
        &self,
        out: &RpnOutput,
        targets: &[ImageTargets],
        pad_shapes: &[(usize, usize)],
        rng: &mut StdRng,
    ) -> Result<Vec<(String, Tensor)>> {
        let (n, sizes) = self.featmap_sizes(out)?;
        if targets.len() != n || pad_shapes.len() != n {
            bail!("RpnHead::loss: {n} images but {} targets and {} pad shapes", targets.len(), pad_shapes.len());
        }
        let anchors = self.flat_anchors(&sizes)?;
        let total = anchors.len();
        let mut per_image = Vec::with_capacity(n);
        for (t, &pad) in targets.iter().zip(pad_shapes) {
            per_image.push(self.image_targets(&anchors, &sizes, t, pad, rng)?);
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
        Ok(vec![("loss_rpn_cls".into(), loss_cls), ("loss_rpn_bbox".into(), loss_bbox)])
    }

    /// Assignment, sampling and regression targets of one image (mmdet `_get_targets_single`).
    fn image_targets(
        &self,
        anchors: &[[f32; 4]],
        sizes: &[(usize, usize)],
        t: &ImageTargets,
        pad: (usize, usize),
        rng: &mut StdRng,
    ) -> Result<ImageAnchorTargets> {
        let valid: Vec<u8> = self
            .anchors
            .valid_flags(sizes, pad, &Device::Cpu)?
            .iter()
            .map(|f| f.to_vec1::<u8>())
            .collect::<Result<Vec<_>>>()?
            .concat();
        let b = self.cfg.train.allowed_border;
        let (h, w) = (t.img_size.0 as f32, t.img_size.1 as f32);
        let inside: Vec<usize> = (0..anchors.len())
            .filter(|&k| {
                let a = &anchors[k];
                valid[k] != 0 && (b < 0.0 || (a[0] >= -b && a[1] >= -b && a[2] < w + b && a[3] < h + b))
            })
            .collect();
        let cand: Vec<[f32; 4]> = inside.iter().map(|&k| anchors[k]).collect();
        let assign = self.assigner.assign(&cand, &t.boxes, &[], &[]);
        let s = self.sampler.sample(&assign, rng);
        let mut sampled: Vec<(usize, f32)> = s.pos_inds.iter().map(|&i| (inside[i], 1.0)).collect();
        sampled.extend(s.neg_inds.iter().map(|&i| (inside[i], 0.0)));
        let mut pos = Vec::with_capacity(s.pos_inds.len());
        if !s.pos_inds.is_empty() {
            let flat = |bs: Vec<[f32; 4]>| bs.into_iter().flatten().collect::<Vec<f32>>();
            let pa = Boxes::from_slice(&flat(s.pos_inds.iter().map(|&i| cand[i]).collect()), &Device::Cpu)?;
            let pg = Boxes::from_slice(&flat(s.pos_gt_inds.iter().map(|&g| t.boxes[g]).collect()), &Device::Cpu)?;
            let d = self.coder.encode(&pa, &pg)?.flatten_all()?.to_vec1::<f32>()?;
            for (&i, c) in s.pos_inds.iter().zip(d.chunks_exact(4)) {
                pos.push((inside[i], [c[0], c[1], c[2], c[3]]));
            }
        }
        Ok(ImageAnchorTargets { sampled, pos, num_pos: s.pos_inds.len(), num_neg: s.neg_inds.len() })
    }

    /// Proposals per image, each `[P, 5]` (`x1, y1, x2, y2, score`, by descending score,
    /// detached) from the head outputs, with `img_sizes[i] = (h, w)` the image inside the padded
    /// input (boxes are clipped to it). mmdet 2.11 `RPNHead._get_bboxes`; see the module doc.
    pub fn proposals(
        &self,
        out: &RpnOutput,
        img_sizes: &[(usize, usize)],
        cfg: &ProposalConfig,
    ) -> Result<Vec<Tensor>> {
        let (n, sizes) = self.featmap_sizes(out)?;
        if img_sizes.len() != n {
            bail!("RpnHead::proposals: {n} images but {} image sizes", img_sizes.len());
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
        for (b, &(img_h, img_w)) in img_sizes.iter().enumerate() {
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
            let keep = batched_nms_slices(&boxes, &scores, &ids, &BatchedNmsOpts::new(cfg.nms_iou as f64))?;
            let mut dets = Vec::with_capacity(keep.len().min(cfg.max_per_img) * 5);
            for &k in keep.iter().take(cfg.max_per_img) {
                dets.extend_from_slice(&boxes[4 * k..4 * k + 4]);
                dets.push(scores[k]);
            }
            let p = dets.len() / 5;
            result.push(Tensor::from_vec(dets, (p, 5), &device)?);
        }
        Ok(result)
    }
}
