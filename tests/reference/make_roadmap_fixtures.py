"""Generate the roadmap parity fixture: every step of roadmap_ref.py at small widths.

Rerun from the repository root with the reference venv (torch, safetensors):

    /work/ref/bin/python tests/reference/make_roadmap_fixtures.py

Writes tests/fixtures/backbones/roadmap_steps.safetensors (float32, deterministic). For each step
of roadmap_ref.STEPS, with depths [2, 1, 2, 1] and dims [4, 8, 8, 16] in place of the step's
(so that every stage has a block with a projection shortcut and stages 0 and 2 one with an
identity shortcut) and 5 classes, under `<step>/`:
  <name>                 the model's state_dict after a large random init (norm affines, batch
                         norm running statistics and layer scales far from their defaults)
  input                  [2, 3, 64, 64], shared by all steps (no prefix)
  <step>/logits_eval     eval-mode logits
  <step>/logits_train    train-mode logits (batch statistics), taken after the eval forward
  <step>/after_train/<name>  every running_mean / running_var after that train forward
Metadata "config": JSON {step: full options}, the keys and values of RoadmapConfig.
"""

import json
import math
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convnext_ref import LayerNorm  # noqa: E402
from roadmap_ref import Roadmap, step_options  # noqa: E402

OUT = os.path.join("tests", "fixtures", "backbones", "roadmap_steps.safetensors")
SMALL = dict(depths=(2, 1, 2, 1), dims=(4, 8, 8, 16))
CLASSES = 5


def init(model, g):
    """conv/linear weights ~ N(0, 1/fan_in), biases ~ U(-0.1, 0.1); norm weights ~ U(0.5, 1.5),
    biases ~ U(-0.1, 0.1); running means ~ U(-0.2, 0.2), variances ~ U(0.5, 1.5); gamma ~ U(0.3, 1)."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = math.prod(m.weight.shape[1:])
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.empty_like(m.bias).uniform_(-0.1, 0.1, generator=g))
            elif isinstance(m, (nn.BatchNorm2d, LayerNorm, nn.LayerNorm)):
                m.weight.copy_(torch.empty_like(m.weight).uniform_(0.5, 1.5, generator=g))
                m.bias.copy_(torch.empty_like(m.bias).uniform_(-0.1, 0.1, generator=g))
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.empty_like(m.running_mean).uniform_(-0.2, 0.2, generator=g))
                    m.running_var.copy_(torch.empty_like(m.running_var).uniform_(0.5, 1.5, generator=g))
            if getattr(m, "gamma", None) is not None:
                m.gamma.copy_(torch.empty_like(m.gamma).uniform_(0.3, 1.0, generator=g))


def main():
    g = torch.Generator()
    g.manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=g)
    tensors, configs = {"input": x}, {}
    for step, options in step_options():
        o = dict(options, **SMALL)
        configs[step] = {k: list(v) if isinstance(v, tuple) else v for k, v in o.items()}
        model = Roadmap(o, CLASSES)
        init(model, g)
        for k, v in model.state_dict().items():
            tensors[f"{step}/{k}"] = v.clone()  # the train forward below updates buffers in place
        with torch.no_grad():
            tensors[f"{step}/logits_eval"] = model.eval()(x)
            tensors[f"{step}/logits_train"] = model.train()(x)
        for k, v in model.state_dict().items():
            if k.endswith("running_mean") or k.endswith("running_var"):
                tensors[f"{step}/after_train/{k}"] = v.clone()
    tensors = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}
    save_file(tensors, OUT, metadata={"config": json.dumps(configs, sort_keys=True)})


if __name__ == "__main__":
    main()
