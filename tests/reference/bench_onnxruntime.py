"""ConvNeXt-T inference with ONNX Runtime on the CPU (not run in CI): what a user deploying a
ConvNeXt on CPUs picks, measured beside nextdet and PyTorch by `bench_side_by_side.sh`.

torchvision's `convnext_tiny` (random init, eval) is exported to ONNX (opset 17, dynamic
batch) once into a temporary file, then run by ONNX Runtime's CPU execution provider with
every graph optimisation (`ORT_ENABLE_ALL`), `intra_op_num_threads` = --threads and one
inter-op thread, at 224x224: 3 warm-up iterations, then --iters timed ones.

    /work/ref/bin/python tests/reference/bench_onnxruntime.py [--threads 2] [--batch 1] [--iters 20]
"""

import argparse
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
import torchvision


def export(path):
    model = torchvision.models.convnext_tiny().eval()
    x = torch.randn(1, 3, 224, 224)
    torch.onnx.export(model, x, path, opset_version=17, input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}}, dynamo=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--model", default=os.path.join(tempfile.gettempdir(), "nextdet_convnext_tiny.onnx"),
                    help="the exported model (written when missing)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if not os.path.exists(args.model):
        export(args.model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224), dtype=np.float32)
    for _ in range(args.warmup):
        sess.run(None, {"images": x})
    t0 = time.perf_counter()
    for _ in range(args.iters):
        sess.run(None, {"images": x})
    dt = (time.perf_counter() - t0) / args.iters
    print(f"onnxruntime {ort.__version__} inference batch {args.batch}: {dt * 1e3:8.1f} ms/iter  "
          f"{args.batch / dt:7.2f} images/s")


if __name__ == "__main__":
    main()
