"""Generate fixtures for the box ops, NMS and anchors of nextdet-ops (ops/tests/boxes_nms.rs,
ops/tests/anchors.rs).

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_box_fixtures.py

Writes tests/fixtures/ops/boxes/ (safetensors; deterministic, seed 0). Expected values come from
torchvision.ops where it has the op, and from mmdet 2.11's formulas (
core/bbox/coder/delta_xywh_bbox_coder.py, core/bbox/iou_calculators/iou2d_calculator.py,
core/anchor/anchor_generator.py, core/anchor/utils.py) written out below in torch, since mmcv is
not installed. Keys:

  overlaps.safetensors
      a [40,4], b [30,4]: random boxes, boxes outside the image, zero-size (points, lines),
      inverted, duplicated. iou, iof, giou [40,30]: torchvision box_iou / generalized_box_iou
      (iof: mmdet's), with mmdet's eps convention (union, enclose >= 1e-6) where torchvision
      gives NaN for an empty union, and giou = iou where the enclosing box is empty (torchvision
      NaN or inf).
  giou_grad.safetensors
      pred, target [64,4] (incl. zero-size and inverted), gy [64]; giou [64] = mmdet
      bbox_overlaps(mode='giou', is_aligned=True, eps=1e-7); dpred, dtarget = grads of
      (giou*gy).sum() by torch autograd.
  coder.safetensors
      proposals, gt [50,4]; encoded [50,4] (means 0, stds [.1,.1,.2,.2]); rois [50,4],
      deltas [50,8] (randn*2, some beyond the ratio clip); decoded [50,8] (no max_shape),
      decoded_clip [50,8] (max_shape (h, w) = (300, 400)); decoded1 [50,4] from deltas[:, :4].
  nms_small.safetensors
      boxes [300,4] (incl. zero-size, inverted, duplicates), scores [300] with many ties (0.05
      steps), idxs [300] (u8, 0..5); keep_{30,50,70} = torchvision nms at 0.3/0.5/0.7;
      bkeep_50 = torchvision batched_nms at 0.5 (coordinate-offset path, N*4 <= 4000).
  nms_12k.safetensors
      boxes [12000,4] (centers in 800x1216, sizes 10-300), scores [12000] (rounded to 1e-3, so
      ties), idxs [12000] (u8, 0..80); keep_50, keep_70 = torchvision nms; bkeep_50 =
      torchvision batched_nms at 0.5 (per-class path), reordered stably by descending score
      (torchvision's own order among equal scores comes from an unstable sort).
  anchors.safetensors
      strides 4..64, ratios [0.5,1,2], scales [8], featmap sizes (13,19) (7,10) (4,5) (2,3) (1,2):
      anchors_{l} [H*W*3,4]; valid_{l} (u8) for pad_shape (50,70); inside_{b}_{l} (u8) for
      img_shape (45,66) and allowed_border b in {m1 (= -1), 0, 8};
      octave_{l}: strides [8,16], ratios [0.5,1,2], octave_base_scale 4, scales_per_octave 3,
      featmap sizes (3,4), (2,2).
"""

import os

import numpy as np
import torch
import torchvision.ops as tvo
from safetensors.torch import save_file

OUT = os.path.join("tests", "fixtures", "ops", "boxes")


def random_boxes(n, h, w, smin, smax, g):
    cx = torch.rand(n, generator=g) * w
    cy = torch.rand(n, generator=g) * h
    bw = smin + torch.rand(n, generator=g) * (smax - smin)
    bh = smin + torch.rand(n, generator=g) * (smax - smin)
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)


def odd_boxes():
    """Zero-size, inverted, outside-the-image and duplicate boxes."""
    return torch.tensor(
        [
            [5.0, 5.0, 5.0, 5.0],  # point
            [5.0, 5.0, 5.0, 5.0],  # the same point
            [0.0, 10.0, 20.0, 10.0],  # horizontal line
            [3.0, 0.0, 3.0, 30.0],  # vertical line
            [30.0, 30.0, 10.0, 10.0],  # inverted in both
            [30.0, 0.0, 10.0, 20.0],  # inverted in x
            [-50.0, -40.0, 20.0, 25.0],  # partly outside
            [900.0, 700.0, 1000.0, 760.0],  # outside an 800x600 image
            [10.0, 10.0, 40.0, 40.0],
            [10.0, 10.0, 40.0, 40.0],  # duplicate
        ]
    )


