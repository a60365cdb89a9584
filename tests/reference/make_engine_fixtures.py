"""Generate fixtures for nextdet-engine's optimizers, layer decay and LR schedules
(engine/tests/optim.rs, engine/tests/layer_decay.rs, engine/tests/schedule.rs).

Rerun from the repository root with the reference venv:

    /work/ref/bin/python tests/reference/make_engine_fixtures.py

Writes tests/fixtures/engine/ (deterministic, seed 0):

  adamw.safetensors, sgd.safetensors, sgd_nesterov.safetensors
      Parameters a [3,4], b [4], c [2,3] in two groups: group 0 = {a, b} with lr_scale 1.0 and
      weight decay wd0, group 1 = {c} with lr_scale 0.5 and weight decay 0. init.<p> is the
      start value, grad.<step>.<p> the gradient fed at each of 5 steps (b has no gradient at
      step 2, so torch skips it there), lrs [5] the base lr of each step (group lr = base *
      scale), final.<p> the values after 5 steps of torch.optim.AdamW / SGD, and
      state.<p>.<field> torch's optimizer state after the last step. Hyper-parameters are in
      the safetensors metadata.
  layer_decay.json
      models: ConvNeXt-T/S detection parameter names (backbone with norm0..3, plus FPN/RPN/RoI
      head names) and ConvNeXt-B classification names, each with its rank (len(shape), all the
      rule looks at); cases: for (T Mask R-CNN
      0.95/6, T Cascade 0.7/6, S Cascade 0.7/12 layer_wise, T 0.7/6 stage_wise, B
      classification 0.8/12) the group index of every name, and each group's name, lr_scale and
      weight_decay, from ConvNeXt's LearningRateDecayOptimizerConstructor.add_params and
      optim_factory.get_parameter_groups re-implemented below (mmcv is not installed).
  schedule.json
      mmcv StepLrUpdaterHook (by epoch, linear/constant/exp warmup, re-implemented below) and ConvNeXt's
      utils.cosine_scheduler (copied semantics, numpy) at sample (epoch, iter) points.
"""
import json
import math
import os

import numpy as np
import torch
from safetensors.torch import save_file

OUT = os.path.join("tests", "fixtures", "engine")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)

# ---------------------------------------------------------------- optimizers
SHAPES = {"a": (3, 4), "b": (4,), "c": (2, 3)}
LRS = [1e-2, 2e-2, 3e-2, 2e-2, 1e-2]
SCALES = [1.0, 0.5]
STEPS = 5


def run_optimizer(make, wd0, fname, meta):
    init = {k: torch.randn(*s) for k, s in SHAPES.items()}
    grads = [{k: torch.randn(*s) for k, s in SHAPES.items()} for _ in range(STEPS)]
    del grads[2]["b"]
    params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
    groups = [
        {"params": [params["a"], params["b"]], "lr": LRS[0] * SCALES[0], "weight_decay": wd0},
        {"params": [params["c"]], "lr": LRS[0] * SCALES[1], "weight_decay": 0.0},
    ]
    opt = make(groups)
    for step in range(STEPS):
        for g, scale in zip(opt.param_groups, SCALES):
            g["lr"] = LRS[step] * scale
        for k, p in params.items():
            p.grad = grads[step][k].clone() if k in grads[step] else None
        opt.step()
    out = {f"init.{k}": v for k, v in init.items()}
    for step, g in enumerate(grads):
        for k, v in g.items():
            out[f"grad.{step}.{k}"] = v
    out["lrs"] = torch.tensor(LRS, dtype=torch.float64)
    for k, p in params.items():
        out[f"final.{k}"] = p.detach().clone()
        for field, v in opt.state[p].items():
            v = v if torch.is_tensor(v) else torch.tensor(v)
            out[f"state.{k}.{field}"] = v.detach().clone().reshape(-1) if field == "step" else v.detach().clone()
    out = {k: v.contiguous() for k, v in out.items()}
    meta = {k: json.dumps(v) for k, v in dict(meta, wd0=wd0, scales=SCALES).items()}
    save_file(out, os.path.join(OUT, fname), metadata=meta)


