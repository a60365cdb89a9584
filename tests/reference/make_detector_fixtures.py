"""Generate the end-to-end detector fixtures (models/tests/detector_parity.rs).

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_detector_fixtures.py

One full Mask R-CNN and one full Cascade Mask R-CNN inference on one small image, assembled here
from torch / torchvision ops with mmdetection 2.11's test-time semantics (mmdet is not installed;
the semantics are written out following mmdetection 2.11's models/detectors/two_stage.py, necks/fpn.py,
dense_heads/rpn_head.py (`_get_bboxes`), core/anchor/anchor_generator.py,
core/bbox/coder/delta_xywh_bbox_coder.py, roi_heads/roi_extractors/single_level_roi_extractor.py,
roi_heads/bbox_heads/{bbox_head,convfc_bbox_head}.py, core/post_processing/bbox_nms.py,
roi_heads/mask_heads/fcn_mask_head.py (`get_seg_masks`, `_do_paste_mask` on the CPU),
roi_heads/{standard_roi_head,cascade_roi_head,test_mixins}.py and core/post_processing/merge_augs.py
(`merge_aug_masks`)). The ConvNeXt backbone is tests/reference/convnext_ref.py (official layout
plus norm0..3). The parts are re-implemented here rather than imported from the part-fixture
scripts, so this end-to-end reference is an independent second reading of the semantics:

  * image: [1,3,128,192] padded batch; the resized image is 120x180 (`img_shape`; rows 120.. and
    columns 180.. are zero padding after normalization, as mmdet pads after Normalize), the
    original image 80x122 (`ori_shape`), scale factor (w, h) = (180/122, 120/80). (Smaller
    images give no RoI of scale >= 112, i.e. none on the second FPN level.)
  * backbone ConvNeXt depths [1,1,1,1], dims [8,16,32,64], layer scale on; outputs norm_i(stage_i).
  * FPN(in [8,16,32,64], out 16, num_outs 5): 1x1 laterals, top-down nearest to size=prev_shape,
    3x3 outputs, P6 = max_pool2d(P5, 1, stride 2).
  * RPN: 3x3 conv + relu, 1x1 cls (3 anchors, sigmoid) / reg (12); anchors scales [8], ratios
    [0.5,1,2], strides [4..64], center offset 0, no rounding; per level sort + top nms_pre (1000);
    decode (means 0, stds 1, dw/dh clamp |log(16/1000)|, clip to img_shape); batched NMS with the
    level as id (mmcv: coordinate offset by id * (max + 1), IoU > 0.7 suppresses), max_per_img 1000.
  * RoI extractor: level = floor(log2(sqrt(area) / 56 + 1e-6)) clamped to [0, 3]; torchvision
    roi_align(aligned=True, sampling_ratio=0) = mmcv RoIAlign; 7x7 for boxes, 14x14 for masks.
  * Mask R-CNN box head Shared2FCBBoxHead(fc 32), 3 classes; softmax; decode with stds
    [.1,.1,.2,.2] clipped to img_shape; boxes / scale_factor; multiclass_nms (score > 0.05
    strict, class-offset batched NMS at 0.5, first 100). Mask head FCNMaskHead(4 convs 16,
    deconv x2, 1x1 logits), masks from the detections times scale_factor, sigmoid, channel of
    the label, pasted at ori_shape with the CPU skip_empty window and grid_sample, >= 0.5.
  * Cascade: 3 ConvFCBBoxHead(4 convs 8 channels, conv without bias + BN (eval, running stats
    random) + relu, 1 fc 32) with stds [.1,.1,.2,.2] / [.05,.05,.1,.1] / [.033,.033,.067,.067];
    between stages the RoIs are regressed by the argmax foreground class of that stage's
    logits; final scores are softmax(mean of the 3 stages' logits), boxes from the last
    stage's regression; masks are the mean of the 3 mask heads' sigmoids (merge_aug_masks).

Weights are random and deliberately non-trivial: fc_cls biases make a few dozen boxes score
above 0.05, fc_reg biases grow the boxes so some RoIs reach the second FPN level, mask logits
are spread so few pixels sit near 0.5. The script asserts that every discrete decision is
further from its threshold than float noise could move it (MIN_MARGINS).

Writes tests/fixtures/detector/ (deterministic, seed 0):
  common.safetensors      backbone.*, neck.*, rpn_head.* (mmdetection names), shared by both
  mask_rcnn.safetensors   roi_head.* of the Mask R-CNN (StandardRoIHead)
  cascade.safetensors     roi_head.* of the Cascade Mask R-CNN (CascadeRoIHead), BN buffers included
  input.safetensors       image_u8 [3,120,180]: the resized image before Normalize and Pad
                          (the test normalizes and pads it as mmdet does)
  expected.json           meta (img_size, ori_size, scale_factor) and, per model, boxes, scores,
                          labels, masks as uncompressed COCO RLE counts (column-major runs
                          starting with zeros, at ori_size), mask_pixels_near_thr (per mask, the
                          pixels within MASK_BAND of the threshold: the test's bound), the
                          margins of every discrete decision and the RoI count per FPN level
The configs that describe these models are tests/configs/detector_tiny_{mask_rcnn,cascade}.yaml.
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.ops import nms, roi_align

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convnext_ref import ConvNeXt, random_init, state_dict_f32  # noqa: E402

OUT = os.path.join("tests", "fixtures", "detector")

DEPTHS, DIMS = [1, 1, 1, 1], [8, 16, 32, 64]
FPN_C = 16
NUM_CLASSES = 3
FC = 32
MASK_C = 16
CASCADE_CONV_C = 8
PAD = (128, 192)
IMG_SHAPE = (120, 180)
ORI_SHAPE = (80, 122)
# mmdet's per-axis scale factors new/old, as float32 (what both sides compute with).
SCALE = (float(np.float32(180 / 122)), float(np.float32(120 / 80)))
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]

RPN_STRIDES, RPN_RATIOS, RPN_SCALES = [4, 8, 16, 32, 64], [0.5, 1.0, 2.0], [8.0]
RPN_TEST = dict(nms_pre=1000, max_per_img=1000, nms_iou=0.7)
RCNN_TEST = dict(score_thr=0.05, nms_iou=0.5, max_per_img=100, mask_thr_binary=0.5)
ROI_STRIDES = [4, 8, 16, 32]
STAGE_STDS = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
BN_EPS = 1e-5
# Gains and biases chosen so that the random model gives a few dozen detections (the fc_cls
# background bias, last, keeps most boxes under score_thr; the cascade averages three stages'
# logits, which narrows their spread, hence its larger gain), and so that every discrete
# decision is far from its threshold (see MIN_MARGINS).
RPN_CLS_GAIN = 1.5
RCNN_GROW = 0.4
CLS_GAIN, CLS_BIAS = 0.5, [-0.3, -0.8, -0.5, 4.3]
CASCADE_CLS_GAIN, CASCADE_CLS_BIAS = 2.0, [-0.3, -0.8, -0.5, 5.5]
SEED = 0
# Smallest allowed distance of each discrete decision from its threshold (a rerun that lands
# closer fails instead of writing a fixture that float noise could flip): sorted-score gaps and
# score thresholds in probability, IoUs, the RoI level's log2 and the cascade's argmax logits.
MIN_MARGINS = dict(rpn_topk_score_gap=2e-5, rpn_nms_iou=5e-6, roi_level_log2=1e-3, rcnn_score_thr=5e-6,
                   rcnn_nms_iou=5e-6, rcnn_max_per_img_gap=5e-6, cascade_argmax_logit_gap=1e-4)
# Mask pixels whose probability is this close to mask_thr_binary may flip under float noise;
# the expected file counts them per mask (`mask_pixels_near_thr`), the test's per-mask bound.
MASK_BAND = 1e-4

G = torch.Generator().manual_seed(SEED)


# ----------------------------------------------------------------------------- random weights


def randn(*shape, scale=1.0):
    return torch.randn(*shape, generator=G) * scale


def unif(*shape, lo=-0.1, hi=0.1):
    return torch.empty(*shape).uniform_(lo, hi, generator=G)


def conv_w(cout, cin, k, gain=1.0):
    return randn(cout, cin, k, k, scale=gain / math.sqrt(cin * k * k))


def fc_w(cout, cin, gain=1.0):
    return randn(cout, cin, scale=gain / math.sqrt(cin))


def backbone_weights():
    m = ConvNeXt(DEPTHS, DIMS, num_classes=1, detection=True)
    random_init(m, G)
    sd = state_dict_f32(m)
    return {f"backbone.{k}": v for k, v in sd.items() if not (k.startswith("norm.") or k.startswith("head."))}, m


def fpn_weights():
    w = {}
    for i, c in enumerate(DIMS):
        w[f"neck.lateral_convs.{i}.conv.weight"] = conv_w(FPN_C, c, 1)
        w[f"neck.lateral_convs.{i}.conv.bias"] = unif(FPN_C)
        w[f"neck.fpn_convs.{i}.conv.weight"] = conv_w(FPN_C, FPN_C, 3)
        w[f"neck.fpn_convs.{i}.conv.bias"] = unif(FPN_C)
    return w


def rpn_weights():
    a = len(RPN_RATIOS) * len(RPN_SCALES)
    return {
        "rpn_head.rpn_conv.weight": conv_w(FPN_C, FPN_C, 3, 1.4),
        "rpn_head.rpn_conv.bias": unif(FPN_C),
        "rpn_head.rpn_cls.weight": conv_w(a, FPN_C, 1, RPN_CLS_GAIN),
        "rpn_head.rpn_cls.bias": unif(a),
        "rpn_head.rpn_reg.weight": conv_w(4 * a, FPN_C, 1, 0.3),
        "rpn_head.rpn_reg.bias": unif(4 * a),
    }


def cls_bias(values):
    return torch.tensor(values)


def reg_bias(stds):
    """fc_reg bias: small, but dw/dh raised so that boxes grow by exp(RCNN_GROW) per stage; the
    larger boxes reach the second FPN level (scale >= 112) in the mask and cascade extractors."""
    b = unif(4 * NUM_CLASSES).view(NUM_CLASSES, 4)
    b[:, 2] += RCNN_GROW / stds[2]
    b[:, 3] += RCNN_GROW / stds[3]
    return b.reshape(-1)


def shared2fc_weights(p):
    k, d = NUM_CLASSES, FPN_C * 49
    return {
        f"{p}.shared_fcs.0.weight": fc_w(FC, d, 1.4),
        f"{p}.shared_fcs.0.bias": unif(FC),
        f"{p}.shared_fcs.1.weight": fc_w(FC, FC, 1.4),
        f"{p}.shared_fcs.1.bias": unif(FC),
        f"{p}.fc_cls.weight": fc_w(k + 1, FC, CLS_GAIN),
        f"{p}.fc_cls.bias": cls_bias(CLS_BIAS),
        f"{p}.fc_reg.weight": fc_w(4 * k, FC, 0.5),
        f"{p}.fc_reg.bias": reg_bias(STAGE_STDS[0]),
    }


def convfc_bn_weights(p, stds):
    k, w, cin = NUM_CLASSES, {}, FPN_C
    for i in range(4):
        w[f"{p}.shared_convs.{i}.conv.weight"] = conv_w(CASCADE_CONV_C, cin, 3, 1.4)
        w[f"{p}.shared_convs.{i}.bn.weight"] = unif(CASCADE_CONV_C, lo=0.6, hi=1.4)
        w[f"{p}.shared_convs.{i}.bn.bias"] = unif(CASCADE_CONV_C)
        w[f"{p}.shared_convs.{i}.bn.running_mean"] = randn(CASCADE_CONV_C, scale=0.1)
        w[f"{p}.shared_convs.{i}.bn.running_var"] = unif(CASCADE_CONV_C, lo=0.5, hi=1.5)
        w[f"{p}.shared_convs.{i}.bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
        cin = CASCADE_CONV_C
    d = CASCADE_CONV_C * 49
    w.update({
        f"{p}.shared_fcs.0.weight": fc_w(FC, d, 1.4),
        f"{p}.shared_fcs.0.bias": unif(FC),
        f"{p}.fc_cls.weight": fc_w(k + 1, FC, CASCADE_CLS_GAIN),
        f"{p}.fc_cls.bias": cls_bias(CASCADE_CLS_BIAS),
        f"{p}.fc_reg.weight": fc_w(4 * k, FC, 0.5),
        f"{p}.fc_reg.bias": reg_bias(stds),
    })
    return w


def mask_head_weights(p):
    w, cin = {}, FPN_C
    for i in range(4):
        w[f"{p}.convs.{i}.conv.weight"] = conv_w(MASK_C, cin, 3, 1.4)
        w[f"{p}.convs.{i}.conv.bias"] = unif(MASK_C)
        cin = MASK_C
    w[f"{p}.upsample.weight"] = randn(MASK_C, MASK_C, 2, 2, scale=1.4 / math.sqrt(MASK_C))
    w[f"{p}.upsample.bias"] = unif(MASK_C)
    w[f"{p}.conv_logits.weight"] = conv_w(NUM_CLASSES, MASK_C, 1, 4.0)
    w[f"{p}.conv_logits.bias"] = unif(NUM_CLASSES, lo=-0.5, hi=0.5)
    return w


# ----------------------------------------------------------------------------- input


def make_image():
    """A synthetic 80x122 RGB picture (shapes on a gradient, plus noise) resized to 120x180
    (bilinear, rounded to u8 as the resize of a u8 image gives): `(resized_u8, input)` where
    input is the batch mmdet feeds the network: (x - mean) / std in float32, then zero-padded
    to 128x192."""
    h, w = ORI_SHAPE
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    img = torch.stack([60 + xx, 90 + 1.5 * yy, 200 - xx - yy])
    img[:, 10:44, 16:60] = torch.tensor([220.0, 40.0, 50.0])[:, None, None]
    ell = ((xx - 88) / 22) ** 2 + ((yy - 50) / 18) ** 2 <= 1
    img[:, ell] = torch.tensor([30.0, 200.0, 80.0])[:, None]
    img = (img + randn(3, h, w, scale=12.0)).clamp(0, 255).round()
    img = F.interpolate(img[None], size=IMG_SHAPE, mode="bilinear", align_corners=False)[0]
    u8 = img.round().clamp(0, 255).to(torch.uint8)
    x = (u8.float() - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    out = torch.zeros(1, 3, *PAD)
    out[0, :, : IMG_SHAPE[0], : IMG_SHAPE[1]] = x
    return u8, out


# ----------------------------------------------------------------------------- margins


MARGINS = {}
LEVELS = {}  # RoI count per FPN level, per RoI output size (7: boxes, 14: masks)


def margin(name, value):
    """Keeps the smallest distance of any discrete decision from its threshold."""
    MARGINS[name] = min(MARGINS.get(name, math.inf), float(value))


def iou_matrix(a, b):
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (aa[:, None] + ab[None] - inter)


def batched_nms(boxes, scores, ids, thr, name):
    """mmcv batched_nms below its split threshold: offset each id's boxes by id * (max + 1),
    then NMS (sorted by score, IoU > thr suppresses). Also records, as the NMS margin, how close
    any box's largest IoU with a higher-scored kept box of its id is to `thr`."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    off = ids.to(boxes) * (boxes.max() + 1)
    keep = nms(boxes + off[:, None], scores, thr)
    order = scores.argsort(descending=True)
    ov = iou_matrix(boxes[order], boxes[order])
    same = ids[order][:, None] == ids[order][None, :]
    kept = torch.zeros(boxes.shape[0], dtype=torch.bool)
    kept[keep] = True
    kept = kept[order]
    # decisive IoUs: of each box with the kept boxes ranked before it, same id
    before = torch.ones_like(ov, dtype=torch.bool).tril(-1) & same & kept[None, :]
    best = torch.where(before, ov, torch.full_like(ov, -1.0)).max(1).values
    has = best >= 0
    if has.any():
        margin(name, (best[has] - thr).abs().min())
    return keep


