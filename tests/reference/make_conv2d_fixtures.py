"""Generate forward/backward fixtures for the dense 2-D convolution (nextdet_ops::conv2d).

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_conv2d_fixtures.py

Writes tests/fixtures/conv2d/conv2d.safetensors (float32; deterministic, seed 0). For each case
NAME (shapes below), torch.nn.functional.conv2d(x, w, b, stride, padding) is evaluated in
float64 and stored as float32:

    NAME.x, NAME.w, NAME.b (absent for no-bias cases), NAME.g (random output gradient),
    NAME.y = conv2d(...), NAME.dx / NAME.dw / NAME.db = autograd of sum(y * g).

The stride and padding of a case are stored as NAME.meta = [stride, padding] (float).
Cases cover kernels 1, 3 and 5, stride 1 and 2, padding 0/1/2, tiny spatial sizes (1x1, 2x3),
many small images (chunks of several images) and one larger image (chunks of row bands).
"""

import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.dont_write_bytecode = True

OUT = os.path.join("tests", "fixtures", "conv2d")

# name, n, cin, h, w, cout, k, stride, padding, bias
CASES = [
    ("k3s1p1", 2, 5, 6, 7, 4, 3, 1, 1, True),
    ("k3s2p1", 2, 3, 7, 9, 4, 3, 2, 1, True),
    ("k3s1p0", 2, 3, 6, 5, 4, 3, 1, 0, True),
    ("k1s1p0", 2, 6, 5, 4, 3, 1, 1, 0, True),
    ("k1s2p0", 2, 6, 5, 4, 3, 1, 2, 0, True),
    ("k5s1p2", 1, 3, 6, 8, 2, 5, 1, 2, True),
    ("k3s1p1_nobias", 2, 4, 5, 5, 3, 3, 1, 1, False),
    ("tiny1x1", 3, 4, 1, 1, 5, 3, 1, 1, True),
    ("tiny2x3", 2, 4, 2, 3, 5, 3, 1, 1, True),
    ("tiny2x3_s2", 2, 4, 2, 3, 5, 3, 2, 1, True),
    ("many7x7", 20, 4, 7, 7, 5, 3, 1, 1, True),
    ("band20x15", 1, 4, 20, 15, 5, 3, 1, 1, True),
    ("band1x1_20x15", 2, 8, 20, 15, 5, 1, 1, 0, True),
    ("band20x15_s2", 2, 4, 20, 15, 5, 3, 2, 1, True),
]


def main():
    torch.manual_seed(0)
    out = {}
    for name, n, cin, h, w, cout, k, stride, pad, bias in CASES:
        x = torch.randn(n, cin, h, w, dtype=torch.float32).double().requires_grad_()
        wt = (torch.randn(cout, cin, k, k) / (cin * k * k) ** 0.5).double().requires_grad_()
        b = torch.randn(cout).double().requires_grad_() if bias else None
        y = F.conv2d(x, wt, b, stride, pad)
        g = torch.randn(y.shape, dtype=torch.float64)
        (y * g).sum().backward()
        out[f"{name}.x"] = x
        out[f"{name}.w"] = wt
        out[f"{name}.g"] = g
        out[f"{name}.y"] = y
        out[f"{name}.dx"] = x.grad
        out[f"{name}.dw"] = wt.grad
        out[f"{name}.meta"] = torch.tensor([stride, pad], dtype=torch.float64)
        if bias:
            out[f"{name}.b"] = b
            out[f"{name}.db"] = b.grad
    os.makedirs(OUT, exist_ok=True)
    tensors = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in out.items()}
    save_file(tensors, os.path.join(OUT, "conv2d.safetensors"))
    print(f"wrote {len(tensors)} tensors to {OUT}/conv2d.safetensors")


if __name__ == "__main__":
    main()
