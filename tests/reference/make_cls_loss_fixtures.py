"""Generate fixtures for heads/tests/classifier_loss.rs: timm's SoftTargetCrossEntropy and its
gradient, on the targets the ConvNeXt recipe feeds it (Mixup/CutMix-mixed smoothed one-hot rows),
plus extreme logits for numerical stability.

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_cls_loss_fixtures.py

Writes tests/fixtures/cls_loss/soft_ce.safetensors (seed 0). For each case `c` in 0..4:
  c.logits [N, K] f32, c.targets [N, K] f32,
  c.loss [1] f32: timm.loss.SoftTargetCrossEntropy()(logits, targets),
  c.grad [N, K] f32: d loss / d logits from torch autograd.
Cases: 0 random logits vs mixed smoothed targets (lam 0.7, smoothing 0.1), 1 the same logits at
scale 60 (some rows exceed float32 exp range without the max shift), 2 plain one-hot targets
(equals F.cross_entropy), 3 one row of 1000 classes with smoothing 0.1 only.
"""
import os

import torch
from safetensors.torch import save_file
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy

OUT = os.path.join("tests", "fixtures", "cls_loss")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)

loss_fn = SoftTargetCrossEntropy()
tensors = {}


def case(i, logits, targets):
    logits = logits.clone().float().requires_grad_(True)
    loss = loss_fn(logits, targets.float())
    loss.backward()
    tensors[f"{i}.logits"] = logits.detach().contiguous()
    tensors[f"{i}.targets"] = targets.float().clone()
    tensors[f"{i}.loss"] = loss.detach().reshape(1)
    tensors[f"{i}.grad"] = logits.grad.detach().contiguous()
    print(i, tuple(logits.shape), loss.item())


labels = torch.randint(0, 10, (8,))
base = torch.randn(8, 10) * 2.0
mixed = mixup_target(labels, 10, lam=0.7, smoothing=0.1)
case(0, base, mixed)
case(1, base * 60.0, mixed)
case(2, torch.randn(6, 5) * 3.0, torch.nn.functional.one_hot(torch.randint(0, 5, (6,)), 5))
case(3, torch.randn(1, 1000), mixup_target(torch.tensor([417]), 1000, lam=1.0, smoothing=0.1))

# sanity: case 2 is plain cross-entropy
ce = torch.nn.functional.cross_entropy(tensors["2.logits"], tensors["2.targets"].argmax(1))
assert torch.allclose(ce, tensors["2.loss"][0])
save_file(tensors, os.path.join(OUT, "soft_ce.safetensors"))
