#!/usr/bin/env bash
# The ConvNeXt paper's Table 1 columns on this machine, for every config in a folder: parameters
# and FLOPs (`nextdet analyze`, at the config's test size), inference throughput, and a training
# step's throughput and peak memory (`nextdet benchmark --mode train`). Every measurement runs in
# its own process, so that the peak memory is the one model's.
#   tools/benchmark_all.sh configs/imagenet [benchmark options, e.g. --batch 8 --iters 5 --threads 2]
# Classifiers at 384 take minutes per training step on a small CPU: pass fewer --iters there.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 CONFIG_FOLDER [nextdet benchmark options]" >&2
    exit 2
fi
dir=$1
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin nextdet
nextdet="$root/target/release/nextdet"
field() { # field NAME JSON: a number from a one-line JSON document
    sed -n "s/.*\"$1\":\([-0-9.e+]*\).*/\1/p" <<<"$2"
}
printf '%-36s %9s %9s %9s %13s %13s %15s\n' config size params FLOPs "infer img/s" "train img/s" "train peak MiB"
shopt -s nullglob
for cfg in "$dir"/*.yaml; do
    summary=$("$nextdet" analyze "$cfg" --depth 0 --quiet 2>&1 | tail -n 1)
    size=$(sed -n 's/.* at \([0-9]*x[0-9]*\):.*/\1/p' <<<"$summary")
    params=$(sed -n 's/.*: \([0-9.]*[KMG]*\) parameters.*/\1/p' <<<"$summary")
    flops=$(sed -n 's/.*trainable), \([0-9.]*[KMG]*\) FLOPs.*/\1/p' <<<"$summary")
    if [ -z "$size" ]; then
        printf '%-36s %s\n' "$(basename "$cfg" .yaml)" "skipped: $summary"
        continue
    fi
    infer=$("$nextdet" benchmark "$cfg" --shape "$size" --json --quiet "$@")
    train=$("$nextdet" benchmark "$cfg" --shape "$size" --mode train --json --quiet "$@")
    printf '%-36s %9s %9s %9s %13.2f %13.2f %15.0f\n' "$(basename "$cfg" .yaml)" "$size" "$params" "$flops" \
        "$(field images_per_s "$infer")" "$(field images_per_s "$train")" "$(field peak_memory_mib "$train")"
done
