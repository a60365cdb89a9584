"""Generate the Swin Transformer fixtures for the Rust tests (backbones/tests/swin.rs).

Rerun from the repository root with the reference venv (torch, timm, safetensors, numpy):

    /work/ref/bin/python tests/reference/make_swin_fixtures.py

Full-size weights cannot be committed (Swin-B alone is 350 MB), so the parity fixtures hold no
weights at all: every parameter, and every input image, is a closed-form function of its name
(`formula_value` in swin_ref.py: a splitmix64 hash of the element index seeded with the FNV-1a
hash of the name, scaled per kind of tensor). The Rust test computes the same values bit for bit
(checked against the `probe_*` tensors stored here), builds the model, and compares its outputs
with the ones PyTorch produced here. Names are the official Swin layout, which the Rust model
uses; timm gets the same values through timm's own converter (`checkpoint_filter_fn`).

Output (float32, contiguous, byte-for-byte reproducible; the reference model is swin_ref.py):

tests/fixtures/backbones/swin_formula.safetensors
  tiny_224_logits [2,1000]   timm swin_tiny_patch4_window7_224 (formula weights), input [2,3,224,224]
  base_224_logits [1,1000]   timm swin_base_patch4_window7_224, input [1,3,224,224]
  base_384_logits [1,1000]   timm swin_base_patch4_window12_384, input [1,3,384,384]
  small_112_logits [2,10]    timm, embed 16, depths 2/2/6/2, heads 1/2/4/8, window 7, img 112: the
                             last two stages (7x7 and 4x4) are single unshifted windows of 7 and 4
  probe_* [8]                first values of a few formula tensors (the Rust formula is checked on them)
  (swin_ref.py's classifier gives the same logits as timm; asserted here)
tests/fixtures/backbones/swin_det_small.safetensors
  detection mode (Swin-Transformer-Object-Detection semantics), embed 16, depths 2/2/6/2,
  heads 1/2/4/8, window 7, input [2,3,93,141] (pads at the patch embedding, in every stage's
  windows and at every patch merging): feat0..feat3 in full
tests/fixtures/backbones/swin_det_800x1216.safetensors
  detection mode, full Swin-T, input [1,3,800,1216] (every stage pads to windows of 7):
  feat{i}_grid   feat_i[:, ::8, ::s, ::s] with s = 8, 4, 2, 1 (every 8th channel, ~25x38 positions)
  feat{i}_corner feat_i[:, :, -8:, -8:] (all channels; the padded, shifted corner of each stage)
  feat{i}_mean   per-channel mean over all positions
tests/fixtures/backbones/swin_grad.safetensors
  training-mode gradients by autograd, drop path 0 (dropout has none): embed 4, depths 2/2/2/2,
  heads 1/2/2/4, window 3.
  det: input [2,3,45,61], loss = sum_i sum(feat_i * probe_r{i}): det.loss, det.grad.input,
       det.grad.<param> for every parameter
  cls: img 96, 7 classes, input [2,3,96,96], loss = sum(logits * probe_rl): cls.loss,
       cls.grad.<param>
tests/fixtures/checkpoints/swin_layouts.json
  names and shapes of every published Swin layout, written from model instances:
  "official/<ckpt>": the official classifier state dict (with the relative_position_index and
  attn_mask buffers) for each released checkpoint shape (T/S/B/L, 224/384, 1K/22K heads);
  "timm/<ckpt>": the same converted by timm's checkpoint_filter_fn (names timm's model loads
  strictly); "mmdet/<arch>": the `backbone.` keys of a Swin-Transformer-Object-Detection detector
  (SwinTransformer with norm0..3, relative_position_index buffers, no mask buffers).
tests/fixtures/checkpoints/swin_tiny_{official.pth,timm.safetensors,mmdet.pth,expected.safetensors}
  real files of a reduced Swin (embed 4, depths 2/2/2/2, heads 1/1/2/2, window 7, img 112, 10
  classes; 112 makes the last two stages single 7x7 and 4x4 windows):
  official {'model': state dict with buffers}; timm-converted; mmdet {'meta', 'state_dict':
  backbone.* + backbone.norm0..3 + 3 fake neck/head tensors}; expected: logits for the formula
  input [1,3,112,112], det feat0..feat3 of the mmdet weights for the formula input [1,3,64,64].
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from swin_ref import (  # noqa: E402
    ARCHS,
    SwinRef,
    fill_formula,
    formula_value,
    official_to_timm,
    timm_model,
)

FIX = os.path.join("tests", "fixtures")
BB = os.path.join(FIX, "backbones")
CK = os.path.join(FIX, "checkpoints")

torch.manual_seed(0)
torch.use_deterministic_algorithms(True)


def save_st(tensors, path, meta=None):
    tensors = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}
    save_file(tensors, path, metadata={"config": json.dumps(meta, sort_keys=True)} if meta else None)
    print(f"{path}: {os.path.getsize(path)} bytes")


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


# --------------------------------------------------------------------------------------------
# Classifier logits against timm
# --------------------------------------------------------------------------------------------
def timm_logits(embed, depths, heads, window, img, classes, batch):
    ref = SwinRef(embed, depths, heads, window, img, classes, "cls").eval()
    fill_formula(ref)
    tm = timm_model(embed, depths, heads, window, img, classes)
    tm.load_state_dict(official_to_timm(ref.state_dict(), tm), strict=True)
    x = formula_value("input", (batch, 3, img, img))
    with torch.no_grad():
        want = tm(x)
        mine = ref(x)
    err = rel_err(mine, want)
    assert err < 1e-5, err
    print(f"  embed {embed} img {img}: |logits| {want.abs().max().item():.2f}, swin_ref vs timm {err:.1e}")
    return want


def formula_fixture():
    out = {}
    e, d, h = ARCHS["tiny"]
    out["tiny_224_logits"] = timm_logits(e, d, h, 7, 224, 1000, 2)
    e, d, h = ARCHS["base"]
    out["base_224_logits"] = timm_logits(e, d, h, 7, 224, 1000, 1)
    out["base_384_logits"] = timm_logits(e, d, h, 12, 384, 1000, 1)
    out["small_112_logits"] = timm_logits(16, [2, 2, 6, 2], [1, 2, 4, 8], 7, 112, 10, 2)
    for name, shape in [
        ("patch_embed.proj.weight", (96, 3, 4, 4)),
        ("layers.0.blocks.0.attn.relative_position_bias_table", (169, 3)),
        ("layers.2.blocks.5.norm2.weight", (384,)),
        ("layers.3.blocks.1.mlp.fc2.bias", (768,)),
        ("input", (2, 3, 224, 224)),
    ]:
        out["probe_" + name] = formula_value(name, shape).flatten()[:8]
    save_st(out, os.path.join(BB, "swin_formula.safetensors"), {"weights": "formula", "classes": 1000})


# --------------------------------------------------------------------------------------------
# Detection features
# --------------------------------------------------------------------------------------------
def det_model(embed, depths, heads, window):
    model = SwinRef(embed, depths, heads, window, mode="det").eval()
    fill_formula(model)
    return model


def det_small_fixture():
    model = det_model(16, [2, 2, 6, 2], [1, 2, 4, 8], 7)
    x = formula_value("input", (2, 3, 93, 141))
    with torch.no_grad():
        feats = model(x)
    out = {f"feat{i}": f for i, f in enumerate(feats)}
    print(f"  det small: shapes {[tuple(f.shape) for f in feats]}")
    save_st(out, os.path.join(BB, "swin_det_small.safetensors"), {"embed": 16, "input": [2, 3, 93, 141]})


def det_big_fixture():
    e, d, h = ARCHS["tiny"]
    model = det_model(e, d, h, 7)
    x = formula_value("input", (1, 3, 800, 1216))
    with torch.no_grad():
        feats = model(x)
    out = {}
    for i, (f, s) in enumerate(zip(feats, [8, 4, 2, 1])):
        out[f"feat{i}_grid"] = f[:, ::8, ::s, ::s]
        out[f"feat{i}_corner"] = f[:, :, -8:, -8:]
        out[f"feat{i}_mean"] = f.mean((2, 3))
        print(f"  det 800x1216 feat{i} {tuple(f.shape)} std {f.std().item():.3f} grid {tuple(out[f'feat{i}_grid'].shape)}")
    save_st(out, os.path.join(BB, "swin_det_800x1216.safetensors"), {"arch": "tiny", "input": [1, 3, 800, 1216]})


# --------------------------------------------------------------------------------------------
# Gradients of a training step
# --------------------------------------------------------------------------------------------
def grad_fixture():
    out = {}
    embed, depths, heads, window = 4, [2, 2, 2, 2], [1, 2, 2, 4], 3
    det = SwinRef(embed, depths, heads, window, mode="det").train()
    fill_formula(det)
    x = formula_value("input", (2, 3, 45, 61)).requires_grad_(True)
    feats = det(x)
    loss = sum((f * formula_value(f"probe_r{i}", tuple(f.shape))).sum() for i, f in enumerate(feats))
    loss.backward()
    out["det.loss"] = loss.detach().reshape(1)
    out["det.grad.input"] = x.grad
    for name, p in det.named_parameters():
        out[f"det.grad.{name}"] = p.grad
    cls = SwinRef(embed, depths, heads, window, img_size=96, num_classes=7, mode="cls").train()
    fill_formula(cls)
    logits = cls(formula_value("input", (2, 3, 96, 96)))
    loss = (logits * formula_value("probe_rl", tuple(logits.shape))).sum()
    loss.backward()
    out["cls.loss"] = loss.detach().reshape(1)
    for name, p in cls.named_parameters():
        out[f"cls.grad.{name}"] = p.grad
    print(f"  grads: det loss {out['det.loss'].item():.3f}, cls loss {out['cls.loss'].item():.3f}, {len(out)} tensors")
    save_st(out, os.path.join(BB, "swin_grad.safetensors"), {"embed": embed, "window": window})


# --------------------------------------------------------------------------------------------
# Checkpoint layouts
# --------------------------------------------------------------------------------------------
# The released classification checkpoints (microsoft/Swin-Transformer MODELHUB.md), by the
# shapes that tell them apart: (arch, img_size, window, classes).
RELEASED = {
    "swin_tiny_patch4_window7_224": ("tiny", 224, 7, 1000),
    "swin_small_patch4_window7_224": ("small", 224, 7, 1000),
    "swin_base_patch4_window7_224": ("base", 224, 7, 1000),
    "swin_base_patch4_window12_384": ("base", 384, 12, 1000),
    "swin_large_patch4_window7_224_22kto1k": ("large", 224, 7, 1000),
    "swin_large_patch4_window12_384_22kto1k": ("large", 384, 12, 1000),
    "swin_tiny_patch4_window7_224_22k": ("tiny", 224, 7, 21841),
    "swin_small_patch4_window7_224_22k": ("small", 224, 7, 21841),
    "swin_base_patch4_window7_224_22k": ("base", 224, 7, 21841),
    "swin_large_patch4_window7_224_22k": ("large", 224, 7, 21841),
    "swin_base_patch4_window12_384_22k": ("base", 384, 12, 21841),
    "swin_large_patch4_window12_384_22k": ("large", 384, 12, 21841),
}
# The other released files (22kto1k of T/S/B at 224, B at 384) have the shapes of a row above.


def shapes(sd):
    return {k: list(v.shape) for k, v in sd.items()}


def layouts_fixture():
    doc = {}
    for ckpt, (arch, img, window, classes) in RELEASED.items():
        e, d, h = ARCHS[arch]
        with torch.device("meta"):
            ref = SwinRef(e, d, h, window, img, classes, "cls")
            tm = timm_model(e, d, h, window, img, classes)
        sd = ref.state_dict()
        doc[f"official/{ckpt}"] = shapes(sd)
        # timm's converter on the official names (meta tensors: names and shapes only); timm's
        # model takes the result with nothing missing or left over.
        timm_sd = official_to_timm(sd, tm)
        missing, unexpected = tm.load_state_dict(timm_sd, strict=False, assign=True)
        assert not missing and not unexpected, (missing, unexpected)
        doc[f"timm/{ckpt}"] = shapes(timm_sd)
        n = sum(v.numel() for k, v in timm_sd.items())
        print(f"  {ckpt}: {len(sd)} official keys, {len(timm_sd)} timm keys, {n / 1e6:.1f}M parameters")
    for arch in ["tiny", "small", "base"]:
        e, d, h = ARCHS[arch]
        with torch.device("meta"):
            det = SwinRef(e, d, h, 7, mode="det")
        doc[f"mmdet/{arch}"] = {"backbone." + k: v for k, v in shapes(det.state_dict()).items()}
    path = os.path.join(CK, "swin_layouts.json")
    with open(path, "w") as f:
        json.dump(doc, f, sort_keys=True, separators=(",", ":"))
    print(f"{path}: {os.path.getsize(path)} bytes")


def real_checkpoints():
    e, d, h = 4, [2, 2, 2, 2], [1, 1, 2, 2]
    cls = SwinRef(e, d, h, 7, 112, 10, "cls").eval()
    fill_formula(cls)
    sd = {k: v.clone() for k, v in cls.state_dict().items()}
    assert any(k.endswith("attn_mask") for k in sd) and any(k.endswith("relative_position_index") for k in sd)
    torch.save({"model": sd}, os.path.join(CK, "swin_tiny_official.pth"))
    tm = timm_model(e, d, h, 7, 112, 10)
    timm_sd = official_to_timm(sd, tm)
    tm.load_state_dict(timm_sd, strict=True)
    save_file({k: v.contiguous() for k, v in timm_sd.items()}, os.path.join(CK, "swin_tiny_timm.safetensors"))
    det = SwinRef(e, d, h, 7, mode="det").eval()
    fill_formula(det)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for i in range(4):  # the detection norms are not in a classification checkpoint
            getattr(det, f"norm{i}").weight.uniform_(0.5, 1.5, generator=g)
    state = {"backbone." + k: v.clone() for k, v in det.state_dict().items()}
    state["neck.lateral_convs.0.conv.weight"] = torch.randn(8, 8, 1, 1, generator=g)
    state["neck.lateral_convs.0.conv.bias"] = torch.zeros(8)
    state["rpn_head.rpn_conv.weight"] = torch.randn(8, 8, 3, 3, generator=g)
    torch.save({"meta": {"epoch": 36}, "state_dict": state}, os.path.join(CK, "swin_tiny_mmdet.pth"))
    x = formula_value("input", (1, 3, 112, 112))
    x_det = formula_value("input", (1, 3, 64, 64))
    with torch.no_grad():
        logits = tm(x)
        assert rel_err(cls(x), logits) < 1e-5
        feats = det(x_det)
    expected = {"logits": logits}
    expected.update({f"feat{i}": f for i, f in enumerate(feats)})
    save_st(expected, os.path.join(CK, "swin_tiny_expected.safetensors"), {"embed": e, "heads": h})
    for name in ["swin_tiny_official.pth", "swin_tiny_timm.safetensors", "swin_tiny_mmdet.pth"]:
        print(f"{os.path.join(CK, name)}: {os.path.getsize(os.path.join(CK, name))} bytes")


def main():
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    os.makedirs(BB, exist_ok=True)
    os.makedirs(CK, exist_ok=True)
    layouts_fixture()
    real_checkpoints()
    grad_fixture()
    det_small_fixture()
    formula_fixture()
    det_big_fixture()


if __name__ == "__main__":
    main()
