"""Generate fixtures for the FPN neck (necks/tests/fpn.rs), the RPN head (heads/tests/rpn.rs), the
MaxIoUAssigner and the losses (heads/tests/assign_losses.rs).

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_fpn_rpn_fixtures.py

Writes tests/fixtures/fpn_rpn/ (safetensors; deterministic, seed 0). mmdet/mmcv are not installed,
so mmdetection 2.11's semantics are written out below in torch, following mmdetection 2.11's
models/necks/fpn.py, models/dense_heads/{rpn_head,anchor_head}.py,
core/bbox/assigners/max_iou_assigner.py, core/bbox/iou_calculators/iou2d_calculator.py,
core/bbox/coder/delta_xywh_bbox_coder.py, core/anchor/{anchor_generator,utils}.py and
models/losses/{cross_entropy_loss,smooth_l1_loss,iou_loss,utils}.py; NMS is torchvision's
batched_nms (the coordinate-offset path, as mmcv's below its split threshold). Files:

  assigner.safetensors
      case{i}.cfg [5] = (pos_iou_thr, neg_iou_thr, min_pos_iou, match_low_quality, ignore_iof_thr),
      case{i}.bboxes [N,4], .gt [G,4], .labels [G] (i64), .ignore [K,4]; expected .gt_inds [N]
      (i64, mmdet convention), .max_overlaps [N], .assigned_labels [N] (i64, -1 for none).
      Cases: random boxes; duplicated gts and tied IoUs (low-quality overwrite order, tied
      argmax); low-quality only; match_low_quality off; ignore regions; zero gts; zero boxes.
  losses.safetensors
      bce_logits/bce_targets/bce_weights [64] (logits up to +-1e4), bce [64], bce_grad [64]
      (grad of sum(bce * gy)); ce_logits [16,5], ce_labels [16] (i64), ce [16], ce_grad;
      sl1_pred/sl1_target [40,4], sl1 (beta 1/9), sl1_grad, l1, l1_grad; giou_pred/giou_target
      [32,4] (incl. empty and inverted), giou_loss [32] (eps 1e-6), giou_grad; gy_* the
      upstream weights.
  fpn.safetensors
      neck.* weights (mmdet names), feat{i} [1,C_i,H_i,W_i] with C = 4,8,12,16 and odd sizes
      (18,23) (9,12) (5,6) (3,3); out{i} [1,8,...] for num_outs 5; gy{i} upstream weights;
      grad_feat{i}, grad.neck.* = grads of sum(out_i * gy_i).
  rpn.safetensors
      rpn_head.* weights, feat{l} [2,8,H,W] for a 64x96 batch, strides 4..64
      ((16,24) (8,12) (4,6) (2,3) (1,2)); cls{l}, reg{l} head outputs.
      Proposals for img sizes (60,90), (40,60): props_{cfg}_{b} [P,5] for cfg a (nms_pre 50,
      max_per_img 40, iou 0.7, min size 0) and b (nms_pre 30, max 25, iou 0.5, min size 6).
      Loss with gts gt{b} [G,4], per-image pad shapes (64,96) and (64,64), sampler num 100000
      (keeps every candidate): for setting m (Mask R-CNN: L1, allowed_border -1, assigner
      0.7/0.3/0.3) and c (Cascade: SmoothL1 beta 1/9, allowed_border 0): loss_{s}_cls,
      loss_{s}_bbox, and grad_{s}.rpn_head.* of (loss_cls + loss_bbox).
"""

import math
import os

import torch
import torch.nn.functional as F
import torchvision.ops as tvo
from safetensors.torch import save_file

OUT = os.path.join("tests", "fixtures", "fpn_rpn")