def mmdet_overlaps(b1, b2, mode, aligned=False, eps=1e-6):
    """mmdet 2.11 bbox_overlaps."""
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    if aligned:
        lt = torch.max(b1[..., :2], b2[..., :2])
        rb = torch.min(b1[..., 2:], b2[..., 2:])
        a1, a2 = area1, area2
        elt = torch.min(b1[..., :2], b2[..., :2])
        erb = torch.max(b1[..., 2:], b2[..., 2:])
    else:
        lt = torch.max(b1[:, None, :2], b2[None, :, :2])
        rb = torch.min(b1[:, None, 2:], b2[None, :, 2:])
        a1, a2 = area1[:, None], area2[None, :]
        elt = torch.min(b1[:, None, :2], b2[None, :, :2])
        erb = torch.max(b1[:, None, 2:], b2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = a1 + a2 - overlap if mode in ("iou", "giou") else a1 + 0 * overlap
    eps = union.new_tensor([eps])
    union = torch.max(union, eps)
    ious = overlap / union
    if mode in ("iou", "iof"):
        return ious
    ewh = (erb - elt).clamp(min=0)
    enclose = torch.max(ewh[..., 0] * ewh[..., 1], eps)
    return ious - (enclose - union) / enclose


def bbox2delta(p, g, means, stds):
    px = (p[..., 0] + p[..., 2]) * 0.5
    py = (p[..., 1] + p[..., 3]) * 0.5
    pw = p[..., 2] - p[..., 0]
    ph = p[..., 3] - p[..., 1]
    gx = (g[..., 0] + g[..., 2]) * 0.5
    gy = (g[..., 1] + g[..., 3]) * 0.5
    gw = g[..., 2] - g[..., 0]
    gh = g[..., 3] - g[..., 1]
    d = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], -1)
    return (d - d.new_tensor(means)[None]) / d.new_tensor(stds)[None]


def delta2bbox(rois, deltas, means, stds, max_shape=None, wh_ratio_clip=16 / 1000):
    k = deltas.size(-1) // 4
    means = deltas.new_tensor(means).view(1, -1).repeat(1, k)
    stds = deltas.new_tensor(stds).view(1, -1).repeat(1, k)
    d = deltas * stds + means
    dx, dy, dw, dh = d[..., 0::4], d[..., 1::4], d[..., 2::4], d[..., 3::4]
    max_ratio = np.abs(np.log(wh_ratio_clip))
    dw = dw.clamp(min=-max_ratio, max=max_ratio)
    dh = dh.clamp(min=-max_ratio, max=max_ratio)
    x1, y1, x2, y2 = rois[..., 0], rois[..., 1], rois[..., 2], rois[..., 3]
    px = ((x1 + x2) * 0.5).unsqueeze(-1).expand_as(dx)
    py = ((y1 + y2) * 0.5).unsqueeze(-1).expand_as(dy)
    pw = (x2 - x1).unsqueeze(-1).expand_as(dw)
    ph = (y2 - y1).unsqueeze(-1).expand_as(dh)
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    gx = px + pw * dx
    gy = py + ph * dy
    out = torch.stack([gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5], -1).view(deltas.size())
    if max_shape is not None:
        max_xy = torch.tensor([max_shape[1], max_shape[0]] * (2 * k), dtype=out.dtype)[None]
        out = torch.where(out < 0, out.new_tensor(0.0), out)
        out = torch.where(out > max_xy, max_xy, out)
    return out


def base_anchors(base_size, scales, ratios):
    """mmdet AnchorGenerator.gen_single_level_base_anchors, center_offset 0, scale_major."""
    w = h = base_size
    x_c, y_c = 0.0 * w, 0.0 * h
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w * w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h * h_ratios[:, None] * scales[None, :]).view(-1)
    return torch.stack([x_c - 0.5 * ws, y_c - 0.5 * hs, x_c + 0.5 * ws, y_c + 0.5 * hs], -1)


