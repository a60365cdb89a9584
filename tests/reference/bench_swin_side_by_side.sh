#!/usr/bin/env bash
# Swin-T inference at 224x224, PyTorch (timm, eager) and nextdet alternately, ROUNDS rounds per
# batch size, on the same machine and thread count, with the load average before each round.
# PyTorch runs twice per round: as installed, and with OMP_WAIT_POLICY=PASSIVE (its OpenMP
# threads then sleep instead of spinning, which is much faster when other processes share the
# cores). Shared machines are noisy: compare the medians of the rounds, not one run.
#
# usage: tests/reference/bench_swin_side_by_side.sh /path/to/ref/bin/python [ROUNDS] [THREADS]
set -euo pipefail
py=${1:?path to the reference venv python}
rounds=${2:-5}
threads=${3:-2}
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release --quiet --bin nextdet
for batch in 1 8; do
  iters=$(( batch == 1 ? 20 : 4 ))
  for _ in $(seq "$rounds"); do
    echo "load  $(cut -d' ' -f1-3 /proc/loadavg)"
    "$py" tests/reference/bench_swin_tiny.py --threads "$threads" --batch "$batch" --iters "$iters" 2>/dev/null \
      | grep inference | sed 's/^/torch           /'
    OMP_WAIT_POLICY=PASSIVE "$py" tests/reference/bench_swin_tiny.py --threads "$threads" --batch "$batch" \
      --iters "$iters" 2>/dev/null | grep inference | sed 's/^/torch (passive) /'
    target/release/nextdet --threads "$threads" benchmark configs/imagenet/swin_tiny_1k_224.yaml \
      --batch "$batch" --iters "$iters" --warmup 3 | sed 's/^/nextdet         /'
  done
done
