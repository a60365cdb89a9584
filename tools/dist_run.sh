#!/usr/bin/env bash
# What tools/dist_train.sh and tools/dist_test.sh share: `dist_run.sh N COMMAND ARGS...` builds the
# release `nextdet` with MPI support and runs `mpirun -np N nextdet COMMAND ARGS --launcher mpi`.
# As root (a container) mpirun needs --allow-run-as-root; with more ranks than cores,
# --oversubscribe. NEXTDET_MPIRUN_ARGS adds mpirun options (--hostfile FILE, --map-by ...).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ranks=$1
shift
if ! command -v mpirun >/dev/null; then
    echo "mpirun not found: run tools/install-mpi.sh (Open MPI) first" >&2
    exit 2
fi
cargo build --release --quiet --features mpi --manifest-path "$root/Cargo.toml" --bin nextdet
args=(-np "$ranks")
if [ "$(id -u)" -eq 0 ]; then
    args+=(--allow-run-as-root)
fi
if [ "$ranks" -gt "$(nproc)" ] && [ -z "${NEXTDET_MPIRUN_ARGS:-}" ]; then
    args+=(--oversubscribe)
fi
# shellcheck disable=SC2206 # the user's options split on spaces, as on a command line
args+=(${NEXTDET_MPIRUN_ARGS:-})
exec mpirun "${args[@]}" "$root/target/release/nextdet" "$@" --launcher mpi
