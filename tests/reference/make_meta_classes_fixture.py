"""Writes tests/fixtures/checkpoints/mmdet_meta_classes.pth: a checkpoint in the layout
mmdetection's `save_checkpoint` writes (`{"meta": {..., "CLASSES": (...)}, "state_dict": ...}`),
so that reading a detector checkpoint's own class names is tested on what torch writes.

Run from the repository root: `/work/ref/bin/python tests/reference/make_meta_classes_fixture.py`.
"""

import os

import torch

OUT = os.path.join("tests", "fixtures", "checkpoints", "mmdet_meta_classes.pth")


def main():
    meta = {"mmdet_version": "2.11.0", "CLASSES": ("person", "traffic light", "teddy bear"), "epoch": 36}
    state = {"backbone.downsample_layers.0.0.bias": torch.zeros(4), "roi_head.bbox_head.fc_cls.bias": torch.ones(4)}
    torch.save({"meta": meta, "state_dict": state}, OUT)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
