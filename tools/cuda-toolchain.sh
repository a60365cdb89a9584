#!/usr/bin/env bash
# The CUDA compiler for `cargo build|clippy --features cuda`, without a system CUDA: the CUDA
# 13.0 wheels from PyPI (13.0 is what the driver 580 of our GPU machines runs; PTX from a newer
# nvcc does not load on it), installed once into a virtual environment.
#
#   eval "$(tools/cuda-toolchain.sh)"            # installs if needed, then sets the variables
#   cargo clippy --workspace --all-targets --features cuda -- -D warnings
#
# Prints the exports: CUDA_HOME and NVCC (the compiler candle-kernels and ops/build.rs run),
# CUDA_COMPUTE_CAP (the target GPU generation, 90 = Hopper: no GPU here to ask), PATH.
#
# `--link-stubs` also writes stub libraries (libcuda, libcublas, libcublasLt, libcurand, libnvrtc
# and, with `--nccl`, libnccl) under $CUDA_HOME/lib/stubs with the functions cudarc calls, so that
# a binary links here; it runs where the real libraries are installed (a GPU machine's driver and
# CUDA libraries), never against the stubs.
#
# NEXTDET_CUDA_VENV chooses the environment's folder (default ~/.cache/nextdet/cuda-13.0, which
# a CI cache can keep between runs).
set -euo pipefail

venv="${NEXTDET_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/nextdet/cuda-13.0}"
wheels=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
)
stubs=0
nccl=0
for arg in "$@"; do
    case "$arg" in
        --link-stubs) stubs=1 ;;
        --nccl) nccl=1 ;;
        *) echo "usage: $0 [--link-stubs [--nccl]]" >&2; exit 2 ;;
    esac
done

python=${PYTHON:-python3}
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv" >&2
fi
stamp="$venv/.nextdet-wheels"
if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "${wheels[*]}" ]]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wheels[@]}" >&2
    echo "${wheels[*]}" >"$stamp"
fi
cuda_home="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
[[ -x "$cuda_home/bin/nvcc" ]] || { echo "no nvcc under $cuda_home" >&2; exit 1; }

if [[ $stubs == 1 ]]; then
    # The functions each library exports, read from cudarc's bindings (the crate candle links
    # with); one empty C function per name is enough for the linker.
    registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
    cudarc="$(ls -d "$registry"/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$cudarc" ]] || { echo "cudarc 0.19 is not in $registry: run \`cargo fetch\` first" >&2; exit 1; }
    mkdir -p "$cuda_home/lib/stubs"
    libs=("cuda:libcuda.so.1:driver" "cublas:libcublas.so.13:cublas" "cublasLt:libcublasLt.so.13:cublaslt"
        "curand:libcurand.so.10:curand" "nvrtc:libnvrtc.so.13:nvrtc")
    [[ $nccl == 1 ]] && libs+=("nccl:libnccl.so.2:nccl")
    for entry in "${libs[@]}"; do
        IFS=: read -r name soname dir <<<"$entry"
        src="$cuda_home/lib/stubs/$name.c"
        grep -rhoE 'pub fn [A-Za-z_][A-Za-z0-9_]*\(' "$cudarc/src/$dir/sys" \
            | sed -E 's/pub fn ([A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u >"$src"
        cc -shared -fPIC -o "$cuda_home/lib/stubs/lib$name.so" -Wl,-soname,"$soname" "$src"
    done
fi

cat <<EOF
export CUDA_HOME='$cuda_home'
export CUDA_PATH='$cuda_home'
export NVCC='$cuda_home/bin/nvcc'
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export PATH='$cuda_home/bin':\$PATH
EOF