# ----------------------------------------------------------------------------- model parts


def fpn(w, feats):
    lat = [F.conv2d(f, w[f"neck.lateral_convs.{i}.conv.weight"], w[f"neck.lateral_convs.{i}.conv.bias"])
           for i, f in enumerate(feats)]
    for i in range(len(lat) - 1, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
    outs = [F.conv2d(x, w[f"neck.fpn_convs.{i}.conv.weight"], w[f"neck.fpn_convs.{i}.conv.bias"], padding=1)
            for i, x in enumerate(lat)]
    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
    return outs


def base_anchors(stride):
    r, s = torch.tensor(RPN_RATIOS), torch.tensor(RPN_SCALES)
    hr = torch.sqrt(r)
    wr = 1 / hr
    ws = (stride * wr[:, None] * s[None, :]).view(-1)
    hs = (stride * hr[:, None] * s[None, :]).view(-1)
    return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], -1)


def grid_anchors(stride, h, w):
    sx, sy = torch.arange(0, w) * stride, torch.arange(0, h) * stride
    xx, yy = sx.repeat(len(sy)), sy.view(-1, 1).repeat(1, len(sx)).view(-1)
    shifts = torch.stack([xx, yy, xx, yy], -1).float()
    return (base_anchors(stride)[None] + shifts[:, None]).view(-1, 4)


