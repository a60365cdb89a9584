"""Generate the backbone and checkpoint-format fixtures for the Rust tests.

Rerun from the repository root with the reference venv (torch, torchvision, timm, safetensors):

    /work/ref/bin/python tests/reference/make_backbone_fixtures.py

Output (everything float32, contiguous; fully deterministic: every fixture has its own fixed seed):

tests/fixtures/backbones/
  convnext_small_depths.safetensors   depths [3,3,9,3], dims [8,16,32,64], 10 classes.
      official classifier params + detection norm0..3.* + input [2,3,64,64], logits [2,10],
      feat0..feat3 = norm_i(stage_i output) (detection mode).
  convnext_deep.safetensors           depths [3,3,27,3], dims [8,16,16,32], 7 classes, input [1,3,64,64],
      same keys.
  convnext_isotropic.safetensors      isotropic depth 4, dim 32, with gamma, 5 classes, input [2,3,64,64], logits.
  convnext_isotropic_nogamma.safetensors  same without gamma (layer_scale 0).
  resnet50_formula.safetensors        torchvision resnet50(num_classes=10) with weights given by a
      closed-form formula (see resnet_formula_value); input [1,3,64,64], logits [1,10], c2..c5 (eval),
      probe_conv1_weight_first8, probe_bn1_running_var_first8.  No weights are stored.
  Sizes: the whole of tests/fixtures must stay small (a few MB); widths are chosen for that, and the
  .pth container adds ~300 bytes per tensor, which dominates the real-depth checkpoint files.
  Most safetensors files carry __metadata__ {"config": "<json>"} with depths/dims/num_classes/....
  Output is byte-for-byte reproducible.

tests/fixtures/checkpoints/
  convnext_{tiny,small,base,large,xlarge}_official.pth  {'model': official state_dict}; real depths,
      dims [4,8,8,16], 10 classes.
  convnext_{v}_timm.pth               timm-named state_dict (same values).
  convnext_tiny_timm.safetensors      same as convnext_tiny_timm.pth, safetensors format.
  convnext_tiny_module_prefix.pth     {'model': {'module.'+k: v}}.
  convnext_tiny_mmdet.pth             {'meta': {'epoch': 1}, 'state_dict': backbone.* (no norm/head) +
      backbone.norm0..3.* + fake neck/rpn tensors}.
  convnext_isotropic_{small,base,large}_official.pth  depths 18/18/36, dim 8, 10 classes; small/base
      without gamma, large with gamma.
  convnext_tiny_expected.safetensors  input [1,3,32,32] and logits of the tiny checkpoint (eval), plus
      the mmdet detection features feat0..feat3 for that input.
  convnext_tiny_truncated.pth         first half of the bytes of convnext_tiny_official.pth.
  not_a_checkpoint.pth                plain text.
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convnext_ref import (  # noqa: E402
    ConvNeXt,
    ConvNeXtIsotropic,
    LayerNorm,
    official_to_timm_key,
    random_init,
    state_dict_f32,
)

FIX = os.path.join("tests", "fixtures")
BB = os.path.join(FIX, "backbones")
CK = os.path.join(FIX, "checkpoints")

torch.manual_seed(0)
torch.use_deterministic_algorithms(True)


def gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def save_st(tensors, path, meta=None):
    tensors = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}
    # A single metadata entry: safetensors writes the metadata map in random order, so several
    # entries would make the file bytes differ between runs.
    save_file(tensors, path, metadata={"config": json.dumps(meta, sort_keys=True)} if meta else None)


# --------------------------------------------------------------------------------------------
# ConvNeXt (hierarchical) backbone fixtures
# --------------------------------------------------------------------------------------------
def convnext_fixture(path, depths, dims, num_classes, batch, seed):
    g = gen(seed)
    model = ConvNeXt(depths, dims, num_classes, detection=True).eval()
    random_init(model, g)
    x = torch.randn(batch, 3, 64, 64, generator=g)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_det(x)
    out = state_dict_f32(model)
    out["input"] = x
    out["logits"] = logits
    for i, f in enumerate(feats):
        out[f"feat{i}"] = f
    save_st(out, path, {"depths": depths, "dims": dims, "num_classes": num_classes, "layer_scale": "random"})
    print(f"{path}: logits[0,:4]={logits[0, :4].tolist()} feat std={[round(f.std().item(), 3) for f in feats]}")


def isotropic_fixture(path, depth, dim, num_classes, with_gamma, seed):
    g = gen(seed)
    model = ConvNeXtIsotropic(depth, dim, num_classes, layer_scale=1.0 if with_gamma else 0.0).eval()
    random_init(model, g)
    x = torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        logits = model(x)
    out = state_dict_f32(model)
    out["input"] = x
    out["logits"] = logits
    save_st(out, path, {"depth": depth, "dim": dim, "num_classes": num_classes, "gamma": with_gamma})
    print(f"{path}: logits[0]={logits[0].tolist()}")


# --------------------------------------------------------------------------------------------
# ResNet-50 with formula weights
# --------------------------------------------------------------------------------------------
M64 = (1 << 64) - 1


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & M64
    return h


def formula_su(name, n):
    """Return (s, u) float64 arrays of length n for tensor NAME (splitmix64 finalizer on seed+(j+1)*golden)."""
    with np.errstate(over="ignore"):
        seed = np.uint64(fnv1a64(name))
        j1 = np.arange(1, n + 1, dtype=np.uint64)
        z = seed + j1 * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * (2.0**-53)
    return 2.0 * u - 1.0, u


def resnet_formula_value(name, shape):
    """float32 tensor for resnet50 state_dict entry NAME, or None for num_batches_tracked."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return None
    n = math.prod(shape)
    s, u = formula_su(name, n)
    if leaf == "weight" and len(shape) >= 2:  # conv or fc weight
        v = s * math.sqrt(3.0 / math.prod(shape[1:]))
    elif leaf == "weight":  # bn weight
        v = 1.0 + 0.2 * s
    elif leaf == "bias":  # bn bias and fc.bias
        v = 0.1 * s
    elif leaf == "running_mean":
        v = 0.1 * s
    elif leaf == "running_var":
        v = 1.0 + 0.5 * u
    else:
        raise ValueError(name)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def resnet_fixture(path, seed):
    model = torchvision.models.resnet50(num_classes=10).eval()
    sd = model.state_dict()
    new = {}
    for k, v in sd.items():
        val = resnet_formula_value(k, tuple(v.shape))
        new[k] = v if val is None else val
    model.load_state_dict(new)
    g = gen(seed)
    x = torch.randn(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        y = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        c2 = model.layer1(y)
        c3 = model.layer2(c2)
        c4 = model.layer3(c3)
        c5 = model.layer4(c4)
        logits = model(x)
    out = {
        "input": x,
        "logits": logits,
        "c2": c2,
        "c3": c3,
        "c4": c4,
        "c5": c5,
        "probe_conv1_weight_first8": new["conv1.weight"].flatten()[:8],
        "probe_bn1_running_var_first8": new["bn1.running_var"].flatten()[:8],
    }
    save_st(out, path, {"model": "torchvision resnet50", "num_classes": 10, "weights": "formula"})
    print(f"{path}: logits={logits[0].tolist()}")
    print(f"  c2..c5 std={[round(t.std().item(), 3) for t in (c2, c3, c4, c5)]}")
    print(f"  probe conv1.weight[:8]={out['probe_conv1_weight_first8'].tolist()}")


# --------------------------------------------------------------------------------------------
# Checkpoint-format fixtures
# --------------------------------------------------------------------------------------------
CKPT_DIMS = [4, 8, 8, 16]  # widths reduced for the size budget (real depths kept)
ISO_CKPT_DIM = 8  # reduced for the size budget (real depths kept)
VARIANT_DEPTHS = {
    "tiny": [3, 3, 9, 3],
    "small": [3, 3, 27, 3],
    "base": [3, 3, 27, 3],
    "large": [3, 3, 27, 3],
    "xlarge": [3, 3, 27, 3],
}
ISO_DEPTHS = {"small": 18, "base": 18, "large": 36}
ISO_GAMMA = {"small": False, "base": False, "large": True}


def timm_model(depths, dims, num_classes):
    import timm

    return timm.create_model(
        "convnext_tiny", pretrained=False, num_classes=num_classes, depths=depths, dims=dims
    ).eval()


def check_timm(official_model, timm_sd, depths, dims, num_classes, x):
    """Load the renamed weights into real timm (strict) and compare logits with the reference."""
    tm = timm_model(depths, dims, num_classes)
    expected_keys = set(tm.state_dict().keys())
    assert expected_keys == set(timm_sd.keys()), (
        sorted(expected_keys - set(timm_sd)),
        sorted(set(timm_sd) - expected_keys),
    )
    tm.load_state_dict(timm_sd, strict=True)
    # Also compare against timm's own official->timm converter, when it exists.
    try:
        from timm.models.convnext import checkpoint_filter_fn

        conv = checkpoint_filter_fn({"model": official_model.state_dict()}, tm)
        for k, v in conv.items():
            assert torch.equal(v.reshape(timm_sd[k].shape), timm_sd[k]), k
    except ImportError:
        pass
    with torch.no_grad():
        a = official_model(x)
        b = tm(x)
    err = (a - b).abs().max().item()
    assert err < 1e-4, err
    return err


def checkpoint_fixtures():
    expected = {}
    for i, (v, depths) in enumerate(VARIANT_DEPTHS.items()):
        g = gen(100 + i)
        model = ConvNeXt(depths, CKPT_DIMS, 10, detection=(v == "tiny")).eval()
        random_init(model, g)
        sd = {k: t for k, t in state_dict_f32(model).items() if not k.startswith("norm") or k.startswith("norm.")}
        # official: 'model' only
        torch.save({"model": sd}, os.path.join(CK, f"convnext_{v}_official.pth"))
        timm_sd = {official_to_timm_key(k): t.clone() for k, t in sd.items()}
        x = torch.randn(1, 3, 32, 32, generator=g)
        cls_model = ConvNeXt(depths, CKPT_DIMS, 10).eval()
        cls_model.load_state_dict(sd)
        err = check_timm(cls_model, timm_sd, depths, CKPT_DIMS, 10, x)
        torch.save(timm_sd, os.path.join(CK, f"convnext_{v}_timm.pth"))
        print(f"checkpoint {v}: {len(sd)} tensors, timm max|diff|={err:.2e}")
        if v == "tiny":
            save_st(timm_sd, os.path.join(CK, "convnext_tiny_timm.safetensors"))
            torch.save({"model": {"module." + k: t.clone() for k, t in sd.items()}},
                       os.path.join(CK, "convnext_tiny_module_prefix.pth"))
            backbone = {
                "backbone." + k: t.clone()
                for k, t in state_dict_f32(model).items()
                if not (k.startswith("norm.") or k.startswith("head."))
            }
            backbone["neck.lateral_convs.0.conv.weight"] = torch.randn(8, CKPT_DIMS[0], 1, 1, generator=g)
            backbone["neck.lateral_convs.0.conv.bias"] = torch.zeros(8)
            backbone["rpn_head.rpn_conv.weight"] = torch.randn(8, 8, 3, 3, generator=g)
            torch.save({"meta": {"epoch": 1}, "state_dict": backbone}, os.path.join(CK, "convnext_tiny_mmdet.pth"))
            with torch.no_grad():
                logits = cls_model(x)
                feats = model.forward_det(x)
            expected = {"input": x, "logits": logits}
            for j, f in enumerate(feats):
                expected[f"feat{j}"] = f
            save_st(expected, os.path.join(CK, "convnext_tiny_expected.safetensors"),
                    {"depths": depths, "dims": CKPT_DIMS, "num_classes": 10,
                     "feat": "detection features with the mmdet file's backbone.norm0..3"})
            print(f"  tiny logits={logits[0].tolist()}")

    for i, (v, depth) in enumerate(ISO_DEPTHS.items()):
        g = gen(200 + i)
        model = ConvNeXtIsotropic(depth, ISO_CKPT_DIM, 10, layer_scale=1.0 if ISO_GAMMA[v] else 0.0)
        random_init(model, g)
        torch.save({"model": state_dict_f32(model)}, os.path.join(CK, f"convnext_isotropic_{v}_official.pth"))

    src = os.path.join(CK, "convnext_tiny_official.pth")
    data = open(src, "rb").read()
    with open(os.path.join(CK, "convnext_tiny_truncated.pth"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(CK, "not_a_checkpoint.pth"), "wb") as f:
        f.write(b"this is not a pytorch checkpoint, just some text bytes\n" * 4)


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


# With dims [16, 32, 64, 128] this file alone would be 6 MB (stage 2 has 27 blocks
# of 64 channels), so the channel widths are reduced; depths [3, 3, 27, 3] are kept.
DEEP_DIMS = [8, 16, 16, 32]


def main():
    os.makedirs(BB, exist_ok=True)
    os.makedirs(CK, exist_ok=True)
    convnext_fixture(os.path.join(BB, "convnext_small_depths.safetensors"), [3, 3, 9, 3], [8, 16, 32, 64], 10, 2, 1)
    convnext_fixture(os.path.join(BB, "convnext_deep.safetensors"), [3, 3, 27, 3], DEEP_DIMS, 7, 1, 2)
    isotropic_fixture(os.path.join(BB, "convnext_isotropic.safetensors"), 4, 32, 5, True, 3)
    isotropic_fixture(os.path.join(BB, "convnext_isotropic_nogamma.safetensors"), 4, 32, 5, False, 4)
    resnet_fixture(os.path.join(BB, "resnet50_formula.safetensors"), 5)
    checkpoint_fixtures()
    for root, _, files in sorted(os.walk(FIX)):
        for name in sorted(files):
            p = os.path.join(root, name)
            print(f"{os.path.getsize(p):>10}  {p}")
    print(f"total size of {FIX}: {dir_size(FIX)} bytes ({dir_size(FIX) / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
