"""Generate detection-transform fixtures for nextdet-datasets (mmdetection 2.11 / mmcv semantics).

Rerun from the repository root with the reference venv (needs opencv-python-headless 4.x, the
OpenCV generation mmdetection 2.11 ran with; fixtures were made with 4.14):

    /work/ref/bin/python tests/reference/make_transform_fixtures.py

Deterministic (numpy seed 0). mmcv and mmdet are not installed: the few lines of them that matter
are re-implemented below, quoting the behaviour of mmcv/image/geometric.py and
mmdet/datasets/pipelines/transforms.py (Resize, RandomFlip, RandomCrop._crop_data, Normalize,
Pad) and mmdet/core/mask/structures.py (BitmapMasks.rescale/resize/flip/crop/pad). The image
resizes themselves are cv2's. Writes tests/fixtures/transforms/:

  rescale_size.json   [{"size": [w, h], "scale": [a, b], "out": [new_w, new_h], "factor": f}]
                      mmcv.rescale_size((w, h), (a, b), return_scale=True)
  resize.safetensors  in.<name>                 uint8 [H, W, 3] random test images
                      linear.<name>.<W>x<H>     uint8 [H, W, 3] cv2.resize(img, (W, H), INTER_LINEAR)
                      mask_in.<name>            uint8 [H, W]    a 0/1 mask
                      nearest.<name>.<W>x<H>    uint8 [H, W]    cv2.resize(mask, (W, H), INTER_NEAREST)
                      big.linear.<W>x<H>.s<k>   uint8           out[::k, ::k] of cv2.resize(big, (W, H),
                                                INTER_LINEAR) for the COCO-sized formula image
                                                big[y, x, c] = ((7x + 13y + 101c) ^ ((x*y) >> 3)) & 255,
                                                640x480 (the Rust test rebuilds it)
                      big.nearest.<W>x<H>.s<k>  uint8           the same for the mask big[..., 0] > 127
  pipeline.safetensors
                      A sample (image, 3 boxes with masks, 1 ignore box) through a fixed chain:
                      src.*       the input
                      resized.*   Resize(img_scale=(100, 60), keep_ratio=True)
                      warped.*    Resize(img_scale=(70, 50), keep_ratio=False) of the input
                      flipped.*   RandomFlip applied (horizontal) to resized
                      cropped.*   RandomCrop._crop_data on flipped with offset (x=9, y=5),
                                  size (h=40, w=50)
                      batch       float32 [1, 3, 64, 64]: Normalize(mean, std, to_rgb=True) of
                                  cropped then Pad(size_divisor=32) with 0 (mmdet's order), CHW
                      each stage: .img uint8 [H,W,3], .boxes float32 [n,4], .labels int64 [n],
                      .masks uint8 [n,H,W], .ignore float32 [m,4], .scale_factor float32 [2]
"""

import json
import os

import cv2
import numpy as np
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "transforms")
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


# --- mmcv.image.geometric, re-implemented -------------------------------------------------------
def scale_size(size, scale):
    w, h = size
    return int(w * float(scale) + 0.5), int(h * float(scale) + 0.5)


def rescale_size(old_size, scale):
    w, h = old_size
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return scale_size((w, h), factor), factor


def imresize(img, size, interpolation):
    return cv2.resize(img, size, interpolation=interpolation)


# --- mmdet pipelines, re-implemented --------------------------------------------------------------
def resize(s, scale, keep_ratio):
    h, w = s["img"].shape[:2]
    if keep_ratio:
        (nw, nh), _ = rescale_size((w, h), scale)
    else:
        nw, nh = scale
    img = imresize(s["img"], (nw, nh), cv2.INTER_LINEAR)
    sf = np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    out = dict(s)
    out["img"] = img
    for key in ("boxes", "ignore"):
        b = s[key] * sf
        b[:, 0::2] = np.clip(b[:, 0::2], 0, nw)
        b[:, 1::2] = np.clip(b[:, 1::2], 0, nh)
        out[key] = b
    out["masks"] = np.stack([imresize(m, (nw, nh), cv2.INTER_NEAREST) for m in s["masks"]])
    out["scale_factor"] = sf[:2].copy()
    return out


def flip(s):
    w = s["img"].shape[1]
    out = dict(s)
    out["img"] = np.ascontiguousarray(s["img"][:, ::-1])
    for key in ("boxes", "ignore"):
        b = s[key].copy()
        b[:, 0] = w - s[key][:, 2]
        b[:, 2] = w - s[key][:, 0]
        out[key] = b
    out["masks"] = np.ascontiguousarray(s["masks"][:, :, ::-1])
    return out


def crop(s, off_x, off_y, ch, cw):
    out = dict(s)
    img = s["img"][off_y:off_y + ch, off_x:off_x + cw]
    out["img"] = np.ascontiguousarray(img)
    h, w = img.shape[:2]
    offset = np.array([off_x, off_y, off_x, off_y], np.float32)
    for key in ("boxes", "ignore"):
        b = s[key] - offset
        b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
        b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
        valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        out[key] = b[valid]
        if key == "boxes":
            out["labels"] = s["labels"][valid]
            out["masks"] = np.ascontiguousarray(s["masks"][valid][:, off_y:off_y + h, off_x:off_x + w])
    return out


def normalize_pad(img, divisor):
    x = img.astype(np.float32)  # already RGB; mmdet's to_rgb turns its BGR load into this
    x = (x - MEAN.astype(np.float64)).astype(np.float32) * (1.0 / STD.astype(np.float64))
    x = x.astype(np.float32)
    h, w = x.shape[:2]
    ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    pad = np.zeros((ph, pw, 3), np.float32)
    pad[:h, :w] = x
    return pad.transpose(2, 0, 1)[None].copy()


