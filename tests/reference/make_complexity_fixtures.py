"""Generate the parameter / FLOP / activation fixtures of `nextdet analyze` (tests/analyze.rs).

The counts come from the two counters the paper's numbers come from, run on the PyTorch
reference models:

  * fvcore's FlopCountAnalysis and ActivationCountAnalysis (classifiers, Tables 1-2 and the
    roadmap of Table 10): a JIT trace, one handle per aten op; one fused multiply-add is one
    FLOP. Recorded per module and per operator (`conv`, `linear`, `layer_norm`, `batch_norm`,
    `adaptive_avg_pool2d`, ...), so that the tests can check any subset of the handles.
  * mmcv's get_model_complexity_info as mmdetection 2.11's tools/analysis_tools/get_flops.py
    calls it (detectors, Table 3): input (3, 1280, 800), forward = forward_dummy, forward hooks
    on the module types it knows; per module as mmcv prints it (a hooked module's own count, any
    other module the sum of its children).

Rerun from the repository root with the reference venv:

    /work/ref/bin/pip install fvcore
    # mmcv 1.x without its compiled ops (the counter is pure Python); 1.3.0 to 1.7.2 count alike:
    MMCV_WITH_OPS=0 pip wheel --no-deps mmcv==1.7.2   # in a venv whose setuptools has pkg_resources
    /work/ref/bin/pip install --no-deps mmcv-1.7.2-py2.py3-none-any.whl addict yapf
    /work/ref/bin/python tests/reference/make_complexity_fixtures.py

Writes tests/fixtures/complexity/ (deterministic; the counts do not depend on weights):
  classifiers.json   fvcore per module for ConvNeXt-T, ConvNeXt-isotropic-S and torchvision's
                     ResNet-50 at 224 (the configs configs/imagenet/{convnext_tiny_1k_224,
                     convnext_isotropic_small_1k_224,resnet50_1k_224}.yaml)
  roadmap.json       fvcore per module for every step of the roadmap at 224 (roadmap_ref.py;
                     configs/roadmap/<step>.yaml)
  detectors.json     mmcv per module for Mask R-CNN and Cascade Mask R-CNN with ConvNeXt-T
                     (mmdet_ref.py), with fvcore's activation counts of the same forward
  totals.json        totals of every model of the paper's Tables 1-3: fvcore per operator for
                     the classifiers at 224 and 384, mmcv for the detectors; parameters
Each module entry: params (all parameters under it), trainable (requires_grad ones), flops
(fvcore: {operator: FLOPs}; mmcv: a number) and acts (fvcore's activation count).
"""

import json
import os
import sys

import torch
import torchvision
from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis
from mmcv.cnn import get_model_complexity_info
from mmcv.cnn.utils.flops_counter import is_supported_instance

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convnext_ref import ConvNeXt, ConvNeXtIsotropic  # noqa: E402
from mmdet_ref import ConvNeXtDet, ResNetDet, TwoStageDetector  # noqa: E402
from roadmap_ref import Roadmap, step_options  # noqa: E402

OUT = os.path.join("tests", "fixtures", "complexity")
DET_INPUT = (3, 1280, 800)  # get_flops.py's default --shape 1280 800: (C, H, W)

CONVNEXT = {
    "tiny": ([3, 3, 9, 3], [96, 192, 384, 768]),
    "small": ([3, 3, 27, 3], [96, 192, 384, 768]),
    "base": ([3, 3, 27, 3], [128, 256, 512, 1024]),
    "large": ([3, 3, 27, 3], [192, 384, 768, 1536]),
    "xlarge": ([3, 3, 27, 3], [256, 512, 1024, 2048]),
}
ISOTROPIC = {"small": (18, 384, 0.0), "base": (18, 768, 0.0), "large": (36, 1024, 1e-6)}


def param_counts(model):
    """{module: (params, trainable)} for every module, "" the whole model (fvcore's parameter_count)."""
    out = {}
    for name, _ in model.named_modules():
        prefix = name + "." if name else ""
        ps = [p for n, p in model.named_parameters() if n.startswith(prefix)]
        out[name] = (sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad))
    return out


