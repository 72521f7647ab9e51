#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine for building, testing and running the project.
# Idempotent: every step checks first and is skipped when already done.
#   - Debian packages: GStreamer 1.22 (dev, tools, plugins base/good/bad/ugly/libav)
#   - a project-local Python venv (.venv) holding the pinned onnxruntime and torch wheels:
#     their shared libraries are what we load/link; Python is never used at run time
#   - .deps/ links to those libraries and .cargo/config.toml [env] for cargo
# Options (environment):
#   SETUP_TORCH=0   skips torch (only needed by the `train` feature).
#   GPU=1           the GPU build of ONNX Runtime (onnxruntime-gpu, CUDA 13) for the cuda and
#                   tensorrt providers, with the CUDA 13, cuDNN 9 and TensorRT 10 libraries it
#                   loads; .deps/libonnxruntime.so then points at it, and .deps/gpu.env sets the
#                   library path those need (`source .deps/gpu.env` before running).
#   GPU=0           back to the CPU build. Unset: keep the last choice (the CPU build at first).
#   SETUP_TENSORRT=0  with GPU=1, skip the TensorRT libraries (a large download, size not measured here; CUDA still works).
#   ORT_GPU_WHEEL=FILE  install onnxruntime-gpu from this wheel file instead of PyPI (offline).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ORT_VERSION="1.31.1"
TORCH_VERSION="2.11.0"
SETUP_TORCH="${SETUP_TORCH:-1}"
SETUP_TENSORRT="${SETUP_TENSORRT:-1}"
# TensorRT 10: onnxruntime-gpu 1.31's TensorRT provider links libnvinfer.so.10.
TENSORRT_SPEC="tensorrt-cu13-libs>=10.13,<11"
# The GPU build lives in its own folder so the CPU wheel in .venv stays intact (both install
# the same `onnxruntime` package directory).
ORT_GPU_DIR=".venv/ort-gpu"
FLAVOUR_FILE=".deps/ort-flavour"
GPU="${GPU:-}"
if [ -z "$GPU" ]; then
  GPU=0
  [ "$(cat "$FLAVOUR_FILE" 2>/dev/null || true)" = "gpu" ] && GPU=1
fi
case "$GPU" in
  0|1) ;;
  *) echo "setup: error: GPU=$GPU: use GPU=1 (onnxruntime-gpu) or GPU=0 (CPU build)" >&2; exit 1 ;;
esac

say() { printf 'setup: %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------------
DEB_PACKAGES=(
  pkg-config
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python venv with the pinned wheels --------------------------------------------------------
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
# Capture first: with pipefail, `grep -q` closing the pipe early would fail pip with SIGPIPE.
pip_has() {
  local info
  info="$(.venv/bin/python -m pip show "$1" 2>/dev/null)" || return 1
  grep -qx "Version: $2" <<<"$info"
}
if ! pip_has onnxruntime "$ORT_VERSION"; then
  say "installing onnxruntime==$ORT_VERSION"
  .venv/bin/python -m pip install -q --disable-pip-version-check "onnxruntime==$ORT_VERSION"
fi
if [ "$SETUP_TORCH" = "1" ] && ! pip_has torch "$TORCH_VERSION"; then
  # The wheel and its nvidia-* dependencies take about 4.8 GB installed, plus pip's unpacking:
  # say so up front rather than let pip fail half-way with ENOSPC.
  free_kb="$(df -Pk .venv | awk 'NR==2 {print $4}')"
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((7 * 1024 * 1024)) ]; then
    echo "setup: error: torch==$TORCH_VERSION needs about 7 GB free to install into $ROOT/.venv;" \
      "only $((free_kb / 1024 / 1024)) GB free there (SETUP_TORCH=0 skips it: only training needs it)" >&2
    exit 1
  fi
  say "installing torch==$TORCH_VERSION (large, about a minute)"
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION"
fi

# --- links and cargo environment ---------------------------------------------------------------
SITE="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p .deps
if [ "$GPU" = "1" ]; then
  GPU_LIB="$ORT_GPU_DIR/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
  if [ ! -f "$GPU_LIB" ]; then
    src="onnxruntime-gpu==$ORT_VERSION"
    [ -n "${ORT_GPU_WHEEL:-}" ] && src="$ORT_GPU_WHEEL"
    say "installing $src into $ORT_GPU_DIR (about 260 MB)"
    rm -rf "$ORT_GPU_DIR"
    # --no-cache-dir: the wheel is not kept in pip's cache once installed.
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-cache-dir --no-deps \
      --target "$ORT_GPU_DIR" "$src"
  fi
  # What the CUDA provider loads (the torch wheel brings the same ones); TensorRT on request.
  GPU_DEPS=(
    "nvidia-cuda-runtime~=13.0" "nvidia-cuda-nvrtc~=13.0" "nvidia-cublas~=13.0"
    "nvidia-curand~=10.0" "nvidia-cufft~=12.0" "nvidia-cudnn-cu13~=9.0"
  )
  [ "$SETUP_TENSORRT" = "1" ] && GPU_DEPS+=("$TENSORRT_SPEC")
  say "checking the CUDA 13 libraries: ${GPU_DEPS[*]}"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-cache-dir "${GPU_DEPS[@]}"
  ORT_LIB="$ROOT/$GPU_LIB"
  # The provider libraries find CUDA, cuDNN and TensorRT through the loader's search path.
  LIBDIRS=""
  for d in "$SITE/nvidia/cu13/lib" "$SITE/nvidia/cudnn/lib" "$SITE/tensorrt_libs"; do
    [ -d "$d" ] && LIBDIRS="${LIBDIRS:+$LIBDIRS:}$d"
  done
  cat > .deps/gpu.env <<ENV
# Written by scripts/setup.sh (GPU=1): the libraries onnxruntime-gpu's CUDA and TensorRT providers
# and the cuda feature's NVRTC load. Use: source .deps/gpu.env
export LD_LIBRARY_PATH="$LIBDIRS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
  echo gpu > "$FLAVOUR_FILE"
else
  ORT_LIB="$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1 || true)"
  rm -f .deps/gpu.env
  echo cpu > "$FLAVOUR_FILE"
fi
if [ -z "$ORT_LIB" ] || [ ! -f "$ORT_LIB" ]; then
  echo "setup: error: libonnxruntime.so not found (${ORT_LIB:-in $SITE/onnxruntime/capi})" >&2
  exit 1
fi
ln -sfn "$ORT_LIB" .deps/libonnxruntime.so
if [ -d "$SITE/torch" ]; then
  ln -sfn "$SITE/torch" .deps/libtorch
fi

mkdir -p .cargo
CONFIG=".cargo/config.toml"
NEW_CONFIG="$(cat <<TOML
# Written by scripts/setup.sh; do not edit (re-run the script instead).
[env]
# ONNX Runtime shared library, loaded at run time (ort load-dynamic).
ORT_DYLIB_PATH = { value = ".deps/libonnxruntime.so", relative = true }
# libtorch from the pinned torch wheel, for the \`train\` feature (tch).
LIBTORCH = { value = ".deps/libtorch", relative = true }
LIBTORCH_BYPASS_VERSION_CHECK = "0"
TOML
)"
if [ ! -f "$CONFIG" ] || [ "$(cat "$CONFIG")" != "$NEW_CONFIG" ]; then
  printf '%s\n' "$NEW_CONFIG" > "$CONFIG"
  say "wrote $CONFIG"
fi
say "ready (onnxruntime: $ORT_LIB)"
if [ "$GPU" = "1" ]; then
  say "GPU build: run with the CUDA libraries on the search path: source .deps/gpu.env"
fi
