"""Time torchvision.ops.roi_align on the box-head case, for comparison with
`cargo run --release -p nextdet-ops --example bench_roi_align` (same RoIs, same rows).

    /work/ref/bin/python tests/reference/bench_roi_align.py [--threads 2] [--iters 5] [--rois 1000]

1000 RoIs of one 800x1216 image, 256 channels, 7x7 bins, aligned=True, adaptive sampling
(sampling_ratio=-1), on FPN levels of strides 4, 8, 16, 32; RoIs go to levels by mmdet's rule
(finest_scale 56). Rows: the four levels' forward; the backward (gradient of the four maps for
an all-ones output gradient); mmdet's SingleRoIExtractor forward and backward end to end.
"""

import argparse
import math
import sys
import time

import torch
from torchvision.ops import roi_align

sys.dont_write_bytecode = True

STRIDES = [4, 8, 16, 32]
CHANNELS = 256
IMAGE = (800, 1216)


def time_ms(iters, fn):
    """Best of five means over `iters` calls, after one warm-up call."""
    fn()
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        best = min(best, (time.perf_counter() - start) * 1000.0 / iters)
    return best


def make_rois(k):
    """The same 64-bit LCG draws as the Rust example."""
    state = 12345
    mask = (1 << 64) - 1

    def uniform():
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) & mask
        return (state >> 40) / float(1 << 24)

    h, w = float(IMAGE[0]), float(IMAGE[1])
    rows = []
    for _ in range(k):
        side = 16.0 * (600.0 / 16.0) ** uniform()
        aspect = 2.0 ** (2.0 * uniform() - 1.0)
        bw, bh = side * math.sqrt(aspect), side / math.sqrt(aspect)
        cx, cy = uniform() * w, uniform() * h
        rows.append([0.0, min(max(cx - bw / 2, 0.0), w), min(max(cy - bh / 2, 0.0), h),
                     min(max(cx + bw / 2, 0.0), w), min(max(cy + bh / 2, 0.0), h)])
    return torch.tensor(rows, dtype=torch.float32)


def map_roi_levels(rois, num_levels, finest_scale=56):
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    lvls = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return lvls.clamp(min=0, max=num_levels - 1).long()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rois", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rois = make_rois(args.rois)
    lvls = map_roi_levels(rois, len(STRIDES))
    level_rois = [rois[lvls == i].contiguous() for i in range(len(STRIDES))]
    feats = [torch.randn(1, CHANNELS, IMAGE[0] // s, IMAGE[1] // s, requires_grad=True) for s in STRIDES]

    def forward():
        return [roi_align(f, r, (7, 7), spatial_scale=1.0 / s, sampling_ratio=-1, aligned=True)
                for f, r, s in zip(feats, level_rois, STRIDES)]

    outs = forward()
    ones = [torch.ones_like(o) for o in outs]

    def backward():
        return [torch.autograd.grad(o, f, g, retain_graph=True) for o, f, g in zip(outs, feats, ones)]

    def extractor():
        out = feats[0].new_zeros(rois.size(0), CHANNELS, 7, 7)
        target = map_roi_levels(rois, len(STRIDES))
        for i, (f, s) in enumerate(zip(feats, STRIDES)):
            inds = (target == i).nonzero(as_tuple=False).squeeze(1)
            if inds.numel() > 0:
                out[inds] = roi_align(f, rois[inds], (7, 7), spatial_scale=1.0 / s, sampling_ratio=-1,
                                      aligned=True)
        return out

    ex_out = extractor()
    ex_ones = torch.ones_like(ex_out)

    print(f"roi_align: {args.rois} RoIs per level {[len(r) for r in level_rois]}, C={CHANNELS}, 7x7, "
          f"image {IMAGE[0]}x{IMAGE[1]}, {torch.get_num_threads()} threads, best of 5 x {args.iters}")
    with torch.no_grad():
        rows = [("forward (NCHW maps)", time_ms(args.iters, forward))]
    rows.append(("backward (NCHW maps)", time_ms(args.iters, backward)))
    with torch.no_grad():
        rows.append(("extractor forward (NCHW)", time_ms(args.iters, extractor)))
    rows.append(("extractor backward (NCHW)",
                 time_ms(args.iters, lambda: torch.autograd.grad(ex_out, feats, ex_ones, retain_graph=True))))
    for name, ms in rows:
        print(f"torch   {name:<26} {ms:9.2f} ms")


if __name__ == "__main__":
    main()
