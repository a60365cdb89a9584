"""Time torch F.conv2d on the dense convolutions of a ConvNeXt-T Mask R-CNN at 800x1216, for
comparison with `cargo run --release -p nextdet-ops --example bench_conv2d` (same rows).

    /work/ref/bin/python tests/reference/bench_conv2d.py [--threads 2] [--iters 3] [--row NAME]

Each row is one convolution with a bias, timed forward only (under no_grad) and forward plus
backward (gradients of input, weight and bias for the output gradient of sum(y)).
"""

import argparse
import math
import sys
import time

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True

# name, n, cin, h, w, cout, k, stride, pad -- the same rows as the Rust example.
CASES = [
    ("fpn_lateral_s4 1x1 96->256", 1, 96, 200, 304, 256, 1, 1, 0),
    ("fpn_lateral_s32 1x1 768->256", 1, 768, 25, 38, 256, 1, 1, 0),
    ("fpn_out_s4 3x3", 1, 256, 200, 304, 256, 3, 1, 1),
    ("fpn_out_s8 3x3", 1, 256, 100, 152, 256, 3, 1, 1),
    ("fpn_out_s16 3x3", 1, 256, 50, 76, 256, 3, 1, 1),
    ("fpn_out_s32 3x3", 1, 256, 25, 38, 256, 3, 1, 1),
    ("rpn_reg_s4 1x1 256->12", 1, 256, 200, 304, 12, 1, 1, 0),
    ("mask_test R100 3x3", 100, 256, 14, 14, 256, 3, 1, 1),
    ("mask_train R128 3x3", 128, 256, 14, 14, 256, 3, 1, 1),
    ("box_train R512 3x3", 512, 256, 7, 7, 256, 3, 1, 1),
    ("box_test R1000 3x3", 1000, 256, 7, 7, 256, 3, 1, 1),
    ("p6_s2 3x3 stride2", 1, 256, 25, 38, 256, 3, 2, 1),
]


def time_ms(iters, fn):
    """Wall and CPU (all threads) ms per call: best of three means over `iters` calls, after
    one warm-up call, formatted as the Rust example prints them."""
    fn()
    best, best_cpu = math.inf, math.inf
    for _ in range(3):
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(iters):
            fn()
        best = min(best, (time.perf_counter() - start) * 1000.0 / iters)
        best_cpu = min(best_cpu, (time.process_time() - cpu) * 1000.0 / iters)
    return f"{best:.1f} [{best_cpu:.0f}]"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--row", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads: {torch.get_num_threads()}, iters: {args.iters}, torch {torch.__version__}")
    print("wall ms per call, CPU ms (all threads) in brackets")
    print(f"{'row':<30} {'torch fwd':>18} {'torch f+b':>18}")
    for name, n, cin, h, w, cout, k, stride, pad in CASES:
        if args.row not in name:
            continue
        x = torch.randn(n, cin, h, w, requires_grad=True)
        wt = (torch.randn(cout, cin, k, k) * 0.05).requires_grad_()
        b = torch.randn(cout, requires_grad=True)

        def fwd():
            with torch.no_grad():
                F.conv2d(x, wt, b, stride, pad)

        def fwd_bwd():
            x.grad = wt.grad = b.grad = None
            F.conv2d(x, wt, b, stride, pad).sum().backward()

        print(f"{name:<30} {time_ms(args.iters, fwd):>18} {time_ms(args.iters, fwd_bwd):>18}", flush=True)


if __name__ == "__main__":
    main()
