"""Time mmdet 2.11's CPU mask paste (the reference for `ops/examples/bench_mask_paste.rs`).

    /work/ref/bin/python tests/reference/bench_mask_paste.py [THREADS] [RUNS]

Pastes 100 masks of 28x28 into an 800x1216 image the way mmdet 2.11
`FCNMaskHead.get_seg_masks` does on the CPU: `im_mask = zeros(N, H, W, bool)`, then per box
`_do_paste_mask(..., skip_empty=True)` (window floor(x0)-1 .. ceil(x1)+1, F.grid_sample
align_corners=False) and `>= 0.5` into the window. The boxes (20..400 px) and mask values are
the deterministic formulas of the Rust example, so both time the same work. Also times the
next step, pycocotools RLE encoding of the 100 masks as mmdet does it (Fortran-order copy).
Then times the FPN resampling ops (F.interpolate nearest/bilinear to 100x152 and
F.max_pool2d(x, 1, 2) of x [2,256,50,76]; forward, and forward + backward with upstream g).
Prints the best of RUNS runs in milliseconds.
"""

import math
import sys
import time

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F

H, W, N, M = 800, 1216, 100, 28


def bench_inputs():
    """Same formulas as `inputs()` in ops/examples/bench_mask_paste.rs (f32)."""
    boxes = []
    for i in range(N):
        bw = 20 + (i * 37) % 381
        bh = 20 + (i * 53) % 381
        x0 = (i * 131) % (W - bw) + 0.25 * (i % 4)
        y0 = (i * 97) % (H - bh) + 0.125 * (i % 8)
        boxes.append([x0, y0, x0 + bw + 0.5, y0 + bh + 0.75])
    r = torch.arange(M, dtype=torch.float32)[:, None]
    c = torch.arange(M, dtype=torch.float32)[None, :]
    masks = torch.stack([0.5 + 0.5 * torch.sin(0.3 * r + 0.2 * c + float(i)) for i in range(N)])
    return masks.float(), torch.tensor(boxes, dtype=torch.float32)


def do_paste_mask_cpu(masks, boxes, img_h, img_w):
    """mmdet 2.11 `_do_paste_mask(masks, boxes, img_h, img_w, skip_empty=True)`."""
    x0_int, y0_int = torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(dtype=torch.int32)
    x1_int = torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w).to(dtype=torch.int32)
    y1_int = torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h).to(dtype=torch.int32)
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    n = masks.shape[0]
    img_y = torch.arange(y0_int, y1_int, dtype=torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, dtype=torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    if torch.isinf(img_x).any():
        img_x[torch.where(torch.isinf(img_x))] = 0
    if torch.isinf(img_y).any():
        img_y[torch.where(torch.isinf(img_y))] = 0
    gx = img_x[:, None, :].expand(n, img_y.size(1), img_x.size(1))
    gy = img_y[:, :, None].expand(n, img_y.size(1), img_x.size(1))
    grid = torch.stack([gx, gy], dim=3)
    img_masks = F.grid_sample(masks.to(dtype=torch.float32), grid, align_corners=False)
    return img_masks[:, 0], (slice(y0_int, y1_int), slice(x0_int, x1_int))


def paste_all(masks, boxes):
    """The CPU branch of mmdet 2.11 `get_seg_masks` after label selection (chunks of one box)."""
    im_mask = torch.zeros(N, H, W, dtype=torch.bool)
    for inds in torch.chunk(torch.arange(N), N):
        chunk, spatial = do_paste_mask_cpu(masks[inds][:, None], boxes[inds], H, W)
        im_mask[(inds,) + spatial] = chunk >= 0.5
    return im_mask


def encode(im_mask):
    """mmdet 2.11 `encode_mask_results`: one RLE per mask from a Fortran-order uint8 copy."""
    arr = im_mask.numpy()
    return [mask_util.encode(np.array(m[:, :, np.newaxis], order="F", dtype="uint8"))[0] for m in arr]


def best_ms(fn, runs):
    fn()
    best = math.inf
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t) * 1000)
    return best


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    torch.set_num_threads(threads)
    masks, boxes = bench_inputs()
    im_mask = paste_all(masks, boxes)
    area = int(im_mask.sum())
    print(f"torch {torch.__version__}, {threads} threads, best of {runs}; {N} masks {M}x{M} into {H}x{W}, "
          f"foreground {area} px")
    paste = best_ms(lambda: paste_all(masks, boxes), runs)
    print(f"paste (mmdet CPU path, dense [N,H,W] bool)   {paste:9.2f} ms")
    rle = best_ms(lambda: encode(im_mask), runs)
    print(f"RLE encode (pycocotools, Fortran copy)       {rle:9.2f} ms")
    print(f"paste + RLE                                  {paste + rle:9.2f} ms")

    x = torch.randn(2, 256, 50, 76)
    g_up, g_sub = torch.randn(2, 256, 100, 152), torch.randn(2, 256, 25, 38)
    print("resample, x [2, 256, 50, 76]")
    ops = [
        ("nearest -> 100x152", lambda t: F.interpolate(t, size=(100, 152), mode="nearest"), g_up),
        (
            "bilinear -> 100x152",
            lambda t: F.interpolate(t, size=(100, 152), mode="bilinear", align_corners=False),
            g_up,
        ),
        ("stride-2 subsample", lambda t: F.max_pool2d(t, 1, stride=2), g_sub),
    ]
    for name, op, g in ops:
        with torch.no_grad():
            fwd = best_ms(lambda: op(x), runs)

        def both():
            xv = x.detach().requires_grad_(True)
            op(xv).backward(g)

        fb = best_ms(both, runs)
        print(f"  {name:<22} forward {fwd:7.2f} ms   backward {fb - fwd:7.2f} ms   (forward+backward {fb:.2f} ms)")


if __name__ == "__main__":
    main()