def decode(rois, deltas, stds, max_shape):
    """DeltaXYWHBBoxCoder.decode (means 0) for [R, 4k] deltas, clipped to max_shape (h, w)."""
    k = deltas.shape[1] // 4
    d = deltas * deltas.new_tensor(stds).repeat(k)
    dx, dy, dw, dh = d[:, 0::4], d[:, 1::4], d[:, 2::4], d[:, 3::4]
    r = abs(math.log(16 / 1000))
    dw, dh = dw.clamp(-r, r), dh.clamp(-r, r)
    px, py = ((rois[:, 0] + rois[:, 2]) * 0.5)[:, None], ((rois[:, 1] + rois[:, 3]) * 0.5)[:, None]
    pw, ph = (rois[:, 2] - rois[:, 0])[:, None], (rois[:, 3] - rois[:, 1])[:, None]
    gw, gh = pw * dw.exp(), ph * dh.exp()
    gx, gy = px + pw * dx, py + ph * dy
    h, w = max_shape
    x1, x2 = (gx - gw * 0.5).clamp(0, w), (gx + gw * 0.5).clamp(0, w)
    y1, y2 = (gy - gh * 0.5).clamp(0, h), (gy + gh * 0.5).clamp(0, h)
    return torch.stack([x1, y1, x2, y2], -1).view(deltas.shape)


