"""Generate fixtures for the ImageNet training augmentation of nextdet-datasets
(datasets/src/{cls_augment,rand_augment,mixup}.rs).

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_cls_augment_fixtures.py

Deterministic (numpy seed 0, torch seed 0). The reference is timm (data/auto_augment.py,
data/transforms.py, data/mixup.py) on Pillow, called as timm's `create_transform(is_training=True)`
calls it for ConvNeXt: RandAugment ops get `fillcolor=img_mean=(124, 116, 104)` and
`resample=BICUBIC`. Randomness cannot be shared with Rust, so every case fixes the random draws
(op argument, crop box, lambda, cutmix centre) and records them next to the result.

Writes tests/fixtures/cls_augment/:

  reference.safetensors
    image.<name>           uint8 [H, W, 3]   input images
    op.<i>                 uint8 [H, W, 3]   result of RandAugment case i (see cases.json)
    jitter.<i>             uint8 [H, W, 3]   result of colour jitter case i
    crop.<i>               uint8 [S, S', 3]  torchvision F.resized_crop(img, top, left, h, w,
                                             (S, S'), BICUBIC) on PIL
    mix.x                  float32 [N,C,H,W] a batch
    mix.<i>.x              float32 [N,C,H,W] the batch after timm Mixup._mix_batch, case i
    mix.<i>.target         float32 [N, K]    timm mixup_target for the case's lam
    smooth.<s>             float32 [N, K]    mixup_target(lam=1, smoothing=s): smoothed one-hot
  cases.json
    ops:    [{key, image, op, arg}] the PIL call of each op case (arg: factor, degrees, bits, ...)
    levels: [{op, magnitude, negate, arg}] timm LEVEL_TO_ARG with the random sign forced
    jitter: [{key, image, order, factors}] torchvision F.adjust_{brightness,contrast,saturation}
            (indices 0, 1, 2) applied in `order` with factors[index]; result in jitter.<i>
    crops:  [{key, image, top, left, height, width, out_w, out_h}]
    rrc_fallback: [{width, height, scale, ratio, top, left, crop_h, crop_w}] timm
            RandomResizedCropAndInterpolation.get_params when all 10 attempts fail
    mix:    [{key, mode, lam_in, cy, cx, lam, box: [yl, yh, xl, xh] or null}] and labels, classes
"""

import json
import os
import random
from unittest import mock

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from safetensors.numpy import save_file
from timm.data import auto_augment as aa
from timm.data import mixup as tm
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision.transforms import InterpolationMode

OUT = os.path.join("tests", "fixtures", "cls_augment")
FILL = (124, 116, 104)  # timm: tuple(min(255, round(255 * x)) for x in IMAGENET_DEFAULT_MEAN)
KW = dict(fillcolor=FILL, resample=Image.BICUBIC)


