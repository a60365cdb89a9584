"""Fixtures for ops/tests/max_pool.rs: torch's F.max_pool2d(x, 3, stride=2, padding=1) on
non-negative inputs (ReLU outputs, with exact zeros), forward and the gradient of sum(y * g).

usage: python tests/reference/make_max_pool_fixtures.py  (writes tests/fixtures/max_pool/)"""
import os
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
out = {}
for name, shape in [("even", (2, 3, 8, 6)), ("odd", (1, 2, 7, 9)), ("tiny", (1, 1, 1, 2))]:
    x = torch.relu(torch.randn(shape, dtype=torch.float64)).requires_grad_(True)
    y = F.max_pool2d(x, 3, stride=2, padding=1)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    for k, v in {"x": x, "y": y, "g": g, "dx": x.grad}.items():
        out[f"{name}.{k}"] = v.detach().float().contiguous()
d = os.path.join(os.path.dirname(__file__), "..", "fixtures", "max_pool")
os.makedirs(d, exist_ok=True)
save_file(out, os.path.join(d, "max_pool.safetensors"))