def rpn(w, feats):
    """RPNHead forward + `_get_bboxes` for one image: [P, 4] proposals."""
    scores, deltas, anchors, ids = [], [], [], []
    for lvl, x in enumerate(feats):
        x = F.relu(F.conv2d(x, w["rpn_head.rpn_conv.weight"], w["rpn_head.rpn_conv.bias"], padding=1))
        c = F.conv2d(x, w["rpn_head.rpn_cls.weight"], w["rpn_head.rpn_cls.bias"])
        r = F.conv2d(x, w["rpn_head.rpn_reg.weight"], w["rpn_head.rpn_reg.bias"])
        h, ww = c.shape[2:]
        s = c[0].permute(1, 2, 0).reshape(-1).sigmoid()
        d = r[0].permute(1, 2, 0).reshape(-1, 4)
        a = grid_anchors(RPN_STRIDES[lvl], h, ww)
        s, idx = s.sort(descending=True)
        if s.shape[0] > RPN_TEST["nms_pre"]:
            margin("rpn_topk_score_gap", s[RPN_TEST["nms_pre"] - 1] - s[RPN_TEST["nms_pre"]])
        s, idx = s[: RPN_TEST["nms_pre"]], idx[: RPN_TEST["nms_pre"]]
        scores.append(s)
        deltas.append(d[idx])
        anchors.append(a[idx])
        ids.append(torch.full((s.shape[0],), lvl, dtype=torch.long))
    scores, deltas, anchors, ids = (torch.cat(t) for t in (scores, deltas, anchors, ids))
    boxes = decode(anchors, deltas, [1.0] * 4, IMG_SHAPE)
    keep = batched_nms(boxes, scores, ids, RPN_TEST["nms_iou"], "rpn_nms_iou")
    return boxes[keep][: RPN_TEST["max_per_img"]]