def test_image(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), (xx + yy) * 127 / max(w + h, 1)], -1)
    img = base + rng.uniform(-40, 40, (h, w, 3))
    img[h // 3:h // 2, w // 4:w // 2] = 255
    img[h // 2:, w // 2:w // 2 + 3] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def main():
    rng = np.random.default_rng(0)
    os.makedirs(OUT, exist_ok=True)

    # 1. rescale_size table: COCO-like sizes against the paper's scales, plus odd corner cases.
    rows = []
    sizes = [(640, 480), (480, 640), (500, 375), (427, 640), (640, 427), (333, 500), (1, 1), (7, 1333),
             (2000, 100), (612, 612), (640, 360), (59, 83)]
    scales = [(1333, 800), (800, 1333), (1333, 480), (1333, 512), (1333, 736), (1333, 400), (1333, 600),
              (600, 400), (3, 2)]
    for size in sizes:
        for scale in scales:
            (nw, nh), factor = rescale_size(size, scale)
            rows.append({"size": list(size), "scale": list(scale), "out": [nw, nh], "factor": factor})
    for _ in range(60):
        size = (int(rng.integers(1, 2000)), int(rng.integers(1, 2000)))
        scale = (int(rng.integers(1, 1500)), int(rng.integers(1, 1500)))
        (nw, nh), factor = rescale_size(size, scale)
        rows.append({"size": list(size), "scale": list(scale), "out": [nw, nh], "factor": factor})
    with open(os.path.join(OUT, "rescale_size.json"), "w") as f:
        json.dump(rows, f)

    # 2. cv2 INTER_LINEAR on uint8 RGB and INTER_NEAREST on 0/1 masks.
    tensors = {}
    for name, (h, w), outs in [
        ("a", (23, 37), [(37, 23), (55, 34), (100, 61), (20, 13), (18, 11), (37, 40), (60, 23), (1, 1), (5, 200)]),
        ("b", (48, 64), [(85, 64), (107, 80), (43, 32), (32, 24), (64, 17), (97, 73), (63, 47)]),
        ("c", (1, 9), [(17, 3), (4, 1)]),
    ]:
        img = test_image(rng, h, w)
        tensors[f"in.{name}"] = img
        mask = np.zeros((h, w), np.uint8)
        mask[h // 5:h * 3 // 4, w // 3:w - 1] = 1
        mask[(np.arange(h)[:, None] + np.arange(w)[None]) % 5 == 0] = 1
        tensors[f"mask_in.{name}"] = mask
        for ow, oh in outs:
            tensors[f"linear.{name}.{ow}x{oh}"] = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_LINEAR)
            tensors[f"nearest.{name}.{ow}x{oh}"] = cv2.resize(mask, (ow, oh), interpolation=cv2.INTER_NEAREST)
    yy, xx, cc = np.mgrid[0:480, 0:640, 0:3]
    big = (((7 * xx + 13 * yy + 101 * cc) ^ ((xx * yy) >> 3)) & 255).astype(np.uint8)
    big_mask = (big[..., 0] > 127).astype(np.uint8)
    for ow, oh, k in [(1067, 800, 9), (853, 640, 7), (400, 300, 5)]:
        tensors[f"big.linear.{ow}x{oh}.s{k}"] = np.ascontiguousarray(
            cv2.resize(big, (ow, oh), interpolation=cv2.INTER_LINEAR)[::k, ::k])
        tensors[f"big.nearest.{ow}x{oh}.s{k}"] = np.ascontiguousarray(
            cv2.resize(big_mask, (ow, oh), interpolation=cv2.INTER_NEAREST)[::k, ::k])
    save_file(tensors, os.path.join(OUT, "resize.safetensors"))

    # 3. A fixed transform chain on one sample. Masks are rectangles and an ellipse; boxes are
    # their tight boxes (x2 = last column + 1) with one box overhanging the crop.
    h, w = 45, 61
    img = test_image(rng, h, w)
    masks = np.zeros((3, h, w), np.uint8)
    masks[0, 4:20, 3:30] = 1
    yy, xx = np.mgrid[0:h, 0:w]
    masks[1][((xx - 40) / 12.0) ** 2 + ((yy - 28) / 9.0) ** 2 <= 1] = 1
    masks[2, 38:45, 55:61] = 1
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    src = {
        "img": img,
        "boxes": np.array(boxes, np.float32),
        "labels": np.array([3, 0, 7], np.int64),
        "masks": masks,
        "ignore": np.array([[10.5, 30.25, 20.0, 44.0]], np.float32),
        "scale_factor": np.array([1, 1], np.float32),
    }
    resized = resize(src, (100, 60), True)
    warped = resize(src, (70, 50), False)
    flipped = flip(resized)
    cropped = crop(flipped, 9, 5, 40, 50)
    out = {}
    for stage, s in [("src", src), ("resized", resized), ("warped", warped), ("flipped", flipped), ("cropped", cropped)]:
        for key in ("img", "boxes", "labels", "masks", "ignore", "scale_factor"):
            out[f"{stage}.{key}"] = np.ascontiguousarray(s[key])
    out["batch"] = normalize_pad(cropped["img"], 32)
    save_file(out, os.path.join(OUT, "pipeline.safetensors"))
    print("wrote", OUT, len(rows), "rescale rows,", len(tensors), "resize tensors")


if __name__ == "__main__":
    main()
