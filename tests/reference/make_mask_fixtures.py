"""Generate fixtures for mask paste, mask targets and the FPN resampling ops.

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_mask_fixtures.py

Writes tests/fixtures/ops/masks/ (safetensors; deterministic, seed 0):

  paste.safetensors
      Case "a": masks_a [14,28,28] (sigmoid probabilities), boxes_a [14,4] (x0,y0,x1,y1) in a
      60x90 image: inside, partially outside on every side, tiny, wider than 2*M (so mmdet's
      CPU window cuts the bilinear support), zero width (incl. a 0/0 pixel), zero height,
      flipped, and entirely outside. Case "b": masks_b [5,5,8] (non-square grid), boxes_b [5,4]
      in the same image. image_hw = [60, 90] (i64).
      soft_X [K,60,90] f32: the pasted probabilities; bits_X [K,60,90] u8: soft >= 0.5.
      Reference: mmdet 2.11 `_do_paste_mask` on its CPU path (skip_empty window, one box at a
      time), re-written below with F.grid_sample(align_corners=False); infinite grid
      coordinates are set to 0 as in mmdet; a NaN one (0/0) gives NaN in grid_sample, which
      mmdet's threshold turns into 0, and 0 is stored here (nextdet's soft value).
  targets.safetensors
      gt_masks [4,50,70] u8 (0/1 blobs), proposals [18,4] f32 (unclipped), assigned [18] i64,
      soft28/bits28 [18,28,28] f32 and soft7/bits7 [18,7,7] f32:
      mmdet 2.11 `mask_target_single`: proposals clipped to [0,W]x[0,H], then
      torchvision.ops.roi_align(gt[assigned][:,None].float(), rois, M, 1.0, sampling_ratio=0,
      aligned=True) (= mmcv RoIAlign avg aligned), bits = soft >= 0.5.
  resample.safetensors
      For each case NAME: NAME_x (input, NCHW f32), NAME_size (i64 [2]), NAME_y (output),
      NAME_gy (random upstream gradient), NAME_dx (grad of (y*gy).sum() wrt x).
      near_up2  : F.interpolate(x [2,3,7,9], size=(14,18), mode='nearest')
      near_odd  : nearest, x [1,2,26,14] -> (22,46); both axes hit sizes where PyTorch's f32
                  scale gives other indices than floor(d*in/out)
      near_down : nearest, x [2,3,7,9] -> (5,4)
      near_same : nearest, x [2,3,7,9] -> (7,9)
      sub2_even : F.max_pool2d(x [2,3,8,10], 1, stride=2)
      sub2_odd  : F.max_pool2d(x [2,3,7,9], 1, stride=2)
      bil_up    : F.interpolate(x [2,3,7,9], size=(13,20), mode='bilinear', align_corners=False)
      bil_down  : bilinear, x [2,3,7,9] -> (4,5)
      bil_mixed : bilinear, x [2,3,7,9] -> (7,15) (rows unchanged)
      bil_up2   : bilinear, x [1,2,6,5] -> (12,10)
"""

import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.ops import roi_align

OUT = os.path.join("tests", "fixtures", "ops", "masks")


