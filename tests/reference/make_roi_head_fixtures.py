"""Generate fixtures for the RoI heads (heads/tests/roi_heads.rs).

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_roi_head_fixtures.py

mmdetection is not installed, so its 2.11 semantics are re-implemented below in plain PyTorch
(torchvision's roi_align with aligned=True and sampling_ratio=0 is mmcv's RoIAlign; its
batched_nms is mmcv's below 10000 boxes): ConvFCBBoxHead / Shared2FCBBoxHead (ConvModule =
conv without bias + BN + ReLU when normed), FCNMaskHead (4 conv + deconv + 1x1), the
SingleRoIExtractor level mapping, DeltaXYWHBBoxCoder, MaxIoUAssigner for the simple
configuration used here (pos = neg = min_pos thresholds), the sampler with the GT prepended and
every candidate kept, BBoxHead.get_targets/loss, FCNMaskHead.loss and mask_target,
get_bboxes + multiclass_nms, get_seg_masks' CPU paste, StandardRoIHead and CascadeRoIHead
(forward_train with refine_bboxes, simple_test with logit averaging and merge_aug_masks).

Writes tests/fixtures/roi_heads/ (deterministic, seed 0):
  cases.json               configs (mmdet-style) and metas of every case
  bn.safetensors           BatchNorm2d/1d train-mode outputs, running stats, input, weight and
                           bias gradients
  deconv.safetensors       ConvTranspose2d(k2, s2) forward and gradients
  bbox_head.safetensors    Shared2FC head weights (`roi_head.bbox_head.*`), RoI features, rois,
                           logits, deltas, get_bboxes detections
  standard.safetensors     StandardRoIHead weights (`roi_head.*`), 2-image FPN features
                           (feat0..3), proposals, GT boxes/labels and masks (np.packbits, with
                           their shape), losses, the packed mask targets, the logits of
                           the first 4 positives, and simple_test detections and packed masks
                           of image 0
  cascade.safetensors      CascadeRoIHead weights (`roi_head.*`, BN heads with random running
                           stats), per-stage losses on standard.safetensors' inputs (train),
                           BN running stats after training, and simple_test detections and
                           packed masks on image 0 (test)
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.ops import batched_nms, roi_align

OUT = os.path.join("tests", "fixtures", "roi_heads")
torch.manual_seed(0)
np.random.seed(0)


# ----------------------------------------------------------------------------- modules


class ConvModule(nn.Module):
    def __init__(self, cin, cout, norm):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=not norm)
        self.bn = nn.BatchNorm2d(cout) if norm else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x)


class ConvFCBBoxHead(nn.Module):
    def __init__(self, cin, num_convs, num_fcs, conv_out, fc_out, num_classes, norm, roi=7):
        super().__init__()
        self.shared_convs = nn.ModuleList()
        dim = cin
        for _ in range(num_convs):
            self.shared_convs.append(ConvModule(dim, conv_out, norm))
            dim = conv_out
        self.shared_fcs = nn.ModuleList()
        dim *= roi * roi
        for _ in range(num_fcs):
            self.shared_fcs.append(nn.Linear(dim, fc_out))
            dim = fc_out
        self.fc_cls = nn.Linear(dim, num_classes + 1)
        self.fc_reg = nn.Linear(dim, 4 * num_classes)
        self.num_classes = num_classes

    def forward(self, x):
        for c in self.shared_convs:
            x = c(x)
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


class FCNMaskHead(nn.Module):
    def __init__(self, cin, num_convs, conv_out, num_classes):
        super().__init__()
        self.convs = nn.ModuleList()
        dim = cin
        for _ in range(num_convs):
            m = nn.Module()
            m.conv = nn.Conv2d(dim, conv_out, 3, padding=1)
            self.convs.append(m)
            dim = conv_out
        self.upsample = nn.ConvTranspose2d(dim, conv_out, 2, stride=2)
        self.conv_logits = nn.Conv2d(conv_out, num_classes, 1)

    def forward(self, x):
        for m in self.convs:
            x = F.relu(m.conv(x))
        return self.conv_logits(F.relu(self.upsample(x)))


def randomize(module, std=0.1, bn_stats=False):
    """Random weights (and, for BN, random affine and running statistics)."""
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))
    for name, p in module.named_parameters():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g) * std)
            if name.endswith("bn.weight"):
                p.add_(1.0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d) and bn_stats:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(3)


def state(prefix, module):
    return {f"{prefix}.{k}": v.detach().clone().contiguous() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------- box ops


def map_levels(rois, num_levels, finest=56):
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    lvl = torch.floor(torch.log2(scale / finest + 1e-6))
    return lvl.clamp(min=0, max=num_levels - 1).long()


def extract(feats, rois, out, strides):
    """mmdet SingleRoIExtractor with RoIAlign(out, sampling_ratio=0, aligned=True)."""
    c = feats[0].shape[1]
    res = rois.new_zeros(rois.shape[0], c, out, out)
    lv = map_levels(rois, len(strides))
    for i, s in enumerate(strides):
        inds = (lv == i).nonzero().squeeze(1)
        if inds.numel() > 0:
            res[inds] = roi_align(feats[i], rois[inds], (out, out), 1.0 / s, 0, True)
        else:
            res = res + feats[i].sum() * 0.0
    return res


def encode(p, g, means, stds):
    px, py = (p[:, 0] + p[:, 2]) * 0.5, (p[:, 1] + p[:, 3]) * 0.5
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gx, gy = (g[:, 0] + g[:, 2]) * 0.5, (g[:, 1] + g[:, 3]) * 0.5
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    d = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], -1)
    return (d - d.new_tensor(means)) / d.new_tensor(stds)


def decode(rois, deltas, means, stds, max_shape=None):
    k = deltas.shape[1] // 4
    d = deltas * deltas.new_tensor(stds).repeat(k) + deltas.new_tensor(means).repeat(k)
    dx, dy, dw, dh = d[:, 0::4], d[:, 1::4], d[:, 2::4], d[:, 3::4]
    r = abs(math.log(16 / 1000))
    dw, dh = dw.clamp(-r, r), dh.clamp(-r, r)
    px = ((rois[:, 0] + rois[:, 2]) * 0.5)[:, None]
    py = ((rois[:, 1] + rois[:, 3]) * 0.5)[:, None]
    pw = (rois[:, 2] - rois[:, 0])[:, None]
    ph = (rois[:, 3] - rois[:, 1])[:, None]
    gw, gh = pw * dw.exp(), ph * dh.exp()
    gx, gy = px + pw * dx, py + ph * dy
    x1, y1, x2, y2 = gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5
    b = torch.stack([x1, y1, x2, y2], -1).view(deltas.shape)
    if max_shape is not None:
        h, w = max_shape
        mx = b.new_tensor([w, h] * (2 * k))[None]
        b = torch.where(b < 0, b.new_tensor(0.0), b)
        b = torch.where(b > mx, mx, b)
    return b


def iou(a, b):
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (aa[:, None] + ab[None] - inter).clamp(min=1e-6)


def giou_aligned(p, t, eps=1e-6):
    lt, rb = torch.max(p[:, :2], t[:, :2]), torch.min(p[:, 2:], t[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    ap = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    at = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    union = (ap + at - overlap).clamp(min=eps)
    ious = overlap / union
    elt, erb = torch.min(p[:, :2], t[:, :2]), torch.max(p[:, 2:], t[:, 2:])
    ewh = (erb - elt).clamp(min=0)
    enclose = (ewh[:, 0] * ewh[:, 1]).clamp(min=eps)
    return ious - (enclose - union) / enclose


# ----------------------------------------------------------------------------- training steps


def sample(proposals, gts, thr):
    """MaxIoUAssigner(pos=neg=min_pos=thr) on the proposals, GT prepended (add_gt_), every
    candidate kept (num larger than the candidates); positives then negatives, ascending."""
    ov = iou(proposals, gts)
    mx, arg = ov.max(1)
    assigned = torch.where(mx >= thr, arg + 1, torch.zeros_like(arg))
    # low-quality matching: each gt's best proposals (>= min_pos_iou = thr) are already >= thr
    g = gts.shape[0]
    gt_inds = torch.cat([torch.arange(1, g + 1), assigned])
    cand = torch.cat([gts, proposals])
    pos = (gt_inds > 0).nonzero().squeeze(1)
    neg = (gt_inds == 0).nonzero().squeeze(1)
    return dict(
        boxes=torch.cat([cand[pos], cand[neg]]),
        num_pos=pos.numel(),
        pos_gt=gt_inds[pos] - 1,
        pos_is_gt=pos < g,
    )


def bbox2roi(boxes_list):
    return torch.cat([torch.cat([b.new_full((b.shape[0], 1), i), b], 1) for i, b in enumerate(boxes_list)])


def bbox_loss(cls, reg, rois, samples, gts, labels, k, means, stds, decoded, loss_type, loss_weight):
    lab, lw, tgt, pos_rows = [], [], [], []
    row = 0
    for s, g, l in zip(samples, gts, labels):
        n, npos = s["boxes"].shape[0], s["num_pos"]
        lab_i = torch.full((n,), k, dtype=torch.long)
        lab_i[:npos] = l[s["pos_gt"]]
        lab.append(lab_i)
        lw.append(torch.ones(n))
        pos_gt_boxes = g[s["pos_gt"]]
        tgt.append(pos_gt_boxes if decoded else encode(s["boxes"][:npos], pos_gt_boxes, means, stds))
        pos_rows.append(torch.arange(row, row + npos))
        row += n
    lab, lw, tgt, pos_rows = torch.cat(lab), torch.cat(lw), torch.cat(tgt), torch.cat(pos_rows)
    r = lab.shape[0]
    loss_cls = (F.cross_entropy(cls, lab, reduction="none") * lw).sum() / max((lw > 0).sum().item(), 1)
    acc = (cls.argmax(1) == lab).float().mean() * 100
    pred = decode(rois[:, 1:], reg, means, stds) if decoded else reg
    pp = pred.view(r, -1, 4)[pos_rows, lab[pos_rows]]
    if loss_type == "L1Loss":
        lb = (pp - tgt).abs().sum() / r * loss_weight
    else:
        lb = (1 - giou_aligned(pp, tgt)).sum() / r * loss_weight
    return loss_cls, lb, acc, lab


def mask_targets(s, gt_masks, size=28):
    npos = s["num_pos"]
    b = s["boxes"][:npos].clone()
    h, w = gt_masks.shape[1:]
    b[:, [0, 2]] = b[:, [0, 2]].clamp(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clamp(0, h)
    rois = torch.cat([torch.arange(npos, dtype=torch.float32)[:, None], b], 1)
    m = gt_masks[s["pos_gt"]].float()[:, None]
    return (roi_align(m, rois, (size, size), 1.0, 0, True).squeeze(1) >= 0.5).float()


def mask_loss(pred, targets, labels):
    p = pred[torch.arange(pred.shape[0]), labels]
    return F.binary_cross_entropy_with_logits(p, targets, reduction="mean")


# ----------------------------------------------------------------------------- test steps


def multiclass_nms(boxes, scores, k, thr=0.05, iou_thr=0.5, max_num=100):
    b = boxes.view(scores.shape[0], -1, 4)
    if b.shape[1] == 1:
        b = b.expand(-1, k, 4)
    s = scores[:, :-1]
    labels = torch.arange(k).view(1, -1).expand_as(s).reshape(-1)
    b, s = b.reshape(-1, 4), s.reshape(-1)
    valid = (s > thr).nonzero().squeeze(1)
    b, s, labels = b[valid], s[valid], labels[valid]
    keep = batched_nms(b, s, labels, iou_thr)[:max_num]
    return b[keep], s[keep], labels[keep]


def get_bboxes(rois, cls, reg, img_shape, scale_factor, k, means, stds):
    scores = F.softmax(cls, dim=-1)
    boxes = decode(rois[:, 1:], reg, means, stds, img_shape)
    sf = torch.tensor(scale_factor * 2, dtype=torch.float32)
    boxes = (boxes.view(boxes.shape[0], -1, 4) / sf).view(boxes.shape[0], -1)
    return multiclass_nms(boxes, scores, k)


def paste(mask, box, img_h, img_w, thr=0.5):
    """mmdet 2.11 `_do_paste_mask` (CPU, skip_empty, one box) into a full image, thresholded."""
    out = torch.zeros(img_h, img_w, dtype=torch.uint8)
    boxes = box[None]
    x0i, y0i = torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(torch.int32)
    x1i = int(torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w))
    y1i = int(torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h))
    x0i, y0i = int(x0i), int(y0i)
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    iy = torch.arange(y0i, y1i, dtype=torch.float32) + 0.5
    ix = torch.arange(x0i, x1i, dtype=torch.float32) + 0.5
    iy = (iy - y0) / (y1 - y0) * 2 - 1
    ix = (ix - x0) / (x1 - x0) * 2 - 1
    ix[torch.isinf(ix)] = 0
    iy[torch.isinf(iy)] = 0
    gx = ix[:, None, :].expand(1, iy.size(1), ix.size(1))
    gy = iy[:, :, None].expand(1, iy.size(1), ix.size(1))
    grid = torch.stack([gx, gy], dim=3)
    m = F.grid_sample(mask[None, None].float(), grid, align_corners=False)[0, 0]
    out[y0i:y1i, x0i:x1i] = (m >= thr).to(torch.uint8)
    return out


# ----------------------------------------------------------------------------- data


def blob_masks(boxes, h, w):
    """Elliptical GT masks inside each box, [G, h, w] u8."""
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    out = []
    for b in boxes:
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        rx, ry = (b[2] - b[0]) / 2, (b[3] - b[1]) / 2
        out.append((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).to(torch.uint8))
    return torch.stack(out)


def jitter(box, dx, dy, sw, sh):
    x1, y1, x2, y2 = box.tolist()
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2 + dx * w, (y1 + y2) / 2 + dy * h
    w, h = w * sw, h * sh
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def proposals_for(gts, far):
    """Close copies of each GT (IoU ~0.9) and far boxes (IoU < 0.3 with all GTs)."""
    p = []
    for g in gts:
        p.append(jitter(g, 0.02, -0.01, 1.03, 0.97))
        p.append(jitter(g, -0.015, 0.02, 0.96, 1.02))
    p.extend(far)
    return torch.tensor(p, dtype=torch.float32)


C = 4  # feature channels
PAD = (224, 224)
STRIDES = [4, 8, 16, 32]


def fpn_feats(n):
    return [torch.randn(n, C, PAD[0] // s, PAD[1] // s) for s in STRIDES]


def packbits(t):
    """0/1 values as big-endian packed bits (np.packbits of the flattened array), u8."""
    return torch.from_numpy(np.packbits(t.to(torch.uint8).numpy().reshape(-1)))


def tensors_of(prefix, t):
    return {f"{prefix}{i}": v.contiguous() for i, v in enumerate(t)}


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = {}

    # --- batch norm: 2d and 1d, train mode, output, running stats and input gradient
    bn = {}
    for name, shape in [("bn2d", (3, 5, 4, 6)), ("bn1d", (7, 5))]:
        m = nn.BatchNorm2d(5) if len(shape) == 4 else nn.BatchNorm1d(5)
        randomize(m, 0.3)
        with torch.no_grad():
            m.weight.add_(1.0)
            m.running_mean.copy_(torch.randn(5) * 0.2)
            m.running_var.copy_(torch.rand(5) + 0.5)
        bn.update({f"{name}.{k}": v.clone() for k, v in m.state_dict().items()})
        x = (torch.randn(shape) * 2 + 0.5).requires_grad_()
        gy = torch.randn(shape)
        m.train()
        y = m(x)
        (y * gy).sum().backward()
        bn.update({f"{name}_x": x.detach(), f"{name}_gy": gy, f"{name}_y": y.detach(), f"{name}_dx": x.grad,
                   f"{name}_dweight": m.weight.grad, f"{name}_dbias": m.bias.grad})
        bn.update({f"{name}_after.{k}": v.clone() for k, v in m.state_dict().items()})
        m.eval()
        with torch.no_grad():
            bn[f"{name}_y_eval"] = m(x.detach())
    save_file({k: v.contiguous() for k, v in bn.items()}, os.path.join(OUT, "bn.safetensors"))

    # --- deconv k2 s2
    d = nn.ConvTranspose2d(3, 5, 2, stride=2)
    randomize(d, 0.5)
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    y = d(x)
    gy = torch.randn(y.shape)
    (y * gy).sum().backward()
    save_file(
        {"x": x.detach(), "weight": d.weight.detach(), "bias": d.bias.detach(), "y": y.detach(), "gy": gy,
         "dx": x.grad, "dweight": d.weight.grad, "dbias": d.bias.grad},
        os.path.join(OUT, "deconv.safetensors"),
    )

    # --- Shared2FC bbox head: forward and get_bboxes
    k = 3
    means, stds = [0.0] * 4, [0.1, 0.1, 0.2, 0.2]
    head = ConvFCBBoxHead(C, 0, 2, 8, 16, k, norm=False)
    randomize(head, 0.15)
    r = 40
    xy = torch.rand(r, 2) * torch.tensor([150.0, 120.0])
    wh = torch.rand(r, 2) * 60 + 8
    roi_boxes = torch.cat([xy, xy + wh], 1)
    roi_boxes[20:] = roi_boxes[:20] + torch.randn(20, 4) * 3  # overlapping pairs for NMS
    rois = torch.cat([torch.zeros(r, 1), roi_boxes], 1)
    feats = torch.randn(r, C, 7, 7)
    with torch.no_grad():
        cls, reg = head(feats)
        img_shape, sf = (150, 190), [1.25, 1.5]
        db, ds, dl = get_bboxes(rois, cls, reg, img_shape, sf, k, means, stds)
    t = state("roi_head.bbox_head", head)
    t.update(rois=rois, feats=feats, cls=cls, reg=reg, det_boxes=db, det_scores=ds, det_labels=dl)
    save_file(t, os.path.join(OUT, "bbox_head.safetensors"))
    cases["bbox_head"] = dict(
        bbox_head=dict(type="Shared2FCBBoxHead", in_channels=C, fc_out_channels=16, roi_feat_size=7,
                       num_classes=k, bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=means, target_stds=stds),
                       reg_class_agnostic=False, loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
                       loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        img_size=list(img_shape), scale_factor=sf,
    )

    # --- StandardRoIHead (Mask R-CNN) training losses on a fixed sampling, 2 images
    n = 2
    feats = fpn_feats(n)
    img_sizes = [(200, 224), (224, 180)]
    gts = [torch.tensor([[20.0, 30.0, 90.0, 120.0], [100.0, 40.0, 210.0, 180.0], [8.0, 150.0, 40.0, 190.0]]),
           torch.tensor([[30.0, 20.0, 150.0, 200.0], [120.0, 100.0, 170.0, 140.0]])]
    labels = [torch.tensor([0, 2, 1]), torch.tensor([1, 1])]
    far = [[[150.0, 0.0, 200.0, 30.0], [0.0, 0.0, 15.0, 20.0], [60.0, 150.0, 160.0, 200.0]],
           [[0.0, 0.0, 25.0, 15.0], [160.0, 10.0, 179.0, 60.0], [0.0, 150.0, 60.0, 220.0]]]
    props = [proposals_for(g, f) for g, f in zip(gts, far)]
    masks = [blob_masks(g, *PAD) for g in gts]
    bh = ConvFCBBoxHead(C, 0, 2, 8, 16, k, norm=False)
    mh = FCNMaskHead(C, 4, 8, k)
    randomize(bh, 0.1)
    randomize(mh, 0.2)
    samples = [sample(p, g, 0.5) for p, g in zip(props, gts)]
    rois = bbox2roi([s["boxes"] for s in samples])
    cls, reg = bh(extract(feats, rois, 7, STRIDES))
    lc, lb, acc, _ = bbox_loss(cls, reg, rois, samples, gts, labels, k, means, stds, False, "L1Loss", 1.0)
    pos_rois = bbox2roi([s["boxes"][: s["num_pos"]] for s in samples])
    mp = mh(extract(feats, pos_rois, 14, STRIDES))
    mt = torch.cat([mask_targets(s, m) for s, m in zip(samples, masks)])
    pl = torch.cat([l[s["pos_gt"]] for s, l in zip(samples, labels)])
    lm = mask_loss(mp, mt, pl)
    t = {**state("roi_head.bbox_head", bh), **state("roi_head.mask_head", mh)}
    t.update(tensors_of("feat", feats))
    for i in range(n):
        t.update({f"proposals{i}": props[i], f"gt_boxes{i}": gts[i], f"gt_labels{i}": labels[i],
                  f"gt_masks{i}": packbits(masks[i]), f"gt_masks{i}_shape": torch.tensor(masks[i].shape)})
    t.update(loss_cls=lc.detach().reshape(1), loss_bbox=lb.detach().reshape(1), loss_mask=lm.detach().reshape(1),
             acc=acc.reshape(1), mask_pred4=mp.detach()[:4], mask_targets=packbits(mt), mask_labels=pl)
    # simple_test of image 0 (Mask R-CNN: one mask head, sigmoid of the label channel pasted)
    meta = dict(img_size=[200, 224], ori_size=[100, 112], scale_factor=[2.0, 2.0])
    with torch.no_grad():
        x0 = [f[:1] for f in feats]
        tp = torch.cat([props[0], roi_boxes[:20] * 0.9 + 5])
        r0 = bbox2roi([tp])
        c0, g0 = bh(extract(x0, r0, 7, STRIDES))
        db, ds, dl = get_bboxes(r0, c0, g0, tuple(meta["img_size"]), meta["scale_factor"], k, means, stds)
        sfv = torch.tensor(meta["scale_factor"] * 2, dtype=torch.float32)
        scaled = db * sfv
        mprob = torch.sigmoid(mh(extract(x0, bbox2roi([scaled]), 14, STRIDES)))[torch.arange(db.shape[0]), dl]
        pb = scaled / sfv
        oh, ow = meta["ori_size"]
        dm = torch.stack([paste(mprob[i], pb[i], oh, ow) for i in range(db.shape[0])])
    t.update(test_proposals=tp, test_boxes=db, test_scores=ds, test_labels=dl, test_masks=packbits(dm))
    save_file({k_: v.contiguous() for k_, v in t.items()}, os.path.join(OUT, "standard.safetensors"))
    extractor = lambda size: dict(type="SingleRoIExtractor", output_size=size, sampling_ratio=0, featmap_strides=STRIDES)
    cases["standard"] = dict(
        roi_head=dict(
            type="StandardRoIHead", bbox_roi_extractor=extractor(7),
            bbox_head=dict(cases["bbox_head"]["bbox_head"]),
            mask_roi_extractor=extractor(14),
            mask_head=dict(type="FCNMaskHead", num_convs=4, in_channels=C, conv_out_channels=8, num_classes=k),
            train=dict(assigner=dict(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=True,
                                     ignore_iof_thr=-1),
                       sampler=dict(num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
                       mask_size=28, pos_weight=-1, debug=False),
            test=dict(score_thr=0.05, nms_iou=0.5, max_per_img=100, mask_thr_binary=0.5)),
        img_sizes=[list(s) for s in img_sizes],
        meta=meta, num_pos=[s["num_pos"] for s in samples], num_rois=[s["boxes"].shape[0] for s in samples],
    )

    # --- CascadeRoIHead: 3 stages of 4conv1fc BN heads + GIoU, a mask head per stage
    stage_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
    thrs = [0.5, 0.6, 0.7]
    lws = [1.0, 0.5, 0.25]
    bhs = [ConvFCBBoxHead(C, 4, 1, 6, 16, k, norm=True) for _ in range(3)]
    mhs = [FCNMaskHead(C, 4, 8, k) for _ in range(3)]
    for h in bhs:
        randomize(h, 0.15, bn_stats=True)
        with torch.no_grad():
            h.fc_reg.weight.mul_(0.1)  # small refinements keep IoUs away from the stage thresholds
            h.fc_reg.bias.mul_(0.1)
    for h in mhs:
        randomize(h, 0.2)
    t = {}
    for s_ in range(3):
        t.update(state(f"roi_head.bbox_head.{s_}", bhs[s_]))
        t.update(state(f"roi_head.mask_head.{s_}", mhs[s_]))
    # features and ground truth: those of standard.safetensors
    # test first (eval mode: running statistics), on the training proposals of image 0 plus more
    test_props = torch.cat([props[0], roi_boxes[:20] * 0.9 + 5])
    metas = [dict(img_size=[200, 224], ori_size=[100, 112], scale_factor=[2.0, 2.0])]
    with torch.no_grad():
        for h in bhs:
            h.eval()
        x0 = [f[:1] for f in feats]
        boxes = test_props.clone()
        ms = []
        for s_ in range(3):
            r_ = bbox2roi([boxes])
            c_, g_ = bhs[s_](extract(x0, r_, 7, STRIDES))
            ms.append(c_)
            if s_ < 2:
                lab = c_[:, :-1].argmax(1)
                g4 = g_.view(g_.shape[0], -1, 4)[torch.arange(g_.shape[0]), lab]
                boxes = decode(boxes, g4, means, stage_stds[s_], tuple(metas[0]["img_size"]))
        cavg = sum(ms) / float(len(ms))
        db, ds, dl = get_bboxes(bbox2roi([boxes]), cavg, g_, tuple(metas[0]["img_size"]), metas[0]["scale_factor"],
                                k, means, stage_stds[2])
        sfv = torch.tensor(metas[0]["scale_factor"] * 2, dtype=torch.float32)
        scaled = db * sfv
        mr = bbox2roi([scaled])
        mf = extract(x0, mr, 14, STRIDES)
        merged = np.mean([torch.sigmoid(h(mf)).numpy() for h in mhs], axis=0)
        merged = torch.from_numpy(merged)[torch.arange(db.shape[0]), dl]
        pb = scaled / sfv
        oh, ow = metas[0]["ori_size"]
        det_masks = torch.stack([paste(merged[i], pb[i], oh, ow) for i in range(db.shape[0])]) if db.shape[0] else \
            torch.zeros(0, oh, ow, dtype=torch.uint8)
    t.update(test_proposals=test_props, test_boxes=db, test_scores=ds, test_labels=dl, test_masks=packbits(det_masks))
    # train (batch statistics)
    for h in bhs:
        h.train()
    current = props
    stage_losses = []
    for s_ in range(3):
        samples = [sample(p, g, thrs[s_]) for p, g in zip(current, gts)]
        rois = bbox2roi([s["boxes"] for s in samples])
        cls, reg = bhs[s_](extract(feats, rois, 7, STRIDES))
        lc, lb, acc, lab = bbox_loss(cls, reg, rois, samples, gts, labels, k, means, stage_stds[s_], True, "GIoULoss",
                                     10.0)
        pos_rois = bbox2roi([s["boxes"][: s["num_pos"]] for s in samples])
        mp = mhs[s_](extract(feats, pos_rois, 14, STRIDES))
        mt = torch.cat([mask_targets(s, m) for s, m in zip(samples, masks)])
        pl = torch.cat([l[s["pos_gt"]] for s, l in zip(samples, labels)])
        lm = mask_loss(mp, mt, pl)
        stage_losses.append([lc.item() * lws[s_], acc.item(), lb.item() * lws[s_], lm.item() * lws[s_]])
        t[f"s{s_}_num_rois"] = torch.tensor([s["boxes"].shape[0] for s in samples])
        if s_ < 2:
            with torch.no_grad():
                lab = torch.where(lab == k, cls[:, :-1].argmax(1), lab)
                nxt, row = [], 0
                for i, s in enumerate(samples):
                    m_ = s["boxes"].shape[0]
                    g4 = reg[row:row + m_].view(m_, -1, 4)[torch.arange(m_), lab[row:row + m_]]
                    b = decode(s["boxes"], g4, means, stage_stds[s_], img_sizes[i])
                    keep = torch.ones(m_, dtype=torch.bool)
                    keep[: s["num_pos"]] = ~s["pos_is_gt"]
                    nxt.append(b[keep])
                    row += m_
                current = nxt
    for s_ in range(3):
        for name, m in [("bbox_head", bhs[s_])]:
            for j, cm in enumerate(m.shared_convs):
                t[f"after.{s_}.shared_convs.{j}.bn.running_mean"] = cm.bn.running_mean.clone()
                t[f"after.{s_}.shared_convs.{j}.bn.running_var"] = cm.bn.running_var.clone()
    t["stage_losses"] = torch.tensor(stage_losses)
    save_file({k_: v.contiguous() for k_, v in t.items()}, os.path.join(OUT, "cascade.safetensors"))
    bbox_heads = []
    for s_ in range(3):
        bbox_heads.append(dict(
            type="ConvFCBBoxHead", num_shared_convs=4, num_shared_fcs=1, in_channels=C, conv_out_channels=6,
            fc_out_channels=16, roi_feat_size=7, num_classes=k,
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=means, target_stds=stage_stds[s_]),
            reg_class_agnostic=False, reg_decoded_bbox=True, norm_cfg=dict(type="SyncBN", requires_grad=True),
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type="GIoULoss", loss_weight=10.0)))
    cases["cascade"] = dict(
        roi_head=dict(
            type="CascadeRoIHead", num_stages=3, stage_loss_weights=lws,
            bbox_roi_extractor=extractor(7), bbox_head=bbox_heads, mask_roi_extractor=extractor(14),
            mask_head=dict(type="FCNMaskHead", num_convs=4, in_channels=C, conv_out_channels=8, num_classes=k),
            train=[dict(assigner=dict(pos_iou_thr=th, neg_iou_thr=th, min_pos_iou=th, match_low_quality=False,
                                      ignore_iof_thr=-1),
                        sampler=dict(num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
                        mask_size=28, pos_weight=-1, debug=False) for th in thrs],
            test=dict(score_thr=0.05, nms_iou=0.5, max_per_img=100, mask_thr_binary=0.5)),
        img_sizes=[list(s) for s in img_sizes], metas=metas,
    )
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == "__main__":
    main()
