"""Generate image-decoding, resize and classification-eval-transform fixtures for nextdet-datasets.

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_dataset_fixtures.py

Deterministic (numpy seed 0). Writes tests/fixtures/datasets/:

  small_37x23.png, small_29x41.jpg (quality 90), medium_300x200.jpg (quality 90)
      Test images: gradients + uniform noise + saturated rectangles (sharp edges make the
      bicubic overshoot hit the 0/255 clamps).

  reference.safetensors, keys separated by '.':
    decoded.<image>                       uint8 [H, W, 3]  PIL's decode (Image.open().convert("RGB"))
    resize.<image>.<filter>.<W>x<H>       uint8 [H, W, 3]  PIL Image.resize((W, H), filter) of the
                                          decoded image, which is what torchvision's
                                          Resize(..., interpolation=<filter>) does on PIL images
    eval.<image>.<size>.<crop_pct>.<interp>
                                          float32 [3, S, S]  the ConvNeXt/timm eval transform on the
                                          decoded image (see eval_transform below)
    eval_strided.<image>.<size>.<crop_pct>.<interp>.s<k>
                                          float32 [3, ceil(S/k), ceil(S/k)]  out[:, ::k, ::k] of the
                                          same transform, for the large sizes (224, 384) so that the
                                          fixture stays small
    eval_sums.<image>.<size>.<crop_pct>.<interp>
                                          float64 [2]  sum and sum of squares of the whole output

<image> is the file name with '.' replaced by '_'. <filter>/<interp> is nearest|bilinear|bicubic.
"""

import os

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.numpy import save_file
from torchvision import transforms
from torchvision.transforms import InterpolationMode

OUT = os.path.join("tests", "fixtures", "datasets")

PIL_FILTERS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
}
TV_MODES = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def make_image(rng, w, h):
    x = np.linspace(0.0, 1.0, w)[None, :]
    y = np.linspace(0.0, 1.0, h)[:, None]
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 255 * x
    img[..., 1] = 255 * y
    img[..., 2] = 127 + 100 * np.sin(9 * x + 5 * y)
    img += rng.uniform(-40, 40, size=img.shape)
    # Saturated blocks: sharp 0/255 edges.
    img[h // 5 : h // 2, w // 6 : w // 3] = 255
    img[h // 2 : (4 * h) // 5, w // 2 : (3 * w) // 4] = 0
    img[h // 3 : (2 * h) // 3, (3 * w) // 4 :, 1] = 255
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def eval_transform(input_size, crop_pct, interp):
    """ConvNeXt datasets.build_transform(is_train=False) with the resize always on."""
    mode = TV_MODES[interp]
    t = []
    if input_size >= 384:
        t.append(transforms.Resize((input_size, input_size), interpolation=mode))
    else:
        size = int(input_size / crop_pct)
        t.append(transforms.Resize(size, interpolation=mode))
        t.append(transforms.CenterCrop(input_size))
    t.append(transforms.ToTensor())
    t.append(transforms.Normalize(MEAN, STD))
    return transforms.Compose(t)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    arr = make_image(rng, 37, 23)
    Image.fromarray(arr).save(os.path.join(OUT, "small_37x23.png"))
    arr = make_image(rng, 29, 41)
    Image.fromarray(arr).save(os.path.join(OUT, "small_29x41.jpg"), quality=90)
    arr = make_image(rng, 300, 200)
    Image.fromarray(arr).save(os.path.join(OUT, "medium_300x200.jpg"), quality=90)

    # Pillow 13 runs the vertical pass first when in_h - out_h > 0 and
    # in_h - out_h > 2 * (in_w - out_w): 37x23->37x9, 37x23->33x14, 29x41->29x10, 29x41->20x12,
    # 300x200->320x10, 300x200->250x30 take that path; 37x23->33x15 is the tie (horizontal first).
    resize_cases = {
        "small_37x23.png": {
            "bicubic": [
                (17, 11), (64, 40), (37, 50), (80, 23), (5, 3), (1, 1), (100, 7), (2, 61), (33, 15),
                (33, 14),
            ],
            "bilinear": [(17, 11), (64, 40), (37, 9)],
            "nearest": [(17, 11), (64, 40), (11, 29), (7, 3)],
        },
        "small_29x41.jpg": {
            "bicubic": [(12, 17), (57, 81), (29, 10), (20, 12)],
            "bilinear": [(12, 17)],
            "nearest": [(57, 81)],
        },
        "medium_300x200.jpg": {
            "bicubic": [(97, 61), (150, 100), (7, 5), (320, 10), (13, 230), (41, 256), (250, 30)],
            "bilinear": [(97, 61), (320, 10), (250, 30)],
            "nearest": [(97, 61), (13, 230)],
        },
    }
    # (input_size, crop_pct, interp, stride or None for the full output)
    eval_cases = {
        "small_37x23.png": [
            (32, 0.875, "bicubic", None),
            (20, 0.875, "bicubic", None),
            (24, 1.0, "bicubic", None),
            (16, 0.95, "bicubic", None),
            (32, 0.875, "bilinear", None),
        ],
        "small_29x41.jpg": [
            (32, 0.875, "bicubic", None),
            (24, 0.875, "bicubic", None),
        ],
        "medium_300x200.jpg": [
            (48, 0.875, "bicubic", None),
            (224, 0.875, "bicubic", 2),
            (384, 0.875, "bicubic", 4),
        ],
    }

    tensors = {}
    for name in resize_cases:
        key = name.replace(".", "_")
        pil = Image.open(os.path.join(OUT, name)).convert("RGB")
        tensors[f"decoded.{key}"] = np.ascontiguousarray(np.asarray(pil, dtype=np.uint8))
        for filt, sizes in resize_cases[name].items():
            for w, h in sizes:
                # torchvision.transforms.Resize on a PIL image with an explicit (h, w).
                tv = transforms.Resize((h, w), interpolation=TV_MODES[filt])(pil)
                direct = pil.resize((w, h), PIL_FILTERS[filt])
                a = np.asarray(tv, dtype=np.uint8)
                assert np.array_equal(a, np.asarray(direct)), (name, filt, w, h)
                assert a.shape == (h, w, 3)
                tensors[f"resize.{key}.{filt}.{w}x{h}"] = np.ascontiguousarray(a)
        for size, crop, interp, stride in eval_cases[name]:
            out = eval_transform(size, crop, interp)(pil).to(torch.float32).numpy()
            assert out.shape == (3, size, size)
            case = f"{key}.{size}.{crop!r}.{interp}"
            if stride is None:
                tensors[f"eval.{case}"] = np.ascontiguousarray(out)
            else:
                tensors[f"eval_strided.{case}.s{stride}"] = np.ascontiguousarray(
                    out[:, ::stride, ::stride]
                )
                o64 = out.astype(np.float64)
                tensors[f"eval_sums.{case}"] = np.array([o64.sum(), (o64 * o64).sum()])
            if size < 384:
                short = int(size / crop)
                w, h = pil.size
                diff = int(short * max(w, h) / min(w, h)) - size
                print(f"  eval {case}: resize short side to {short}, long-side crop margin {diff}")

    path = os.path.join(OUT, "reference.safetensors")
    save_file(tensors, path)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"Pillow {Image.__version__}")
    print(f"{path}: {len(tensors)} tensors; fixtures folder {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