def extract(feats, boxes, out):
    """SingleRoIExtractor (finest_scale 56) over the first 4 levels with mmcv RoIAlign."""
    rois = torch.cat([torch.zeros(boxes.shape[0], 1), boxes], 1)
    scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    v = torch.log2(scale / 56 + 1e-6)
    if v.numel() > 0:
        margin("roi_level_log2", (v[:, None] - torch.tensor([1.0, 2.0, 3.0])[None]).abs().min())
    lvl = torch.floor(v).clamp(0, len(ROI_STRIDES) - 1).long()
    LEVELS[out] = LEVELS.get(out, torch.zeros(4, dtype=torch.long)) + torch.bincount(lvl, minlength=4)
    res = torch.zeros(boxes.shape[0], feats[0].shape[1], out, out)
    for i, s in enumerate(ROI_STRIDES):
        inds = (lvl == i).nonzero().squeeze(1)
        if inds.numel() > 0:
            res[inds] = roi_align(feats[i], rois[inds], (out, out), 1.0 / s, 0, True)
    return res


def shared2fc(w, p, x):
    x = x.flatten(1)
    x = F.relu(F.linear(x, w[f"{p}.shared_fcs.0.weight"], w[f"{p}.shared_fcs.0.bias"]))
    x = F.relu(F.linear(x, w[f"{p}.shared_fcs.1.weight"], w[f"{p}.shared_fcs.1.bias"]))
    return F.linear(x, w[f"{p}.fc_cls.weight"], w[f"{p}.fc_cls.bias"]), F.linear(x, w[f"{p}.fc_reg.weight"], w[f"{p}.fc_reg.bias"])