run_optimizer(
    lambda g: torch.optim.AdamW(g, lr=1.0, betas=(0.9, 0.999), eps=1e-8, foreach=False),
    0.05, "adamw.safetensors", {"betas": [0.9, 0.999], "eps": 1e-8})
run_optimizer(
    lambda g: torch.optim.SGD(g, lr=1.0, momentum=0.9, foreach=False),
    1e-2, "sgd.safetensors", {"momentum": 0.9, "nesterov": False})
run_optimizer(
    lambda g: torch.optim.SGD(g, lr=1.0, momentum=0.9, nesterov=True, foreach=False),
    1e-2, "sgd_nesterov.safetensors", {"momentum": 0.9, "nesterov": True})

# ---------------------------------------------------------------- layer decay


def convnext_names(depths, dims, prefix, detection):
    """(name, shape) of a ConvNeXt's parameters in named_parameters() order."""
    out = []
    p = prefix
    out += [(f"{p}downsample_layers.0.0.weight", [dims[0], 3, 4, 4]), (f"{p}downsample_layers.0.0.bias", [dims[0]]),
            (f"{p}downsample_layers.0.1.weight", [dims[0]]), (f"{p}downsample_layers.0.1.bias", [dims[0]])]
    for i in range(1, 4):
        out += [(f"{p}downsample_layers.{i}.0.weight", [dims[i - 1]]), (f"{p}downsample_layers.{i}.0.bias", [dims[i - 1]]),
                (f"{p}downsample_layers.{i}.1.weight", [dims[i], dims[i - 1], 2, 2]),
                (f"{p}downsample_layers.{i}.1.bias", [dims[i]])]
    for s, (d, c) in enumerate(zip(depths, dims)):
        for b in range(d):
            q = f"{p}stages.{s}.{b}."
            out += [(q + "gamma", [c]), (q + "dwconv.weight", [c, 1, 7, 7]), (q + "dwconv.bias", [c]),
                    (q + "norm.weight", [c]), (q + "norm.bias", [c]), (q + "pwconv1.weight", [4 * c, c]),
                    (q + "pwconv1.bias", [4 * c]), (q + "pwconv2.weight", [c, 4 * c]), (q + "pwconv2.bias", [c])]
    if detection:
        for i in range(4):
            out += [(f"{p}norm{i}.weight", [dims[i]]), (f"{p}norm{i}.bias", [dims[i]])]
    else:
        out += [("norm.weight", [dims[3]]), ("norm.bias", [dims[3]]), ("head.weight", [1000, dims[3]]),
                ("head.bias", [1000])]
    return out


def detection_head_names():
    out = []
    for i, c in enumerate([96, 192, 384, 768]):
        out += [(f"neck.lateral_convs.{i}.conv.weight", [256, c, 1, 1]), (f"neck.lateral_convs.{i}.conv.bias", [256])]
        out += [(f"neck.fpn_convs.{i}.conv.weight", [256, 256, 3, 3]), (f"neck.fpn_convs.{i}.conv.bias", [256])]
    out += [("rpn_head.rpn_conv.weight", [256, 256, 3, 3]), ("rpn_head.rpn_conv.bias", [256]),
            ("rpn_head.rpn_cls.weight", [3, 256, 1, 1]), ("rpn_head.rpn_cls.bias", [3]),
            ("rpn_head.rpn_reg.weight", [12, 256, 1, 1]), ("rpn_head.rpn_reg.bias", [12]),
            ("roi_head.bbox_head.shared_fcs.0.weight", [1024, 12544]), ("roi_head.bbox_head.shared_fcs.0.bias", [1024]),
            ("roi_head.bbox_head.fc_cls.weight", [81, 1024]), ("roi_head.bbox_head.fc_cls.bias", [81]),
            ("roi_head.mask_head.convs.0.conv.weight", [256, 256, 3, 3]),
            ("roi_head.mask_head.conv_logits.weight", [80, 256, 1, 1])]
    return out


