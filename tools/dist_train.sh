#!/usr/bin/env bash
# Data-parallel training on N ranks of one machine, as mmdetection's tools/dist_train.sh:
#   tools/dist_train.sh CONFIG N [nextdet train args...]
# builds the release `nextdet` with MPI support and runs `mpirun -np N nextdet train CONFIG
# --launcher mpi ARGS`. Extra mpirun options (a hostfile for several machines) go in
# NEXTDET_MPIRUN_ARGS, e.g. NEXTDET_MPIRUN_ARGS="--hostfile hosts" tools/dist_train.sh CONFIG 16.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG N [nextdet train args...]" >&2
    exit 2
fi
config=$1
ranks=$2
shift 2
exec "$(dirname "${BASH_SOURCE[0]}")/dist_run.sh" "$ranks" train "$config" "$@"