def convfc_bn(w, p, x):
    for i in range(4):
        q = f"{p}.shared_convs.{i}"
        x = F.conv2d(x, w[f"{q}.conv.weight"], None, padding=1)
        x = F.batch_norm(x, w[f"{q}.bn.running_mean"], w[f"{q}.bn.running_var"], w[f"{q}.bn.weight"],
                         w[f"{q}.bn.bias"], training=False, eps=BN_EPS)
        x = F.relu(x)
    x = F.relu(F.linear(x.flatten(1), w[f"{p}.shared_fcs.0.weight"], w[f"{p}.shared_fcs.0.bias"]))
    return F.linear(x, w[f"{p}.fc_cls.weight"], w[f"{p}.fc_cls.bias"]), F.linear(x, w[f"{p}.fc_reg.weight"], w[f"{p}.fc_reg.bias"])


def mask_head(w, p, x):
    for i in range(4):
        x = F.relu(F.conv2d(x, w[f"{p}.convs.{i}.conv.weight"], w[f"{p}.convs.{i}.conv.bias"], padding=1))
    x = F.relu(F.conv_transpose2d(x, w[f"{p}.upsample.weight"], w[f"{p}.upsample.bias"], stride=2))
    return F.conv2d(x, w[f"{p}.conv_logits.weight"], w[f"{p}.conv_logits.bias"])


