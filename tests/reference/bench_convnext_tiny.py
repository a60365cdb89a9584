"""CPU throughput baseline for PyTorch ConvNeXt-T (not run in CI).

Measures, with torchvision.models.convnext_tiny (random init, eval, torch.inference_mode, 224x224):
  * inference images/s and ms/iter at batch 1 and batch 8 (3 warm-up iterations, then --iters timed),
  * the 7x7 depthwise conv alone (F.conv2d(x, w, padding=3, groups=C)) for the four stage shapes at batch 8,
  * a training step (batch 8, forward + cross-entropy + backward + AdamW step) in images/s,
  * peak RSS (resource.getrusage(RUSAGE_SELF).ru_maxrss).

Rerun from the repository root:

    /work/ref/bin/python tests/reference/bench_convnext_tiny.py [--threads 2] [--iters 10] [--train-iters 5]
"""

import argparse
import resource
import time

import torch
import torch.nn.functional as F
import torchvision


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def timeit(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--train-iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None,
                    help="time only inference at this batch size (for bench_side_by_side.sh)")
    ap.add_argument("--train-only", action="store_true",
                    help="time only the training step (its peak RSS then is the training step's)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}")

    if not args.train_only:
        model = torchvision.models.convnext_tiny().eval()
        with torch.inference_mode():
            for batch in (args.batch,) if args.batch else (1, 8):
                x = torch.randn(batch, 3, 224, 224)
                dt = timeit(lambda: model(x), args.warmup, args.iters)
                print(f"inference batch {batch}: {dt * 1e3:8.1f} ms/iter  {batch / dt:7.2f} images/s"
                      f"  (peak RSS {peak_rss_mib():.0f} MiB)")
            if args.batch:
                return

            for c, hw in ((96, 56), (192, 28), (384, 14), (768, 7)):
                x = torch.randn(8, c, hw, hw)
                w = torch.randn(c, 1, 7, 7)
                dt = timeit(lambda: F.conv2d(x, w, padding=3, groups=c), args.warmup, args.iters)
                print(f"dwconv7x7 x[8,{c},{hw},{hw}]: {dt * 1e3:8.2f} ms")

    model = torchvision.models.convnext_tiny().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    x = torch.randn(8, 3, 224, 224)
    target = torch.randint(0, 1000, (8,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()

    dt = timeit(step, 1, args.train_iters)
    print(f"train step batch 8 (fwd+bwd+AdamW): {dt * 1e3:8.1f} ms/iter  {8 / dt:7.2f} images/s")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
