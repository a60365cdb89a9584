#!/usr/bin/env bash
# ConvNeXt-T inference at 224x224: PyTorch (torchvision), ONNX Runtime, nextdet in f32 and
# nextdet in bf16 (`--precision bf16`, where the CPU has AVX-512 BF16) in turn, ROUNDS rounds
# per batch size, on the same machine and thread count. Shared machines are noisy: compare the
# best and the median of the rounds, not one run.
#
# usage: tests/reference/bench_side_by_side.sh /path/to/ref/bin/python [ROUNDS] [THREADS]
set -euo pipefail
py=${1:?path to the reference venv python}
rounds=${2:-5}
threads=${3:-2}
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release --quiet --bin nextdet
for batch in 1 8; do
  iters=$(( batch == 1 ? 20 : 4 ))
  for _ in $(seq "$rounds"); do
    "$py" tests/reference/bench_convnext_tiny.py --threads "$threads" --batch "$batch" --iters "$iters" | grep inference | sed 's/^/torch        /'
    "$py" tests/reference/bench_onnxruntime.py --threads "$threads" --batch "$batch" --iters "$iters" | sed 's/^/onnxruntime  /'
    for precision in f32 bf16; do
      target/release/nextdet --threads "$threads" benchmark configs/imagenet/convnext_tiny_1k_224.yaml \
        --batch "$batch" --iters "$iters" --warmup 3 --precision "$precision" | sed "s/^/nextdet $precision /"
    done
  done
done