def make_image(rng, w, h):
    x = np.linspace(0.0, 1.0, w)[None, :]
    y = np.linspace(0.0, 1.0, h)[:, None]
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 40 + 150 * x
    img[..., 1] = 30 + 180 * y
    img[..., 2] = 127 + 90 * np.sin(7 * x + 4 * y)
    img += rng.uniform(-35, 35, size=img.shape)
    img[h // 5 : h // 2, w // 6 : w // 3] = 250
    img[h // 2 : (4 * h) // 5, w // 2 : (3 * w) // 4] = 5
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    tensors = {}
    images = {"a": make_image(rng, 23, 17), "b": make_image(rng, 16, 16)}
    # A low-contrast image so that autocontrast / equalize have work to do.
    images["c"] = (images["a"] // 3 + 60).astype(np.uint8)
    for k, v in images.items():
        tensors[f"image.{k}"] = v

    # --- RandAugment ops at fixed arguments, called through timm's op functions.
    calls = []
    for im in ["a", "b", "c"]:
        calls += [(im, "AutoContrast", None), (im, "Equalize", None), (im, "Invert", None)]
    for im in ["a", "c"]:
        for bits in [1, 2, 3, 4, 8]:
            calls.append((im, "Posterize", bits))
        for th in [0, 26, 128, 179, 256]:
            calls.append((im, "Solarize", th))
        for add in [0, 33, 99, 110]:
            calls.append((im, "SolarizeAdd", add))
        for f in [0.1, 0.19, 0.55, 1.0, 1.45, 1.81, 1.9]:
            for op in ["Color", "Contrast", "Brightness", "Sharpness"]:
                calls.append((im, op, f))
    for im in ["a", "b"]:
        for deg in [27.0, -27.0, 13.5, -4.2, 30.0, 0.0, 90.0, -90.0, 180.0]:
            calls.append((im, "Rotate", deg))
        for s in [0.27, -0.27, 0.03, 0.3]:
            calls.append((im, "ShearX", s))
            calls.append((im, "ShearY", s))
        for p in [0.405, -0.405, 0.1, -0.0333]:
            calls.append((im, "TranslateXRel", p))
            calls.append((im, "TranslateYRel", p))
    ops = []
    for i, (im, name, arg) in enumerate(calls):
        pil = Image.fromarray(images[im])
        fn = aa.NAME_TO_OP[name]
        args = () if arg is None else (arg,)
        out = fn(pil, *args, **dict(KW))
        key = f"op.{i}"
        tensors[key] = np.asarray(out.convert("RGB"), dtype=np.uint8).copy()
        ops.append({"key": key, "image": im, "op": name, "arg": arg})

    # --- torchvision ColorJitter steps on PIL in a fixed order with fixed factors.
    jitter = []
    adjust = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation]
    for i, (im, order, factors) in enumerate([("a", [0, 1, 2], [0.7, 1.3, 0.9]), ("a", [2, 0, 1], [1.38, 0.61, 1.2]),
                                              ("c", [1, 2, 0], [0.6, 1.4, 1.05])]):
        out = Image.fromarray(images[im])
        for k in order:
            out = adjust[k](out, factors[k])
        key = f"jitter.{i}"
        tensors[key] = np.asarray(out, dtype=np.uint8).copy()
        jitter.append({"key": key, "image": im, "order": order, "factors": factors})

    # --- timm's magnitude -> argument mapping, with the random sign forced.
    hparams = {"translate_const": 100, "img_mean": FILL}
    levels = []
    for name in aa._RAND_INCREASING_TRANSFORMS + aa._RAND_TRANSFORMS:
        fn = aa.LEVEL_TO_ARG[name]
        if fn is None:
            continue
        for m in [0.0, 3.3, 5.0, 8.7, 9.0, 9.5, 10.0]:
            for negate in [False, True]:
                # _randomly_negate negates when random.random() > 0.5.
                with mock.patch.object(aa.random, "random", return_value=0.9 if negate else 0.1):
                    (arg,) = fn(m, hparams)
                levels.append({"op": name, "magnitude": m, "negate": negate, "arg": float(arg)})

    # --- RandomResizedCrop: crop box + Pillow bicubic resize, as torchvision's F.resized_crop.
    big = make_image(rng, 61, 47)
    tensors["image.big"] = big
    crops = []
    boxes = [(0, 0, 47, 61, 24, 24), (5, 9, 20, 33, 24, 24), (30, 40, 17, 21, 32, 32),
             (10, 2, 3, 4, 16, 16), (0, 0, 47, 61, 61, 47), (12, 7, 35, 26, 20, 28)]
    for i, (top, left, h, w, ow, oh) in enumerate(boxes):
        out = F.resized_crop(Image.fromarray(big), top, left, h, w, [oh, ow], InterpolationMode.BICUBIC)
        key = f"crop.{i}"
        tensors[key] = np.asarray(out, dtype=np.uint8).copy()
        crops.append({"key": key, "image": "big", "top": top, "left": left, "height": h, "width": w,
                      "out_w": ow, "out_h": oh})
    rrc_fallback = []
    for (w, h, ratio) in [(100, 20, (3 / 4, 4 / 3)), (20, 100, (3 / 4, 4 / 3)), (30, 29, (3 / 4, 4 / 3)),
                          (77, 50, (0.5, 1.0)), (41, 97, (1.0, 2.0))]:
        # An area fraction above 1 makes every attempt fail, leaving the central fallback.
        i, j, ch, cw = RandomResizedCropAndInterpolation.get_params(Image.new("RGB", (w, h)), (2.0, 3.0), ratio)
        rrc_fallback.append({"width": w, "height": h, "scale": [2.0, 3.0], "ratio": list(ratio), "top": i,
                             "left": j, "crop_h": ch, "crop_w": cw})

    # --- Mixup / CutMix in 'batch' mode with fixed lambda and cutmix centre.
    torch.manual_seed(0)
    n, c, h, w, k = 4, 3, 9, 11, 7
    x0 = torch.randn(n, c, h, w)
    tensors["mix.x"] = x0.numpy().copy()
    labels = [3, 0, 6, 3]
    target = torch.tensor(labels)
    mixes = []
    cases = [("mixup", 0.37, None, None), ("mixup", 0.9132, None, None),
             ("cutmix", 0.6, 4, 5), ("cutmix", 0.25, 0, 10), ("cutmix", 0.05, 8, 0), ("cutmix", 0.81, 3, 2)]
    for i, (mode, lam_in, cy, cx) in enumerate(cases):
        x = x0.clone()
        box = None
        if mode == "mixup":
            lam = lam_in
            x_flipped = x.flip(0).mul_(1.0 - lam)
            x.mul_(lam).add_(x_flipped)
        else:
            draws = iter([cy, cx])
            with mock.patch.object(tm.np.random, "randint", side_effect=lambda *a, **kw: next(draws)):
                (yl, yh, xl, xh), lam = tm.cutmix_bbox_and_lam(x.shape, lam_in, correct_lam=True)
            box = [int(yl), int(yh), int(xl), int(xh)]
            x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
        t = tm.mixup_target(target, k, lam, 0.1)
        key = f"mix.{i}"
        tensors[key + ".x"] = x.numpy().copy()
        tensors[key + ".target"] = t.numpy().astype(np.float32).copy()
        mixes.append({"key": key, "mode": mode, "lam_in": lam_in, "cy": cy, "cx": cx, "lam": float(lam),
                      "box": box})
    for s in [0.0, 0.1, 0.3]:
        tensors[f"smooth.{s}"] = tm.mixup_target(target, k, 1.0, s).numpy().astype(np.float32).copy()

    save_file(tensors, os.path.join(OUT, "reference.safetensors"))
    meta = {"ops": ops, "levels": levels, "crops": crops, "rrc_fallback": rrc_fallback, "mix": mixes, "jitter": jitter,
            "labels": labels, "classes": k, "fill": list(FILL)}
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(meta, f, indent=0)


if __name__ == "__main__":
    main()
