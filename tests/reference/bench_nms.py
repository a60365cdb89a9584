"""Time torchvision.ops.nms on CPU at 1k, 10k and 100k boxes, for comparison with
`cargo run --release -p nextdet-ops --example bench_nms` (same boxes, same thresholds).

    /work/ref/bin/python tests/reference/bench_nms.py [THREADS]

Boxes: centers uniform in an 800x1216 image, width and height uniform in [10, 300], scores
uniform in [0, 1), all drawn from the 32-bit LCG that the Rust example uses, so both sides see
the same inputs. Reports the best of several runs per size and threshold, in milliseconds, and
the number of kept boxes (which must match the Rust side). Also times batched_nms with 80 ids
(ids = i % 80) and box_iou of 1000 x 20000 boxes.
"""

import sys
import time

import torch
import torchvision.ops as tvo


def lcg_uniform(n, seed):
    """n floats in [0, 1) from x <- 1664525 x + 1013904223 (mod 2^32), top 24 bits."""
    out, x = [], seed & 0xFFFFFFFF
    for _ in range(n):
        x = (1664525 * x + 1013904223) & 0xFFFFFFFF
        out.append((x >> 8) / 16777216.0)
    return torch.tensor(out, dtype=torch.float32)


def make_boxes(n, seed=12345):
    u = lcg_uniform(5 * n, seed).view(n, 5)
    cx, cy = u[:, 0] * 1216, u[:, 1] * 800
    w, h = 10 + u[:, 2] * 290, 10 + u[:, 3] * 290
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    return boxes, u[:, 4].contiguous()


def best_ms(fn, runs):
    fn()
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t) * 1000)
    return best


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for n, runs in ((1000, 50), (10000, 10), (100000, 3)):
        boxes, scores = make_boxes(n)
        for thr in (0.5, 0.7):
            kept = len(tvo.nms(boxes, scores, thr))
            ms = best_ms(lambda: tvo.nms(boxes, scores, thr), runs)
            print(f"nms n={n:>6} thr={thr}: {ms:10.3f} ms  kept {kept}")
        ids = torch.arange(n) % 80
        kept = len(tvo.batched_nms(boxes, scores, ids, 0.5))
        ms = best_ms(lambda: tvo.batched_nms(boxes, scores, ids, 0.5), runs)
        print(f"batched_nms n={n:>6} thr=0.5 (80 ids): {ms:10.3f} ms  kept {kept}")
    a, b = make_boxes(1000)[0], make_boxes(20000)[0]
    ms = best_ms(lambda: tvo.box_iou(a, b), 10)
    print(f"box_iou 1000 x 20000: {ms:10.3f} ms")


if __name__ == "__main__":
    main()