def get_num_layer_layer_wise(var_name, num_max_layer=12):
    if var_name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    elif var_name.startswith("backbone.downsample_layers"):
        stage_id = int(var_name.split('.')[2])
        return {0: 0, 1: 2, 2: 3, 3: num_max_layer}[stage_id]
    elif var_name.startswith("backbone.stages"):
        stage_id = int(var_name.split('.')[2])
        block_id = int(var_name.split('.')[3])
        return {0: 1, 1: 2, 2: 3 + block_id // 3, 3: num_max_layer}[stage_id]
    return num_max_layer + 1


def get_num_layer_stage_wise(var_name, num_max_layer):
    if var_name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    elif var_name.startswith("backbone.downsample_layers"):
        return 0
    elif var_name.startswith("backbone.stages"):
        return int(var_name.split('.')[2]) + 1
    return num_max_layer - 1


def get_num_layer_for_convnext(var_name):
    if var_name.startswith("downsample_layers"):
        stage_id = int(var_name.split('.')[1])
        return {0: 0, 1: 2, 2: 3, 3: 12}[stage_id]
    elif var_name.startswith("stages"):
        stage_id = int(var_name.split('.')[1])
        block_id = int(var_name.split('.')[2])
        return {0: 1, 1: 2, 2: 3 + block_id // 3, 3: 12}[stage_id]
    return 13


def detection_groups(names, num_layers_cfg, decay_rate, decay_type, wd):
    """LearningRateDecayOptimizerConstructor.add_params on (name, shape) pairs."""
    groups = {}
    num_layers = num_layers_cfg + 2
    assign = []
    for name, shape in names:
        if len(shape) == 1 or name.endswith(".bias") or name in ('pos_embed', 'cls_token'):
            gname, this_wd = "no_decay", 0.0
        else:
            gname, this_wd = "decay", wd
        if decay_type == "layer_wise":
            layer_id = get_num_layer_layer_wise(name, num_layers_cfg)
        else:
            layer_id = get_num_layer_stage_wise(name, num_layers)
        gname = "layer_%d_%s" % (layer_id, gname)
        if gname not in groups:
            groups[gname] = {"name": gname, "lr_scale": decay_rate ** (num_layers - layer_id - 1), "weight_decay": this_wd}
        assign.append(gname)
    return assign, list(groups.values())


def classification_groups(names, decay_rate, wd):
    """main.py's LayerDecayValueAssigner + optim_factory.get_parameter_groups (skip list empty)."""
    num_layers = 12
    values = list(decay_rate ** (num_layers + 1 - i) for i in range(num_layers + 2))
    groups = {}
    assign = []
    for name, shape in names:
        if len(shape) == 1 or name.endswith(".bias"):
            gname, this_wd = "no_decay", 0.0
        else:
            gname, this_wd = "decay", wd
        layer_id = get_num_layer_for_convnext(name)
        gname = "layer_%d_%s" % (layer_id, gname)
        if gname not in groups:
            groups[gname] = {"name": gname, "lr_scale": values[layer_id], "weight_decay": this_wd}
        assign.append(gname)
    return assign, list(groups.values())


det_t = convnext_names([3, 3, 9, 3], [96, 192, 384, 768], "backbone.", True) + detection_head_names()
det_s = convnext_names([3, 3, 27, 3], [96, 192, 384, 768], "backbone.", True) + detection_head_names()
cls_b = convnext_names([3, 3, 27, 3], [128, 256, 512, 1024], "", False)
models = {"det_t": det_t, "det_s": det_s, "cls_b": cls_b}
cases = []
for label, model, nl, rate, dtype in [("t_mask_rcnn", "det_t", 6, 0.95, "layer_wise"),
                                      ("t_cascade", "det_t", 6, 0.7, "layer_wise"),
                                      ("s_cascade", "det_s", 12, 0.7, "layer_wise"),
                                      ("t_stage_wise", "det_t", 6, 0.7, "stage_wise")]:
    assign, groups = detection_groups(models[model], nl, rate, dtype, 0.05)
    cases.append({"label": label, "model": model, "decay_type": dtype, "num_layers": nl, "decay_rate": rate,
                  "weight_decay": 0.05, "assign": assign, "groups": groups})
assign, groups = classification_groups(cls_b, 0.8, 1e-8)
cases.append({"label": "b_classification", "model": "cls_b", "decay_type": "classification", "num_layers": 12,
              "decay_rate": 0.8, "weight_decay": 1e-8, "assign": assign, "groups": groups})
# group names repeat a lot: store each case's assignment as indices into its groups
for c in cases:
    index = {g["name"]: i for i, g in enumerate(c["groups"])}
    c["assign"] = [index[a] for a in c["assign"]]
doc = {"models": {k: {"names": [n for n, _ in v], "ranks": [len(s) for _, s in v]} for k, v in models.items()},
       "cases": cases}
with open(os.path.join(OUT, "layer_decay.json"), "w") as f:
    json.dump(doc, f)

# ---------------------------------------------------------------- schedules


def mmcv_step_lr(base_lr, epoch, cur_iter, step, gamma, warmup, warmup_iters, warmup_ratio):
    """StepLrUpdaterHook(by_epoch=True).get_lr + LrUpdaterHook.get_warmup_lr as before_train_iter
    applies them: the regular lr of the epoch, replaced by the warmup lr while cur_iter <
    warmup_iters (at cur_iter == warmup_iters the regular lr is set)."""
    exp = len(step)
    for i, s in enumerate(step):
        if epoch < s:
            exp = i
            break
    regular = base_lr * gamma ** exp
    if warmup is None or cur_iter >= warmup_iters:
        return regular
    if warmup == "linear":
        k = (1 - cur_iter / warmup_iters) * (1 - warmup_ratio)
        return regular * (1 - k)
    if warmup == "constant":
        return regular * warmup_ratio
    k = warmup_ratio ** (1 - cur_iter / warmup_iters)
    return regular * k


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0,
                     warmup_steps=-1):
    """ConvNeXt utils.cosine_scheduler."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_steps > 0:
        warmup_iters = warmup_steps
    if warmup_iters > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = np.array(
        [final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * i / (len(iters)))) for i in iters])
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


sched_cases = []
ipe = 40
points = [(e, i) for e in range(36) for i in (0, 39)] + [(e, i) for e in range(14) for i in range(1, ipe - 1, 3)]
for warmup in ["linear", "constant", "exp", None]:
    cfg = {"policy": "step", "step": [27, 33], "gamma": 0.1, "warmup": warmup, "warmup_iters": 500,
           "warmup_ratio": 0.001}
    vals = [mmcv_step_lr(2e-4, e, e * ipe + i, [27, 33], 0.1, warmup, 500, 0.001) for e, i in points]
    sched_cases.append({"config": cfg, "base_lr": 2e-4, "max_epochs": 36, "iters_per_epoch": ipe, "points": points,
                        "lr": vals})
for (epochs, ipe_c, wep, wst, start) in [(10, 7, 2, -1, 0.0), (300, 2, 20, -1, 0.0), (6, 9, 0, 4, 1e-5),
                                         (5, 3, 0, -1, 0.0), (4, 6, 0, 1, 0.0)]:
    values = cosine_scheduler(4e-3, 1e-6, epochs, ipe_c, warmup_epochs=wep, start_warmup_value=start,
                              warmup_steps=wst)
    pts = [(e, i) for e in range(epochs) for i in range(ipe_c)]
    cfg = {"policy": "cosine", "min_lr": 1e-6, "warmup_epochs": wep, "warmup_steps": max(wst, 0),
           "start_warmup_value": start}
    sched_cases.append({"config": cfg, "base_lr": 4e-3, "max_epochs": epochs, "iters_per_epoch": ipe_c,
                        "points": pts, "lr": [float(values[e * ipe_c + i]) for e, i in pts]})
with open(os.path.join(OUT, "schedule.json"), "w") as f:
    json.dump(sched_cases, f)
print("wrote", sorted(os.listdir(OUT)))
