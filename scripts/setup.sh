#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine for building, testing and running the project.
# Idempotent: every step checks first and is skipped when already done.
#   - Debian packages: GStreamer 1.22 (dev, tools, plugins base/good/bad/ugly/libav)
#   - a project-local Python venv (.venv) holding the pinned onnxruntime and torch wheels:
#     their shared libraries are what we load/link; Python is never used at run time
#   - .deps/ links to those libraries and .cargo/config.toml [env] for cargo
# Options (environment): SETUP_TORCH=0 skips torch (only needed by the `train` feature).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ORT_VERSION="1.31.1"
TORCH_VERSION="2.11.0"
SETUP_TORCH="${SETUP_TORCH:-1}"

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
  say "installing torch==$TORCH_VERSION (large, about a minute)"
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION"
fi

# --- links and cargo environment ---------------------------------------------------------------
SITE="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p .deps
ORT_LIB="$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1 || true)"
if [ -z "$ORT_LIB" ]; then
  echo "setup: error: libonnxruntime.so not found in $SITE/onnxruntime/capi" >&2
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