def grid_anchors(base, hw, stride):
    fh, fw = hw
    sx = torch.arange(0, fw) * stride
    sy = torch.arange(0, fh) * stride
    xx = sx.repeat(len(sy))
    yy = sy.view(-1, 1).repeat(1, len(sx)).view(-1)
    shifts = torch.stack([xx, yy, xx, yy], -1).type_as(base)
    return (base[None] + shifts[:, None]).view(-1, 4)


def valid_flags(hw, pad_shape, stride, a):
    fh, fw = hw
    vh = min(int(np.ceil(pad_shape[0] / stride)), fh)
    vw = min(int(np.ceil(pad_shape[1] / stride)), fw)
    vx = torch.zeros(fw, dtype=torch.bool)
    vy = torch.zeros(fh, dtype=torch.bool)
    vx[:vw] = 1
    vy[:vh] = 1
    xx = vx.repeat(len(vy))
    yy = vy.view(-1, 1).repeat(1, len(vx)).view(-1)
    return (xx & yy)[:, None].expand(-1, a).contiguous().view(-1)


def inside_flags(anchors, valid, img_shape, border):
    h, w = img_shape
    if border < 0:
        return valid
    return (
        valid
        & (anchors[:, 0] >= -border)
        & (anchors[:, 1] >= -border)
        & (anchors[:, 2] < w + border)
        & (anchors[:, 3] < h + border)
    )


