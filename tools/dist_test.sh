#!/usr/bin/env bash
# Distributed testing on N ranks, as mmdetection's tools/dist_test.sh:
#   tools/dist_test.sh CONFIG CHECKPOINT N [nextdet test args...]
# Each rank predicts its share of the test split; rank 0 evaluates and prints (the numbers of one
# process). NEXTDET_MPIRUN_ARGS as for tools/dist_train.sh.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT N [nextdet test args...]" >&2
    exit 2
fi
config=$1
checkpoint=$2
ranks=$3
shift 3
exec "$(dirname "${BASH_SOURCE[0]}")/dist_run.sh" "$ranks" test "$config" "$checkpoint" "$@"
