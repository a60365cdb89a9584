#!/usr/bin/env bash
# Mask R-CNN ConvNeXt-T (FPN, 81 classes, random weights) on 800x1216 inputs: inference on one
# image and a training step on two (forward, losses, backward, AdamW), PyTorch (torchvision's
# MaskRCNN on torchvision's ConvNeXt-T, tests/reference/bench_mask_rcnn.py) and nextdet
# alternately, ROUNDS rounds, same machine and thread count. Also the ConvNeXt-T training step
# at 224, batch 8. Prints one line per run; compare medians across rounds.
#
# usage: tests/reference/bench_detector_side_by_side.sh /path/to/ref/bin/python [ROUNDS] [THREADS]
set -euo pipefail
py=${1:?path to the reference venv python}
rounds=${2:-2}
threads=${3:-2}
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release --quiet --bin nextdet
cfg=configs/mask_rcnn/mask_rcnn_convnext_tiny_fpn_3x_coco.yaml
for _ in $(seq "$rounds"); do
  "$py" tests/reference/bench_mask_rcnn.py --mode infer --threads "$threads" --iters 2 | sed 's/^/torch   /'
  target/release/nextdet --threads "$threads" benchmark "$cfg" --shape 800x1216 --iters 2 --warmup 1 | sed 's/^/nextdet /'
  "$py" tests/reference/bench_mask_rcnn.py --mode train --threads "$threads" --iters 2 | sed 's/^/torch   /'
  target/release/nextdet --threads "$threads" benchmark "$cfg" --mode train --batch 2 --shape 800x1216 --iters 2 --warmup 1 | sed 's/^/nextdet /'
  "$py" tests/reference/bench_convnext_tiny.py --threads "$threads" --train-only --train-iters 3 | grep -E 'train step|peak RSS' | sed 's/^/torch   /'
  target/release/nextdet --threads "$threads" benchmark configs/imagenet/convnext_tiny_1k_224.yaml --mode train --batch 8 --iters 3 --warmup 1 | sed 's/^/nextdet /'
done
