"""Generate forward/backward fixtures for single ops (depthwise conv, LayerNorms).

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_op_fixtures.py

Writes tests/fixtures/ops/ (safetensors, float32, contiguous; deterministic, seed 0):

  dwconv_k7.safetensors, dwconv_k3.safetensors
      x [2,5,9,11], weight [5,1,k,k], bias [5], gy (like y);
      y = F.conv2d(x, weight, bias, padding=k//2, groups=5); dx, dw, db = grads of (y*gy).sum().
  layernorm_last.safetensors
      x [3,4,6,10] (randn*2+0.5), weight [10], bias [10], gy;
      y = F.layer_norm(x, (10,), weight, bias, eps=1e-6); dx, dw, db.
  layernorm_channels_first.safetensors
      x [2,6,5,7] NCHW, weight [6], bias [6], gy; y = channels-first LN (mean over dim 1,
      biased variance, eps 1e-6, weight[:,None,None]*xhat + bias[:,None,None]); dx, dw, db.

Backward keys: dx (grad wrt x), dw (grad wrt weight), db (grad wrt bias).
"""

import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convnext_ref import channels_first_layer_norm  # noqa: E402

OUT = os.path.join("tests", "fixtures", "ops")


def run(path, fn, x, w, b, g):
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    y = fn(x, w, b)
    gy = torch.randn(y.shape, generator=g)
    (y * gy).sum().backward()
    out = {"x": x, "weight": w, "bias": b, "y": y, "gy": gy, "dx": x.grad, "dw": w.grad, "db": b.grad}
    out = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in out.items()}
    save_file(out, path)
    print(f"{path}: " + ", ".join(f"{k}{list(v.shape)}" for k, v in out.items()))


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator()
    g.manual_seed(0)
    for k in (7, 3):
        x = torch.randn(2, 5, 9, 11, generator=g)
        w = torch.randn(5, 1, k, k, generator=g) / k
        b = torch.rand(5, generator=g) * 0.2 - 0.1
        run(os.path.join(OUT, f"dwconv_k{k}.safetensors"),
            lambda x, w, b, k=k: F.conv2d(x, w, b, padding=k // 2, groups=5), x, w, b, g)

    x = torch.randn(3, 4, 6, 10, generator=g) * 2 + 0.5
    w = torch.rand(10, generator=g) + 0.5
    b = torch.rand(10, generator=g) * 0.2 - 0.1
    run(os.path.join(OUT, "layernorm_last.safetensors"),
        lambda x, w, b: F.layer_norm(x, (10,), w, b, eps=1e-6), x, w, b, g)

    x = torch.randn(2, 6, 5, 7, generator=g)
    w = torch.rand(6, generator=g) + 0.5
    b = torch.rand(6, generator=g) * 0.2 - 0.1
    run(os.path.join(OUT, "layernorm_channels_first.safetensors"),
        lambda x, w, b: channels_first_layer_norm(x, w, b, 1e-6), x, w, b, g)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
