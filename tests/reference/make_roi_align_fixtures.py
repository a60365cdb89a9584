"""Generate forward/backward fixtures for RoIAlign and the multi-level RoI extractor.

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_roi_align_fixtures.py

Writes tests/fixtures/ops/roi_align/ (safetensors, float32, contiguous; deterministic, seed 0):

  roi_align.safetensors
      x [2,37,9,11] (37 channels: one 32-channel block plus a tail), rois [14,5]
      (batch, x1, y1, x2, y2) in image coordinates, spatial_scale 0.5, output (3,4):
      boxes inside, partly and wholly outside the map, zero-size, inverted, on the last
      row/column, and one spanning the map (adaptive grid > 1).
      For aligned a in {0,1} and sampling s in {0,2}:
        out_a{a}_s{s} = torchvision.ops.roi_align(x, rois, (3,4), 0.5, s or -1, aligned)
        dx_a{a}_s{s}  = d/dx sum(out * g_a{a}_s{s}), g random like out.
      torchvision's adaptive mode is sampling_ratio <= 0; the script checks that 0 and -1 agree.
      rois_empty [0,5] with out_empty [0,37,3,4] (K = 0).
  extractor.safetensors
      feat0 [2,8,40,48] (stride 4), feat1 [2,8,20,24] (stride 8), rois [12,5] in a 160x192
      image, g [12,8,7,7]; mmdet SingleRoIExtractor with finest_scale 56: scale =
      sqrt(w*h), lvl = floor(log2(scale/56 + 1e-6)) clamped to [0,1]; each level pooled with
      roi_align(output 7x7, spatial_scale 1/stride, sampling_ratio 0, aligned=True) and
      gathered back in RoI order: out [12,8,7,7], levels [12] (as float), dfeat0, dfeat1.
"""

import os
import sys

import torch
from safetensors.torch import save_file
from torchvision.ops import roi_align

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository

OUT = os.path.join("tests", "fixtures", "ops", "roi_align")


def save(path, tensors):
    tensors = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}
    save_file(tensors, path)
    print(f"{path}: " + ", ".join(f"{k}{list(v.shape)}" for k, v in tensors.items()))


def single(g):
    x = torch.randn(2, 37, 9, 11, generator=g)
    # Feature map 9x11 at scale 0.5: image coordinates span 22 x 18.
    rois = torch.tensor([
        [0, 2.0, 3.0, 15.0, 12.0],     # inside
        [1, 0.0, 0.0, 22.0, 18.0],     # the whole map
        [1, 4.3, 1.7, 9.9, 16.2],      # fractional, tall
        [0, -6.0, -4.0, 5.0, 6.0],     # partly outside, top-left
        [1, 16.0, 12.0, 30.0, 25.0],   # partly outside, bottom-right (last row/column)
        [0, 40.0, 40.0, 60.0, 50.0],   # wholly outside
        [0, -30.0, -20.0, -10.0, -5.0],  # wholly outside, negative
        [1, 7.0, 7.0, 7.0, 7.0],       # zero size
        [0, 10.0, 5.0, 10.0, 14.0],    # zero width
        [1, 12.0, 10.0, 4.0, 3.0],     # inverted
        [0, 9.0, 2.0, 3.0, 11.0],      # inverted x only
        [0, 20.0, 16.0, 22.0, 18.0],   # bottom-right corner
        [1, 0.5, 0.5, 1.5, 1.2],       # tiny
        [0, -1.5, 8.0, 23.5, 19.0],    # wider than the map
    ])
    out = {"x": x, "rois": rois}
    for aligned in (False, True):
        for s in (0, 2):
            xg = x.clone().requires_grad_(True)
            y = roi_align(xg, rois, (3, 4), spatial_scale=0.5, sampling_ratio=s if s > 0 else -1,
                          aligned=aligned)
            if s == 0:
                y0 = roi_align(x, rois, (3, 4), spatial_scale=0.5, sampling_ratio=0, aligned=aligned)
                assert torch.equal(y.detach(), y0), "torchvision: sampling_ratio 0 and -1 differ"
            gy = torch.randn(y.shape, generator=g)
            (y * gy).sum().backward()
            tag = f"a{int(aligned)}_s{s}"
            out[f"out_{tag}"] = y
            out[f"g_{tag}"] = gy
            out[f"dx_{tag}"] = xg.grad
    empty = torch.zeros(0, 5)
    out["rois_empty"] = empty
    out["out_empty"] = roi_align(x, empty, (3, 4), spatial_scale=0.5, sampling_ratio=-1, aligned=True)
    save(os.path.join(OUT, "roi_align.safetensors"), out)


def map_roi_levels(rois, num_levels, finest_scale=56):
    """mmdet SingleRoIExtractor.map_roi_levels."""
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    lvls = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return lvls.clamp(min=0, max=num_levels - 1).long()


def extractor(g):
    c = 8
    feats = [torch.randn(2, c, 40, 48, generator=g), torch.randn(2, c, 20, 24, generator=g)]
    strides = [4, 8]
    k = 12
    cx = torch.rand(k, generator=g) * 192
    cy = torch.rand(k, generator=g) * 160
    # Sizes 20..180 px so that both levels get RoIs; a few cross the image border.
    w = 20 + torch.rand(k, generator=g) * 160
    h = w * (0.5 + torch.rand(k, generator=g))
    batch = (torch.arange(k) % 2).float()
    rois = torch.stack([batch, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    lvls = map_roi_levels(rois, len(feats))
    assert set(lvls.tolist()) == {0, 1}, lvls
    fg = [f.clone().requires_grad_(True) for f in feats]
    out = torch.zeros(k, c, 7, 7)
    for i, (f, s) in enumerate(zip(fg, strides)):
        inds = (lvls == i).nonzero(as_tuple=False).squeeze(1)
        out[inds] = roi_align(f, rois[inds], (7, 7), spatial_scale=1.0 / s, sampling_ratio=0, aligned=True)
    gy = torch.randn(out.shape, generator=g)
    (out * gy).sum().backward()
    save(os.path.join(OUT, "extractor.safetensors"), {
        "feat0": feats[0], "feat1": feats[1], "rois": rois, "levels": lvls, "g": gy, "out": out,
        "dfeat0": fg[0].grad, "dfeat1": fg[1].grad,
    })


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator()
    g.manual_seed(0)
    single(g)
    extractor(g)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
