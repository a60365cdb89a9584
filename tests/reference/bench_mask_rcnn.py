"""PyTorch side of the Mask R-CNN ConvNeXt-T benchmark (not run in CI).

torchvision's MaskRCNN on torchvision's ConvNeXt-T with an FPN (256 channels, the LastLevelMaxPool
P6, 81 classes), random weights, on one 800x1216 image (inference) or two (a training step with
AdamW and 3 random boxes with masks per image). torchvision's transform keeps 800x1216 as is
(short side 800, long side under 1333). Prints ms/iter, images/s and peak RSS.

    /work/ref/bin/python tests/reference/bench_mask_rcnn.py --mode infer|train [--threads 2] [--iters 3]
"""

import argparse
import resource
import time

import torch
import torchvision
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


def build():
    trunk = torchvision.models.convnext_tiny().features
    backbone = BackboneWithFPN(
        trunk,
        return_layers={"1": "0", "3": "1", "5": "2", "7": "3"},
        in_channels_list=[96, 192, 384, 768],
        out_channels=256,
        extra_blocks=LastLevelMaxPool(),
    )
    return MaskRCNN(backbone, num_classes=81, min_size=800, max_size=1333)


def targets(n, h, w, g):
    out = []
    for _ in range(n):
        xy = torch.rand(3, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 40 + torch.rand(3, 2, generator=g) * 200
        boxes = torch.cat([xy, xy + wh], 1)
        masks = torch.zeros(3, h, w, dtype=torch.uint8)
        for i, b in enumerate(boxes.round().long()):
            masks[i, b[1]:b[3], b[0]:b[2]] = 1
        out.append({"boxes": boxes, "labels": torch.randint(1, 81, (3,), generator=g), "masks": masks})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["infer", "train"], default="infer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    h, w = 800, 1216
    model = build()
    if args.mode == "infer":
        model.eval()
        images = [torch.rand(3, h, w, generator=g)]
        with torch.inference_mode():
            step = lambda: model(images)  # noqa: E731
            n = 1
            times = []
            for i in range(args.warmup + args.iters):
                t0 = time.perf_counter()
                step()
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        images = [torch.rand(3, h, w, generator=g) for _ in range(2)]
        tgts = targets(2, h, w, g)
        n = 2
        times = []
        for i in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            losses = model(images, tgts)
            sum(losses.values()).backward()
            opt.step()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"torch mask_rcnn convnext_tiny {args.mode} batch {n} {h}x{w} threads {args.threads}: "
          f"{med * 1e3:.1f} ms/iter (median of {len(times)}), {n / med:.3f} images/s, peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