def nan_to_mmdet(tv, mm):
    return torch.where(torch.isnan(tv), mm, tv)


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(0)

    # Pairwise overlaps.
    a = torch.cat([random_boxes(30, 600, 800, 5, 300, g), odd_boxes()])
    b = torch.cat([random_boxes(20, 600, 800, 5, 300, g), odd_boxes()])
    b[:8] = a[:8] + torch.randn(8, 4, generator=g) * 5  # overlapping pairs
    iou = nan_to_mmdet(tvo.box_iou(a, b), mmdet_overlaps(a, b, "iou"))
    giou = tvo.generalized_box_iou(a, b)
    # Where torchvision divides by an empty enclosing box (NaN or inf), nextdet's convention is
    # the plain IoU (no enclosing term); where only the union is empty, mmdet's eps value.
    ewh = (torch.max(a[:, None, 2:], b[None, :, 2:]) - torch.min(a[:, None, :2], b[None, :, :2])).clamp(min=0)
    empty_enclose = ewh[..., 0] * ewh[..., 1] <= 0
    giou = torch.where(empty_enclose, iou, nan_to_mmdet(giou, mmdet_overlaps(a, b, "giou")))
    iof = mmdet_overlaps(a, b, "iof")
    save_file({"a": a, "b": b, "iou": iou, "iof": iof, "giou": giou}, os.path.join(OUT, "overlaps.safetensors"))

    # Aligned GIoU and its gradients.
    pred = random_boxes(64, 300, 400, 5, 120, g)
    target = pred + torch.randn(64, 4, generator=g) * 15
    pred[60] = torch.tensor([5.0, 5.0, 5.0, 5.0])
    target[61] = torch.tensor([30.0, 30.0, 10.0, 10.0])
    pred[62] = torch.tensor([0.0, 10.0, 20.0, 10.0])
    target[63] = torch.tensor([400.0, 300.0, 420.0, 330.0])
    gy = torch.randn(64, generator=g)
    p = pred.clone().requires_grad_(True)
    t = target.clone().requires_grad_(True)
    gi = mmdet_overlaps(p, t, "giou", aligned=True, eps=1e-7)
    (gi * gy).sum().backward()
    save_file(
        {"pred": pred, "target": target, "gy": gy, "giou": gi.detach(), "dpred": p.grad, "dtarget": t.grad},
        os.path.join(OUT, "giou_grad.safetensors"),
    )

    # DeltaXYWH coder.
    means, stds = (0.0, 0.0, 0.0, 0.0), (0.1, 0.1, 0.2, 0.2)
    proposals = random_boxes(50, 300, 400, 4, 150, g)
    gt = proposals + torch.randn(50, 4, generator=g) * 10
    gt[:, 2:] = torch.max(gt[:, 2:], gt[:, :2] + 1)
    rois = random_boxes(50, 300, 400, 4, 150, g)
    deltas = torch.randn(50, 8, generator=g) * 2
    save_file(
        {
            "proposals": proposals,
            "gt": gt,
            "encoded": bbox2delta(proposals, gt, means, stds),
            "rois": rois,
            "deltas": deltas,
            "decoded": delta2bbox(rois, deltas, means, stds),
            "decoded_clip": delta2bbox(rois, deltas, means, stds, max_shape=(300, 400)),
            "decoded1": delta2bbox(rois, deltas[:, :4].contiguous(), means, stds),
        },
        os.path.join(OUT, "coder.safetensors"),
    )

    # NMS, small, with ties and odd boxes.
    boxes = torch.cat([random_boxes(280, 300, 400, 5, 120, g), odd_boxes(), odd_boxes()])
    boxes[200:220] = boxes[:20] + torch.randn(20, 4, generator=g)
    scores = (torch.rand(300, generator=g) * 20).floor() * 0.05
    idxs = torch.randint(0, 5, (300,), generator=g).to(torch.uint8)
    small = {"boxes": boxes, "scores": scores, "idxs": idxs}
    for thr in (0.3, 0.5, 0.7):
        small[f"keep_{int(thr * 100)}"] = tvo.nms(boxes, scores, thr)
    small["bkeep_50"] = tvo.batched_nms(boxes, scores, idxs.long(), 0.5)
    save_file(small, os.path.join(OUT, "nms_small.safetensors"))

    # NMS, 12k boxes.
    boxes = random_boxes(12000, 800, 1216, 10, 300, g)
    scores = (torch.rand(12000, generator=g) * 1000).round() / 1000
    idxs = torch.randint(0, 80, (12000,), generator=g).to(torch.uint8)
    big = {"boxes": boxes, "scores": scores, "idxs": idxs}
    for thr in (0.5, 0.7):
        big[f"keep_{int(thr * 100)}"] = tvo.nms(boxes, scores, thr)
    # The per-class path sorts the merged result with an unstable sort, so torchvision's order
    # among equal scores is arbitrary; store it in the canonical order (ties by input index).
    bkeep = tvo.batched_nms(boxes, scores, idxs.long(), 0.5).sort().values
    big["bkeep_50"] = bkeep[scores[bkeep].sort(descending=True, stable=True).indices]
    save_file(big, os.path.join(OUT, "nms_12k.safetensors"))

    # Anchors.
    anc = {}
    strides = [4, 8, 16, 32, 64]
    sizes = [(13, 19), (7, 10), (4, 5), (2, 3), (1, 2)]
    ratios = torch.Tensor([0.5, 1.0, 2.0])
    scales = torch.Tensor([8])
    for lvl, (s, hw) in enumerate(zip(strides, sizes)):
        an = grid_anchors(base_anchors(s, scales, ratios), hw, s)
        va = valid_flags(hw, (50, 70), s, 3)
        anc[f"anchors_{lvl}"] = an
        anc[f"valid_{lvl}"] = va.to(torch.uint8)
        for border, name in ((-1, "m1"), (0, "0"), (8, "8")):
            anc[f"inside_{name}_{lvl}"] = inside_flags(an, va, (45, 66), border).to(torch.uint8)
    octave = np.array([2 ** (i / 3) for i in range(3)]) * 4
    for lvl, (s, hw) in enumerate(zip([8, 16], [(3, 4), (2, 2)])):
        anc[f"octave_{lvl}"] = grid_anchors(base_anchors(s, torch.Tensor(octave), ratios), hw, s)
    # torchvision's AnchorGenerator rounds its base anchors (sizes are absolute: stride * 8);
    # its grid is the same position-major shift of them.
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator

    tv = TvAnchorGenerator()
    for lvl, (s, hw) in enumerate(zip(strides, sizes)):
        tv_base = tv.generate_anchors([s * 8], [0.5, 1.0, 2.0])
        anc[f"tv_anchors_{lvl}"] = grid_anchors(tv_base, hw, s)
    save_file(anc, os.path.join(OUT, "anchors.safetensors"))

    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))


if __name__ == "__main__":
    main()