def get_bboxes(rois, cls, reg, stds):
    """BBoxHead.get_bboxes(rescale=True) + multiclass_nms."""
    scores = F.softmax(cls, dim=-1)
    boxes = decode(rois, reg, stds, IMG_SHAPE)
    sf = torch.tensor([SCALE[0], SCALE[1]] * 2, dtype=torch.float32)
    boxes = (boxes.view(boxes.shape[0], -1, 4) / sf).view(boxes.shape[0], -1)
    k = NUM_CLASSES
    b = boxes.view(scores.shape[0], -1, 4).reshape(-1, 4)
    s = scores[:, :-1].reshape(-1)
    labels = torch.arange(k).view(1, -1).expand(scores.shape[0], k).reshape(-1)
    margin("rcnn_score_thr", (s - RCNN_TEST["score_thr"]).abs().min())
    valid = (s > RCNN_TEST["score_thr"]).nonzero().squeeze(1)
    b, s, labels = b[valid], s[valid], labels[valid]
    keep = batched_nms(b, s, labels, RCNN_TEST["nms_iou"], "rcnn_nms_iou")
    if keep.numel() > RCNN_TEST["max_per_img"]:
        n = RCNN_TEST["max_per_img"]
        margin("rcnn_max_per_img_gap", s[keep[n - 1]] - s[keep[n]])
    keep = keep[: RCNN_TEST["max_per_img"]]
    return b[keep], s[keep], labels[keep]


