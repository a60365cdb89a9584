#!/usr/bin/env bash
# Installs what `--features mpi` builds and runs with (Debian/Ubuntu): Open MPI (mpirun, mpicc,
# the library) and libclang for rsmpi's bindgen. Does nothing when they are already there.
set -euo pipefail
if command -v mpirun >/dev/null && command -v mpicc >/dev/null && ldconfig -p | grep -q 'libclang'; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openmpi-bin libopenmpi-dev libclang-dev >/dev/null