def quiet(analysis):
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def fvcore_counts(model, x):
    """Per-module fvcore FLOPs by operator, activations and parameters."""
    model.eval()
    with torch.no_grad():
        flops = quiet(FlopCountAnalysis(model, x)).by_module_and_operator()
        acts = quiet(ActivationCountAnalysis(model, x)).by_module()
    params = param_counts(model)
    modules = {}
    for name in params:
        ops = {op: int(v) for op, v in sorted(flops.get(name, {}).items()) if v}
        modules[name] = dict(params=params[name][0], trainable=params[name][1], flops=ops, acts=int(acts.get(name, 0)))
    return modules


def mmcv_counts(model):
    """Per-module mmcv FLOPs (as print_model_with_flops accumulates them) and parameters, plus
    fvcore's activation counts of the same forward."""
    model.eval()
    with torch.no_grad():
        total, trainable = get_model_complexity_info(model, DET_INPUT, print_per_layer_stat=False, as_strings=False)
        batches = model.__batch_counter__

        def accumulate(m):
            if is_supported_instance(m):
                return m.__flops__ / batches
            return sum(accumulate(c) for c in m.children())

        acts = quiet(ActivationCountAnalysis(model, torch.zeros(1, *DET_INPUT))).by_module()
    params = param_counts(model)
    modules = {}
    for name, m in model.named_modules():
        modules[name] = dict(params=params[name][0], trainable=params[name][1], flops=int(accumulate(m)),
                             acts=int(acts.get(name, 0)))
    assert modules[""]["flops"] == int(total) and modules[""]["trainable"] == trainable
    return modules


def classifier(kind, arch):
    if kind == "convnext":
        return ConvNeXt(*CONVNEXT[arch], 1000)
    if kind == "isotropic":
        depth, dim, ls = ISOTROPIC[arch]
        return ConvNeXtIsotropic(depth, dim, 1000, layer_scale=ls)
    return torchvision.models.resnet50()


def detector(arch, cascade):
    backbone = ResNetDet() if arch == "r50" else ConvNeXtDet(*CONVNEXT[arch])
    return TwoStageDetector(backbone, cascade)


def totals_fvcore(model, size):
    model.eval()
    with torch.no_grad():
        f = quiet(FlopCountAnalysis(model, torch.zeros(1, 3, size, size)))
        ops = {op: int(v) for op, v in sorted(f.by_operator().items()) if v}
    params = sum(p.numel() for p in model.parameters())
    return dict(params=params, trainable=params, flops=ops)


def write(name, data):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(data, f, indent=None, separators=(",", ":"), sort_keys=True)
        f.write("\n")


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    x224 = torch.zeros(1, 3, 224, 224)
    write("classifiers.json", {
        "convnext_tiny_1k_224": fvcore_counts(classifier("convnext", "tiny"), x224),
        "convnext_isotropic_small_1k_224": fvcore_counts(classifier("isotropic", "small"), x224),
        "resnet50_1k_224": fvcore_counts(classifier("resnet", None), x224),
    })
    write("roadmap.json", {name: fvcore_counts(Roadmap(o), x224) for name, o in step_options()})
    write("detectors.json", {
        "mask_rcnn_convnext_tiny_fpn_3x_coco": mmcv_counts(detector("tiny", False)),
        "cascade_mask_rcnn_convnext_tiny_fpn_3x_coco": mmcv_counts(detector("tiny", True)),
    })
    totals = {}
    for arch in CONVNEXT:
        model = classifier("convnext", arch)
        for size in (224, 384):
            totals[f"convnext_{arch}_{size}"] = totals_fvcore(model, size)
    for arch in ISOTROPIC:
        totals[f"convnext_isotropic_{arch}_224"] = totals_fvcore(classifier("isotropic", arch), 224)
    totals["resnet50_224"] = totals_fvcore(classifier("resnet", None), 224)
    dets = [("mask_rcnn_convnext_tiny", "tiny", False), ("cascade_mask_rcnn_r50", "r50", True)]
    dets += [(f"cascade_mask_rcnn_convnext_{a}", a, True) for a in CONVNEXT]
    for name, arch, cascade in dets:
        model = detector(arch, cascade).eval()
        with torch.no_grad():
            flops, trainable = get_model_complexity_info(model, DET_INPUT, print_per_layer_stat=False,
                                                         as_strings=False)
        totals[name] = dict(params=sum(p.numel() for p in model.parameters()), trainable=trainable, flops=int(flops))
        del model
    write("totals.json", totals)


if __name__ == "__main__":
    main()