# ---------------------------------------------------------------- mmdet 2.11 semantics in torch
def bbox_overlaps(b1, b2, mode="iou", eps=1e-6):
    """mmdet bbox_overlaps, not aligned: [N, M]."""
    if b1.shape[0] == 0 or b2.shape[0] == 0:
        return b1.new_zeros(b1.shape[0], b2.shape[0])
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    lt = torch.max(b1[:, None, :2], b2[None, :, :2])
    rb = torch.min(b1[:, None, 2:], b2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - overlap if mode == "iou" else area1[:, None]
    union = torch.max(union, union.new_tensor([eps]))
    return overlap / union


def max_iou_assign(bboxes, gt, labels, ignore, pos_thr, neg_thr, min_pos, low_quality, ignore_iof):
    """mmdet MaxIoUAssigner.assign (gt_max_assign_all=True, ignore_wrt_candidates=True)."""
    overlaps = bbox_overlaps(gt, bboxes)  # [G, N]
    if ignore_iof > 0 and ignore is not None and ignore.numel() > 0 and bboxes.numel() > 0:
        ign = bbox_overlaps(bboxes, ignore, mode="iof")
        ign_max, _ = ign.max(dim=1)
        overlaps[:, ign_max > ignore_iof] = -1
    num_gts, num_bboxes = overlaps.shape
    gt_inds = overlaps.new_full((num_bboxes,), -1, dtype=torch.long)
    if num_gts == 0 or num_bboxes == 0:
        max_ov = overlaps.new_zeros((num_bboxes,))
        if num_gts == 0:
            gt_inds[:] = 0
        return gt_inds, max_ov, overlaps.new_full((num_bboxes,), -1, dtype=torch.long)
    max_ov, argmax = overlaps.max(dim=0)
    gt_max, _ = overlaps.max(dim=1)
    gt_inds[(max_ov >= 0) & (max_ov < neg_thr)] = 0
    pos = max_ov >= pos_thr
    gt_inds[pos] = argmax[pos] + 1
    if low_quality:
        for i in range(num_gts):
            if gt_max[i] >= min_pos:
                gt_inds[overlaps[i, :] == gt_max[i]] = i + 1
    out_labels = gt_inds.new_full((num_bboxes,), -1)
    p = gt_inds > 0
    out_labels[p] = labels[gt_inds[p] - 1]
    return gt_inds, max_ov, out_labels


def base_anchors(stride, ratios, scales):
    ratios, scales = torch.tensor(ratios), torch.tensor(scales)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (stride * w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (stride * h_ratios[:, None] * scales[None, :]).view(-1)
    return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)


def grid_anchors(base, stride, h, w):
    sx = torch.arange(0, w) * stride
    sy = torch.arange(0, h) * stride
    xx = sx.repeat(len(sy))
    yy = sy.view(-1, 1).repeat(1, len(sx)).view(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).float()
    return (base[None, :, :] + shifts[:, None, :]).view(-1, 4)


def valid_flags(h, w, stride, pad, a):
    vh, vw = min(math.ceil(pad[0] / stride), h), min(math.ceil(pad[1] / stride), w)
    vx = torch.zeros(w, dtype=torch.bool)
    vy = torch.zeros(h, dtype=torch.bool)
    vx[:vw] = True
    vy[:vh] = True
    vxx = vx.repeat(len(vy))
    vyy = vy.view(-1, 1).repeat(1, len(vx)).view(-1)
    return (vxx & vyy)[:, None].expand(vxx.size(0), a).contiguous().view(-1)


def inside_flags(anchors, valid, img_shape, border):
    if border < 0:
        return valid
    h, w = img_shape
    return (
        valid
        & (anchors[:, 0] >= -border)
        & (anchors[:, 1] >= -border)
        & (anchors[:, 2] < w + border)
        & (anchors[:, 3] < h + border)
    )


def bbox2delta(p, g, means=(0.0,) * 4, stds=(1.0,) * 4):
    px, py = (p[:, 0] + p[:, 2]) * 0.5, (p[:, 1] + p[:, 3]) * 0.5
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gx, gy = (g[:, 0] + g[:, 2]) * 0.5, (g[:, 1] + g[:, 3]) * 0.5
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    d = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
    return (d - d.new_tensor(means)) / d.new_tensor(stds)


def delta2bbox(rois, deltas, max_shape, means=(0.0,) * 4, stds=(1.0,) * 4, clip=16 / 1000):
    d = deltas * deltas.new_tensor(stds) + deltas.new_tensor(means)
    dx, dy, dw, dh = d[:, 0], d[:, 1], d[:, 2], d[:, 3]
    r = abs(math.log(clip))
    dw, dh = dw.clamp(min=-r, max=r), dh.clamp(min=-r, max=r)
    px, py = (rois[:, 0] + rois[:, 2]) * 0.5, (rois[:, 1] + rois[:, 3]) * 0.5
    pw, ph = rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]
    gw, gh = pw * dw.exp(), ph * dh.exp()
    gx, gy = px + pw * dx, py + ph * dy
    x1, y1, x2, y2 = gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5
    h, w = max_shape
    x1, x2 = x1.clamp(min=0, max=w), x2.clamp(min=0, max=w)
    y1, y2 = y1.clamp(min=0, max=h), y2.clamp(min=0, max=h)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def aligned_giou(p, t, eps):
    area1 = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    area2 = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    lt = torch.max(p[:, :2], t[:, :2])
    rb = torch.min(p[:, 2:], t[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    union = torch.max(area1 + area2 - overlap, p.new_tensor([eps]))
    ious = overlap / union
    elt = torch.min(p[:, :2], t[:, :2])
    erb = torch.max(p[:, 2:], t[:, 2:])
    ewh = (erb - elt).clamp(min=0)
    enclose = torch.max(ewh[:, 0] * ewh[:, 1], p.new_tensor([eps]))
    return ious - (enclose - union) / enclose


def smooth_l1(pred, target, beta):
    d = torch.abs(pred - target)
    return torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def random_boxes(n, h, w, smin, smax, g):
    cx = torch.rand(n, generator=g) * w
    cy = torch.rand(n, generator=g) * h
    bw = smin + torch.rand(n, generator=g) * (smax - smin)
    bh = smin + torch.rand(n, generator=g) * (smax - smin)
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)


# ---------------------------------------------------------------- assigner
def make_assigner(g):
    out = {}
    cases = []
    # 0: random boxes, RPN thresholds.
    cases.append((random_boxes(60, 100, 100, 5, 40, g), random_boxes(5, 100, 100, 10, 50, g), (0.7, 0.3, 0.3, 1, -1)))
    # 1: R-CNN thresholds, a gap between neg and pos.
    cases.append((random_boxes(80, 80, 80, 5, 40, g), random_boxes(6, 80, 80, 10, 40, g), (0.5, 0.4, 0.3, 1, -1)))
    # 2: ties. gt 1 duplicates gt 0; box 0 equals both; boxes 1, 2 tie a third gt's max; a box
    #    whose best IoU ties two gts.
    gt = torch.tensor([[10, 10, 30, 30], [10, 10, 30, 30], [50, 50, 70, 90], [0, 0, 20, 20], [20, 0, 40, 20]])
    bx = torch.tensor(
        [
            [10, 10, 30, 30],  # equals gt 0 and gt 1
            [50, 50, 70, 70],  # half of gt 2
            [50, 70, 70, 90],  # the other half, same IoU
            [10, 0, 30, 20],  # ties gt 3 and gt 4
            [80, 80, 90, 90],  # nothing
            [12, 12, 30, 30],
            [0, 0, 2, 2],
        ]
    ).float()
    cases.append((bx, gt.float(), (0.7, 0.3, 0.3, 1, -1)))
    # 3: low-quality only: every IoU below pos_thr, some above min_pos.
    gt = torch.tensor([[0, 0, 40, 40], [60, 60, 100, 100], [0, 60, 10, 70]]).float()
    bx = torch.tensor([[0, 0, 20, 40], [10, 0, 50, 30], [60, 60, 80, 80], [65, 65, 100, 100], [30, 60, 50, 80]]).float()
    cases.append((bx, gt, (0.7, 0.3, 0.3, 1, -1)))
    # 4: the same without low-quality matching.
    cases.append((bx, gt, (0.7, 0.3, 0.3, 0, -1)))
    # 5: cascade stage 3 (0.7/0.7/0.7, no low quality) on random boxes.
    cases.append((random_boxes(50, 60, 60, 10, 30, g), random_boxes(4, 60, 60, 10, 30, g), (0.7, 0.7, 0.7, 0, -1)))
    # 6: zero gts.
    cases.append((random_boxes(7, 50, 50, 5, 20, g), torch.zeros(0, 4), (0.7, 0.3, 0.3, 1, -1)))
    # 7: zero boxes.
    cases.append((torch.zeros(0, 4), random_boxes(3, 50, 50, 5, 20, g), (0.5, 0.5, 0.5, 1, -1)))
    for i, (bx, gt, cfg) in enumerate(cases):
        labels = torch.randint(0, 80, (gt.shape[0],), generator=g)
        ignore = torch.zeros(0, 4)
        if i == 1:
            ignore = torch.tensor([[0, 0, 40, 40], [60, 0, 80, 20]]).float()
            cfg = (0.5, 0.4, 0.3, 1, 0.5)
        gi, mo, lab = max_iou_assign(bx, gt, labels, ignore, *cfg[:3], bool(cfg[3]), cfg[4])
        p = f"case{i}."
        out[p + "cfg"] = torch.tensor(cfg, dtype=torch.float32)
        out[p + "bboxes"] = bx.contiguous()
        out[p + "gt"] = gt.contiguous()
        out[p + "labels"] = labels
        out[p + "ignore"] = ignore
        out[p + "gt_inds"] = gi
        out[p + "max_overlaps"] = mo
        out[p + "assigned_labels"] = lab
    return out


# ---------------------------------------------------------------- losses
def make_losses(g):
    out = {}
    logits = torch.cat(
        [torch.tensor([-1e4, -100.0, -30.0, -20.0, -1.0, 0.0, 0.0, 1.0, 20.0, 30.0, 100.0, 1e4]), torch.randn(52, generator=g) * 5]
    ).requires_grad_()
    targets = torch.cat([torch.tensor([0.0, 1.0] * 6), torch.rand(52, generator=g).round()])
    targets[40:] = torch.rand(24, generator=g)  # soft targets
    weights = torch.rand(64, generator=g)
    gy = torch.randn(64, generator=g)
    bce = F.binary_cross_entropy_with_logits(logits, targets, weight=weights, reduction="none")
    (bce * gy).sum().backward()
    out.update(bce_logits=logits.detach(), bce_targets=targets, bce_weights=weights, bce=bce.detach())
    out.update(bce_grad=logits.grad, gy_bce=gy)

    ce_logits = (torch.randn(16, 5, generator=g) * 10).requires_grad_()
    ce_labels = torch.randint(0, 5, (16,), generator=g)
    gy = torch.randn(16, generator=g)
    ce = F.cross_entropy(ce_logits, ce_labels, reduction="none")
    (ce * gy).sum().backward()
    out.update(ce_logits=ce_logits.detach(), ce_labels=ce_labels, ce=ce.detach(), ce_grad=ce_logits.grad, gy_ce=gy)

    pred = (torch.randn(40, 4, generator=g) * 0.2).requires_grad_()
    target = torch.randn(40, 4, generator=g) * 0.2
    gy = torch.randn(40, 4, generator=g)
    sl1 = smooth_l1(pred, target, 1.0 / 9.0)
    (sl1 * gy).sum().backward()
    out.update(sl1_pred=pred.detach(), sl1_target=target, sl1=sl1.detach(), sl1_grad=pred.grad.clone(), gy_reg=gy)
    pred.grad = None
    l1 = torch.abs(pred - target)
    (l1 * gy).sum().backward()
    out.update(l1=l1.detach(), l1_grad=pred.grad.clone())

    p = random_boxes(32, 50, 50, 2, 20, g)
    t = p + torch.randn(32, 4, generator=g) * 4
    p[0] = torch.tensor([5.0, 5.0, 5.0, 5.0])  # empty
    t[1] = torch.tensor([10.0, 10.0, 10.0, 20.0])  # zero width
    p[2] = torch.tensor([20.0, 20.0, 10.0, 10.0])  # inverted
    t[3] = p[3]  # identical
    p = p.requires_grad_()
    gy = torch.randn(32, generator=g)
    gl = 1 - aligned_giou(p, t, 1e-6)
    (gl * gy).sum().backward()
    out.update(giou_pred=p.detach(), giou_target=t, giou_loss=gl.detach(), giou_grad=p.grad, gy_giou=gy)
    return out


# ---------------------------------------------------------------- FPN
def make_fpn(g):
    chans, sizes, oc = [4, 8, 12, 16], [(18, 23), (9, 12), (5, 6), (3, 3)], 8
    w = {}
    for i, c in enumerate(chans):
        w[f"neck.lateral_convs.{i}.conv.weight"] = torch.randn(oc, c, 1, 1, generator=g) * 0.2
        w[f"neck.lateral_convs.{i}.conv.bias"] = torch.randn(oc, generator=g) * 0.1
        w[f"neck.fpn_convs.{i}.conv.weight"] = torch.randn(oc, oc, 3, 3, generator=g) * 0.1
        w[f"neck.fpn_convs.{i}.conv.bias"] = torch.randn(oc, generator=g) * 0.1
    for v in w.values():
        v.requires_grad_()
    feats = [torch.randn(1, c, h, ww, generator=g).requires_grad_() for c, (h, ww) in zip(chans, sizes)]
    lat = [F.conv2d(f, w[f"neck.lateral_convs.{i}.conv.weight"], w[f"neck.lateral_convs.{i}.conv.bias"]) for i, f in enumerate(feats)]
    for i in range(len(lat) - 1, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
    outs = [F.conv2d(x, w[f"neck.fpn_convs.{i}.conv.weight"], w[f"neck.fpn_convs.{i}.conv.bias"], padding=1) for i, x in enumerate(lat)]
    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
    gys = [torch.randn(o.shape, generator=g) for o in outs]
    sum((o * gy).sum() for o, gy in zip(outs, gys)).backward()
    out = {k: v.detach() for k, v in w.items()}
    for i, f in enumerate(feats):
        out[f"feat{i}"] = f.detach()
        out[f"grad_feat{i}"] = f.grad
    for i, (o, gy) in enumerate(zip(outs, gys)):
        out[f"out{i}"] = o.detach()
        out[f"gy{i}"] = gy
    for k, v in w.items():
        out[f"grad.{k}"] = v.grad
    return out


# ---------------------------------------------------------------- RPN
STRIDES, RATIOS, SCALES = [4, 8, 16, 32, 64], [0.5, 1.0, 2.0], [8.0]


def rpn_forward(w, feats):
    cls, reg = [], []
    for x in feats:
        x = F.relu(F.conv2d(x, w["rpn_head.rpn_conv.weight"], w["rpn_head.rpn_conv.bias"], padding=1))
        cls.append(F.conv2d(x, w["rpn_head.rpn_cls.weight"], w["rpn_head.rpn_cls.bias"]))
        reg.append(F.conv2d(x, w["rpn_head.rpn_reg.weight"], w["rpn_head.rpn_reg.bias"]))
    return cls, reg


def rpn_proposals(cls, reg, img_sizes, nms_pre, max_per_img, iou, min_size):
    n = cls[0].shape[0]
    res = []
    for b in range(n):
        scores, deltas, anchors, ids = [], [], [], []
        for l, (c, r) in enumerate(zip(cls, reg)):
            h, ww = c.shape[2:]
            s = c[b].permute(1, 2, 0).reshape(-1).sigmoid()
            d = r[b].permute(1, 2, 0).reshape(-1, 4)
            a = grid_anchors(base_anchors(STRIDES[l], RATIOS, SCALES), STRIDES[l], h, ww)
            if s.shape[0] > nms_pre:
                s, idx = s.sort(descending=True, stable=True)
                s, idx = s[:nms_pre], idx[:nms_pre]
                d, a = d[idx], a[idx]
            scores.append(s)
            deltas.append(d)
            anchors.append(a)
            ids.append(torch.full((s.shape[0],), l, dtype=torch.long))
        scores, deltas, anchors, ids = map(lambda t: torch.cat(t), (scores, deltas, anchors, ids))
        boxes = delta2bbox(anchors, deltas, img_sizes[b])
        if min_size > 0:
            wd, ht = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            ok = (wd >= min_size) & (ht >= min_size)
            boxes, scores, ids = boxes[ok], scores[ok], ids[ok]
        keep = tvo.batched_nms(boxes, scores, ids, iou)
        res.append(torch.cat([boxes[keep], scores[keep, None]], 1)[:max_per_img])
    return res


def rpn_loss(cls, reg, gts, img_sizes, pads, border, loss_type, assigner_cfg):
    n = cls[0].shape[0]
    sizes = [c.shape[2:] for c in cls]
    anchors = torch.cat(
        [grid_anchors(base_anchors(s, RATIOS, SCALES), s, h, w) for s, (h, w) in zip(STRIDES, sizes)]
    )
    labels_all, lw_all, bt_all, bw_all = [], [], [], []
    num_pos = num_neg = 0
    for b in range(n):
        valid = torch.cat([valid_flags(h, w, s, pads[b], 3) for s, (h, w) in zip(STRIDES, sizes)])
        inside = inside_flags(anchors, valid, img_sizes[b], border)
        cand = anchors[inside]
        gi, _, _ = max_iou_assign(cand, gts[b], torch.zeros(len(gts[b]), dtype=torch.long), None, *assigner_cfg, True, -1)
        pos = torch.nonzero(gi > 0).squeeze(1)  # sampler num 100000 keeps every candidate
        neg = torch.nonzero(gi == 0).squeeze(1)
        m = cand.shape[0]
        labels = torch.ones(m)  # background (num_classes = 1) -> bce target 0
        lw = torch.zeros(m)
        bt = torch.zeros(m, 4)
        bw = torch.zeros(m, 4)
        if len(pos) > 0:
            bt[pos] = bbox2delta(cand[pos], gts[b][gi[pos] - 1])
            bw[pos] = 1.0
            labels[pos] = 0
            lw[pos] = 1.0
        lw[neg] = 1.0
        total = anchors.shape[0]

        def unmap(x, fill):
            o = x.new_full((total,) + x.shape[1:], fill)
            o[inside] = x
            return o

        labels_all.append(unmap(labels, 1.0))
        lw_all.append(unmap(lw, 0.0))
        bt_all.append(unmap(bt, 0.0))
        bw_all.append(unmap(bw, 0.0))
        num_pos += max(len(pos), 1)
        num_neg += max(len(neg), 1)
    avg = num_pos + num_neg
    counts = [h * w * 3 for (h, w) in sizes]
    loss_cls = loss_bbox = 0.0
    start = 0
    for l, (c, r) in enumerate(zip(cls, reg)):
        sl = slice(start, start + counts[l])
        start += counts[l]
        lab = torch.stack([x[sl] for x in labels_all]).reshape(-1)
        lw = torch.stack([x[sl] for x in lw_all]).reshape(-1)
        bt = torch.stack([x[sl] for x in bt_all]).reshape(-1, 4)
        bw = torch.stack([x[sl] for x in bw_all]).reshape(-1, 4)
        score = c.permute(0, 2, 3, 1).reshape(-1)
        target = (lab == 0).float()  # expand_onehot_labels with one class
        loss_cls = loss_cls + (F.binary_cross_entropy_with_logits(score, target, reduction="none") * lw).sum() / avg
        pred = r.permute(0, 2, 3, 1).reshape(-1, 4)
        el = torch.abs(pred - bt) if loss_type == "l1" else smooth_l1(pred, bt, 1.0 / 9.0)
        loss_bbox = loss_bbox + (el * bw).sum() / avg
    return loss_cls, loss_bbox


def make_rpn(g):
    c = 8
    w = {
        "rpn_head.rpn_conv.weight": torch.randn(c, c, 3, 3, generator=g) * 0.1,
        "rpn_head.rpn_conv.bias": torch.randn(c, generator=g) * 0.1,
        "rpn_head.rpn_cls.weight": torch.randn(3, c, 1, 1, generator=g) * 0.3,
        "rpn_head.rpn_cls.bias": torch.randn(3, generator=g) * 0.1,
        "rpn_head.rpn_reg.weight": torch.randn(12, c, 1, 1, generator=g) * 0.1,
        "rpn_head.rpn_reg.bias": torch.randn(12, generator=g) * 0.1,
    }
    sizes = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    feats = [torch.randn(2, c, h, ww, generator=g) for (h, ww) in sizes]
    out = {k: v.clone() for k, v in w.items()}
    with torch.no_grad():
        cls, reg = rpn_forward(w, feats)
    for l in range(5):
        out[f"feat{l}"] = feats[l]
        out[f"cls{l}"] = cls[l]
        out[f"reg{l}"] = reg[l]
    img_sizes = [(60, 90), (40, 60)]
    for name, cfg in {"a": (50, 40, 0.7, 0.0), "b": (30, 25, 0.5, 6.0)}.items():
        for b, p in enumerate(rpn_proposals(cls, reg, img_sizes, *cfg)):
            out[f"props_{name}_{b}"] = p.contiguous()
    gts = [
        torch.tensor([[5.0, 8.0, 40.0, 50.0], [50.0, 10.0, 88.0, 30.0], [30.0, 30.0, 45.0, 58.0]]),
        torch.tensor([[2.0, 3.0, 20.0, 35.0], [25.0, 5.0, 58.0, 38.0]]),
    ]
    out["gt0"], out["gt1"] = gts
    pads = [(64, 96), (64, 64)]
    for name, border, lt in [("m", -1, "l1"), ("c", 0, "sl1")]:
        wg = {k: v.clone().requires_grad_() for k, v in w.items()}
        cls, reg = rpn_forward(wg, feats)
        lc, lb = rpn_loss(cls, reg, gts, img_sizes, pads, border, lt, (0.7, 0.3, 0.3))
        (lc + lb).backward()
        out[f"loss_{name}_cls"] = lc.detach().reshape(1)
        out[f"loss_{name}_bbox"] = lb.detach().reshape(1)
        for k, v in wg.items():
            out[f"grad_{name}.{k}"] = v.grad
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for name, fn in [("assigner", make_assigner), ("losses", make_losses), ("fpn", make_fpn), ("rpn", make_rpn)]:
        tensors = {k: v.contiguous().clone() for k, v in fn(g).items()}
        save_file(tensors, os.path.join(OUT, f"{name}.safetensors"))
        print(name, len(tensors), "tensors")


if __name__ == "__main__":
    main()