def paste_one(mask, box, img_h, img_w):
    """mmdet 2.11 `_do_paste_mask(mask[None, None], box[None], img_h, img_w, skip_empty=True)`,
    placed into a full [img_h, img_w] image."""
    out = torch.zeros(img_h, img_w, dtype=torch.float32)
    boxes = box[None].float()
    x0_int, y0_int = torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(dtype=torch.int32)
    x1_int = torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w).to(dtype=torch.int32)
    y1_int = torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h).to(dtype=torch.int32)
    x0_int, y0_int, x1_int, y1_int = (int(v) for v in (x0_int, y0_int, x1_int, y1_int))
    if x1_int <= x0_int or y1_int <= y0_int:
        return out  # mmdet's arange would raise for a window past the image: nothing to paste
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    img_y = torch.arange(y0_int, y1_int, dtype=torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, dtype=torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    img_x[torch.isinf(img_x)] = 0
    img_y[torch.isinf(img_y)] = 0
    gx = img_x[:, None, :].expand(1, img_y.size(1), img_x.size(1))
    gy = img_y[:, :, None].expand(1, img_y.size(1), img_x.size(1))
    grid = torch.stack([gx, gy], dim=3)
    pasted = F.grid_sample(mask[None, None].float(), grid, align_corners=False)
    # A NaN grid coordinate (0/0) makes grid_sample return NaN, which mmdet's `>= thr` turns
    # into 0; nextdet returns 0 for it directly.
    out[y0_int:y1_int, x0_int:x1_int] = torch.nan_to_num(pasted[0, 0], nan=0.0)
    return out


def smooth_masks(k, mh, mw, g):
    """Sigmoid probabilities with blob structure (so thresholds give shapes) plus noise."""
    yy = torch.linspace(-1, 1, mh)[:, None]
    xx = torch.linspace(-1, 1, mw)[None, :]
    out = []
    for _ in range(k):
        cy, cx = (torch.rand(2, generator=g) - 0.5).tolist()
        r = 0.4 + 0.5 * torch.rand(1, generator=g).item()
        logit = 4 * (r - ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()) / r
        logit = logit + 0.8 * torch.randn(mh, mw, generator=g)
        out.append(torch.sigmoid(logit))
    return torch.stack(out).float()


def paste_case(masks, boxes, h, w):
    soft = torch.stack([paste_one(m, b, h, w) for m, b in zip(masks, boxes)])
    return soft, (soft >= 0.5).to(torch.uint8)


def make_paste(g):
    h, w = 60, 90
    boxes_a = torch.tensor(
        [
            [10.3, 8.7, 40.2, 35.1],  # inside
            [-12.4, 5.0, 20.6, 30.2],  # past the left edge
            [70.5, 40.25, 101.0, 75.0],  # past the right and bottom edges
            [30.0, -20.0, 55.5, 12.75],  # past the top edge
            [44.2, 20.9, 46.1, 22.3],  # tiny (2 x 1.4 px)
            [3.0, 2.0, 88.0, 58.0],  # wider than 2*M: the window cuts the bilinear support
            [20.0, 10.0, 20.0, 40.0],  # zero width, x0 at an integer: grid coords +-inf -> 0
            [50.5, 30.0, 50.5, 45.0],  # zero width at a pixel centre: one 0/0 coordinate
            [60.0, 50.0, 75.0, 50.0],  # zero height
            [35.0, 45.0, 25.0, 55.0],  # flipped (x1 < x0)
            [95.0, 10.0, 120.0, 30.0],  # entirely right of the image
            [-30.0, -30.0, -5.0, -4.0],  # entirely above-left of the image
            [0.0, 0.0, 90.0, 60.0],  # the whole image
            [12.9, 33.3, 13.6, 33.9],  # sub-pixel
        ],
        dtype=torch.float32,
    )
    masks_a = smooth_masks(len(boxes_a), 28, 28, g)
    soft_a, bits_a = paste_case(masks_a, boxes_a, h, w)
    boxes_b = torch.tensor(
        [[5.5, 5.5, 30.5, 45.5], [40.0, 3.0, 85.0, 20.0], [-4.0, 30.0, 12.0, 70.0], [60.2, 25.7, 62.9, 29.1],
         [20.0, 20.0, 70.0, 50.0]],
        dtype=torch.float32,
    )
    masks_b = smooth_masks(len(boxes_b), 5, 8, g)
    soft_b, bits_b = paste_case(masks_b, boxes_b, h, w)
    return {
        "image_hw": torch.tensor([h, w], dtype=torch.int64),
        "masks_a": masks_a,
        "boxes_a": boxes_a,
        "soft_a": soft_a,
        "bits_a": bits_a,
        "masks_b": masks_b,
        "boxes_b": boxes_b,
        "soft_b": soft_b,
        "bits_b": bits_b,
    }


def make_targets(g):
    h, w = 50, 70
    yy = torch.arange(h, dtype=torch.float32)[:, None]
    xx = torch.arange(w, dtype=torch.float32)[None, :]
    gts = []
    for cy, cx, ry, rx in [(20, 25, 12, 18), (35, 50, 10, 15), (10, 60, 8, 9), (30, 10, 25, 6)]:
        ell = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        noise = torch.rand(h, w, generator=g) < 0.05
        gts.append((ell ^ noise).to(torch.uint8))
    gt_masks = torch.stack(gts)
    proposals = torch.tensor(
        [
            [5.0, 6.0, 45.0, 35.0],
            [7.3, 8.9, 44.1, 31.6],
            [30.0, 22.0, 68.0, 48.0],
            [-10.0, -5.0, 40.0, 30.0],  # clipped at the top-left
            [50.0, 0.0, 80.0, 20.0],  # clipped at the right
            [0.0, 0.0, 70.0, 50.0],  # whole image: grid 3x2 per bin at M=28
            [20.5, 20.5, 21.5, 21.5],  # one pixel
            [24.0, 15.0, 24.0, 30.0],  # zero width
            [75.0, 10.0, 90.0, 20.0],  # right of the image: zero width after clipping
            [12.25, 3.75, 33.5, 47.25],
            [2.0, 5.0, 18.0, 49.0],
            [40.0, 25.0, 62.0, 46.0],
            [55.5, 2.5, 66.5, 18.5],
            [0.4, 0.6, 69.6, 49.4],
            [10.0, 10.0, 11.0, 40.0],
            [33.0, 33.0, 36.0, 34.0],
            [1.0, 1.0, 3.0, 3.0],
            [60.0, 40.0, 75.0, 55.0],  # clipped at the bottom-right
        ],
        dtype=torch.float32,
    )
    assigned = torch.tensor([0, 0, 1, 0, 2, 3, 0, 0, 2, 3, 3, 1, 2, 1, 3, 1, 0, 1], dtype=torch.int64)
    clipped = proposals.clone()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clamp(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clamp(0, h)
    rois = torch.cat([torch.arange(len(clipped), dtype=torch.float32)[:, None], clipped], dim=1)
    masks_th = gt_masks.index_select(0, assigned).float()[:, None]
    out = {"gt_masks": gt_masks, "proposals": proposals, "assigned": assigned}
    for m in (28, 7):
        soft = roi_align(masks_th, rois, (m, m), 1.0, sampling_ratio=0, aligned=True).squeeze(1)
        out[f"soft{m}"] = soft
        out[f"bits{m}"] = (soft >= 0.5).float()
    return out


def make_resample(g):
    out = {}

    def case(name, shape, fn, size):
        x = torch.randn(*shape, generator=g).requires_grad_(True)
        y = fn(x)
        gy = torch.randn(y.shape, generator=g)
        (y * gy).sum().backward()
        out[f"{name}_x"] = x.detach()
        out[f"{name}_size"] = torch.tensor(size if size else list(y.shape[2:]), dtype=torch.int64)
        out[f"{name}_y"] = y.detach().contiguous()
        out[f"{name}_gy"] = gy
        out[f"{name}_dx"] = x.grad

    def near(size):
        return lambda x: F.interpolate(x, size=size, mode="nearest")

    def bil(size):
        return lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def sub2(x):
        return F.max_pool2d(x, 1, stride=2)

    case("near_up2", (2, 3, 7, 9), near((14, 18)), (14, 18))
    case("near_odd", (1, 2, 26, 14), near((22, 46)), (22, 46))
    case("near_down", (2, 3, 7, 9), near((5, 4)), (5, 4))
    case("near_same", (2, 3, 7, 9), near((7, 9)), (7, 9))
    case("sub2_even", (2, 3, 8, 10), sub2, None)
    case("sub2_odd", (2, 3, 7, 9), sub2, None)
    case("bil_up", (2, 3, 7, 9), bil((13, 20)), (13, 20))
    case("bil_down", (2, 3, 7, 9), bil((4, 5)), (4, 5))
    case("bil_mixed", (2, 3, 7, 9), bil((7, 15)), (7, 15))
    case("bil_up2", (1, 2, 6, 5), bil((12, 10)), (12, 10))
    # near_odd really exercises the f32 scale: check that the exact rule would differ.
    exact = [min(d * 26 // 22, 25) for d in range(22)]
    got = [int(v) for v in F.interpolate(torch.arange(26.0).view(1, 1, 26, 1), size=(22, 1)).view(-1)]
    assert exact != got, "near_odd no longer distinguishes the f32 index rule"
    return out


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    for name, tensors in [("paste", make_paste(g)), ("targets", make_targets(g)), ("resample", make_resample(g))]:
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        assert all(torch.isfinite(v.float()).all() for v in tensors.values()), name
        path = os.path.join(OUT, f"{name}.safetensors")
        save_file(tensors, path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
