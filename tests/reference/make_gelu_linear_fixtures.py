"""Generate forward/backward fixtures for the fused GELU + linear (nextdet_ops::gelu_linear).

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_gelu_linear_fixtures.py

Writes tests/fixtures/gelu_linear/gelu_linear.safetensors (float32; deterministic, seed 0). For
each case NAME (shapes below), y = F.linear(F.gelu(h + b), w) (exact erf GELU, no linear bias)
is evaluated in float64 and stored as float32:

    NAME.h [..., K], NAME.b [K], NAME.w [N, K], NAME.g (random output gradient, y's shape),
    NAME.y, NAME.dh / NAME.db / NAME.dw = autograd of sum(y * g).

Cases: a ConvNeXt-like channels-last 4-D input, odd and prime sizes (37 rows), a single row,
more outputs than inputs. The Rust test runs every case with the default chunking and with
small chunks (one row; three rows, leaving a short last chunk; a size that is not a whole
number of rows). h spreads over roughly [-6, 6] so both GELU tails are exercised.
"""

import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.dont_write_bytecode = True

OUT = os.path.join("tests", "fixtures", "gelu_linear")

# name, leading dims of h, K (input features), N (output features)
CASES = [
    ("nhwc", (2, 3, 4), 16, 4),
    ("odd", (13,), 9, 5),
    ("single_row", (1,), 7, 3),
    ("prime37", (37,), 24, 11),
    ("wide_out", (5, 3), 6, 17),
]


def main():
    torch.manual_seed(0)
    out = {}
    for name, lead, k, n in CASES:
        h = (torch.randn(*lead, k, dtype=torch.float32) * 2.0).double().requires_grad_()
        b = torch.randn(k, dtype=torch.float32).double().requires_grad_()
        w = (torch.randn(n, k, dtype=torch.float32) / k**0.5).double().requires_grad_()
        y = F.linear(F.gelu(h + b), w)
        g = torch.randn(y.shape, dtype=torch.float32).double()
        (y * g).sum().backward()
        for key, t in [("h", h), ("b", b), ("w", w), ("g", g), ("y", y), ("dh", h.grad), ("db", b.grad), ("dw", w.grad)]:
            out[f"{name}.{key}"] = t.detach().float().contiguous()
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "gelu_linear.safetensors")
    save_file(out, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(CASES)} cases)")


if __name__ == "__main__":
    main()
