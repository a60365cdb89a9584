"""CPU throughput of timm's Swin-T (PyTorch eager), the side-by-side reference for nextdet's Swin
(not run in CI).

timm.create_model("swin_tiny_patch4_window7_224") with random weights, eval mode,
torch.inference_mode, 224x224: inference images/s and ms/iter (--warmup iterations, then --iters
timed), or with --train a training step (forward, cross entropy on random labels, backward,
AdamW; drop path 0.2 as the ImageNet recipe), and the peak RSS.

    /work/ref/bin/python tests/reference/bench_swin_tiny.py --threads 2 --batch 1 --iters 20
    /work/ref/bin/python tests/reference/bench_swin_tiny.py --threads 2 --batch 8 --train --iters 3

tests/reference/bench_swin_side_by_side.sh alternates it with `nextdet benchmark`.
"""

import argparse
import resource
import time

import timm
import torch
import torch.nn.functional as F


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--train", action="store_true", help="time a training step instead of inference")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 224, 224)
    if args.train:
        model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, drop_path_rate=0.2).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        target = torch.randint(0, 1000, (args.batch,))

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), target).backward()
            opt.step()
    else:
        model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()

        def step():
            with torch.inference_mode():
                model(x)

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    dt = (time.perf_counter() - t0) / args.iters
    what = "train" if args.train else "inference"
    print(f"{what} batch {args.batch}: {dt * 1e3:8.1f} ms/iter  {args.batch / dt:7.2f} images/s"
          f"  (peak RSS {peak_rss_mib():.0f} MiB, torch {torch.__version__}, timm {timm.__version__},"
          f" threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