def paste(prob, box):
    """get_seg_masks + _do_paste_mask on the CPU (one box, skip_empty window) at ori_shape."""
    img_h, img_w = ORI_SHAPE
    out = torch.zeros(img_h, img_w, dtype=torch.uint8)
    boxes = box[None]
    x0i, y0i = (int(v) for v in torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(torch.int32))
    x1i = int(torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w))
    y1i = int(torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h))
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    iy = (torch.arange(y0i, y1i, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    ix = (torch.arange(x0i, x1i, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
    ix[torch.isinf(ix)] = 0
    iy[torch.isinf(iy)] = 0
    gx = ix[:, None, :].expand(1, iy.size(1), ix.size(1))
    gy = iy[:, :, None].expand(1, iy.size(1), ix.size(1))
    m = F.grid_sample(prob[None, None].float(), torch.stack([gx, gy], dim=3), align_corners=False)[0, 0]
    thr = RCNN_TEST["mask_thr_binary"]
    near = int(((m - thr).abs() < MASK_BAND).sum())
    out[y0i:y1i, x0i:x1i] = (m >= thr).to(torch.uint8)
    return out, near


def rle_counts(mask):
    """Uncompressed COCO RLE of a [h, w] 0/1 mask: column-major runs, starting with zeros."""
    flat = mask.t().reshape(-1).tolist()
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return counts


def seg_masks(probs, boxes, labels):
    """Mask probabilities [R, K, 28, 28] (already sigmoid) pasted for each detection: the masks
    and, per mask, how many of its pixels lie within MASK_BAND of the threshold."""
    pasted = [paste(probs[i, labels[i]], boxes[i]) for i in range(boxes.shape[0])]
    return [m for m, _ in pasted], [n for _, n in pasted]


def mask_rois(det_boxes):
    sf = torch.tensor([SCALE[0], SCALE[1]] * 2, dtype=torch.float32)
    return det_boxes * sf


def mask_rcnn(w, feats, proposals):
    x = extract(feats, proposals, 7)
    cls, reg = shared2fc(w, "roi_head.bbox_head", x)
    boxes, scores, labels = get_bboxes(proposals, cls, reg, STAGE_STDS[0])
    scaled = mask_rois(boxes)
    sf = torch.tensor([SCALE[0], SCALE[1]] * 2, dtype=torch.float32)
    probs = mask_head(w, "roi_head.mask_head", extract(feats, scaled, 14)).sigmoid()
    return boxes, scores, labels, seg_masks(probs, scaled / sf, labels)


def cascade(w, feats, proposals):
    rois, logits = proposals, []
    for s in range(3):
        cls, reg = convfc_bn(w, f"roi_head.bbox_head.{s}", extract(feats, rois, 7))
        logits.append(cls)
        if s < 2:
            fg = cls[:, :-1]
            top2 = fg.topk(2, dim=1).values
            margin("cascade_argmax_logit_gap", (top2[:, 0] - top2[:, 1]).min())
            label = fg.argmax(1)
            inds = torch.stack([label * 4 + j for j in range(4)], 1)
            rois = decode(rois, reg.gather(1, inds), STAGE_STDS[s], IMG_SHAPE)
    cls = sum(logits) / 3.0
    boxes, scores, labels = get_bboxes(rois, cls, reg, STAGE_STDS[2])
    scaled = mask_rois(boxes)
    sf = torch.tensor([SCALE[0], SCALE[1]] * 2, dtype=torch.float32)
    mfeats = extract(feats, scaled, 14)
    probs = sum(mask_head(w, f"roi_head.mask_head.{s}", mfeats).sigmoid() for s in range(3)) / 3.0
    return boxes, scores, labels, seg_masks(probs, scaled / sf, labels)


# ----------------------------------------------------------------------------- main


def result_json(boxes, scores, labels, masks):
    masks, near = masks
    return dict(
        boxes=[[float(v) for v in b] for b in boxes],
        scores=[float(v) for v in scores],
        labels=[int(v) for v in labels],
        masks=[rle_counts(m) for m in masks],
        mask_pixels_near_thr=near,
    )


def main():
    os.makedirs(OUT, exist_ok=True)
    common, backbone = backbone_weights()
    common.update(fpn_weights())
    common.update(rpn_weights())
    std_w = shared2fc_weights("roi_head.bbox_head")
    std_w.update(mask_head_weights("roi_head.mask_head"))
    cas_w = {}
    for s in range(3):
        cas_w.update(convfc_bn_weights(f"roi_head.bbox_head.{s}", STAGE_STDS[s]))
    for s in range(3):
        cas_w.update(mask_head_weights(f"roi_head.mask_head.{s}"))
    image_u8, image = make_image()

    expected = dict(meta=dict(img_size=list(IMG_SHAPE), ori_size=list(ORI_SHAPE), scale_factor=list(SCALE)))
    with torch.no_grad():
        bfeats = backbone.forward_det(image)
        feats = fpn(common, bfeats)
        proposals = rpn(common, feats)
        rpn_margins = dict(MARGINS)
        print("proposals", proposals.shape[0])
        for name, fn, w in [("mask_rcnn", mask_rcnn, std_w), ("cascade", cascade, cas_w)]:
            MARGINS.clear()
            MARGINS.update(rpn_margins)
            boxes, scores, labels, masks = fn({**common, **w}, feats, proposals)
            r = result_json(boxes, scores, labels, masks)
            r["num_proposals"] = int(proposals.shape[0])
            r["margins"] = dict(MARGINS)
            r["roi_levels"] = {str(k): v.tolist() for k, v in LEVELS.items()}
            LEVELS.clear()
            for key, low in MIN_MARGINS.items():
                assert MARGINS.get(key, math.inf) >= low, f"{name}: margin {key} {MARGINS[key]} < {low}"
            expected[name] = r
            areas = [int(m.sum()) for m in masks[0]]
            near = masks[1]
            print(name, len(r["scores"]), "detections, labels", np.bincount(r["labels"], minlength=NUM_CLASSES).tolist(),
                  "scores", f"{min(r['scores']):.3f}..{max(r['scores']):.3f}", "mask areas", areas)
            print("  margins", json.dumps(r["margins"]), "roi levels", r["roi_levels"])
            print("  mask pixels near the threshold", near)

    save_file({k: v.contiguous() for k, v in common.items()}, os.path.join(OUT, "common.safetensors"))
    save_file({k: v.contiguous() for k, v in std_w.items()}, os.path.join(OUT, "mask_rcnn.safetensors"))
    save_file({k: v.contiguous() for k, v in cas_w.items()}, os.path.join(OUT, "cascade.safetensors"))
    save_file({"image_u8": image_u8.contiguous()}, os.path.join(OUT, "input.safetensors"))
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print("fixture bytes", total)


if __name__ == "__main__":
    main()
