#!/usr/bin/env bash
# Builds the GPU bundle (default gpu-bundle/, ignored by git): everything scripts/gpu-check.sh needs
# on an NVIDIA GPU machine that has no Rust, no GStreamer and no network, in at most 64 MiB (what
# may be carried to such a machine). The machine is expected to bring libtorch with CUDA
# (torch 2.11.0+cu130, e.g. /opt/torch/.venv) and the NVIDIA driver; everything else is here:
#
#   bin/derain            the CLI with the trainer and the GPU frame path (features train,cuda)
#   bin/gst-launch-1.0, bin/gst-inspect-1.0, libexec/gst-plugin-scanner
#   gst-plugins/          libgstderain.so (feature cuda) and the few GStreamer plugins the checks use
#   lib/                  the GStreamer runtime and its dependencies (resolved with ldd, minus
#                         glibc/libstdc++/libgcc, which every Linux has), ONNX Runtime's CPU library
#                         xz-compressed (28 MiB -> 8; gpu-check.sh unpacks it)
#   tests/                the GPU test executables (tests/gpu.rs, tests/train_gpu.rs,
#                         plugins/gst-derain/tests/gpu.rs), run with --ignored
#   models/ configs/      the shipped models, the two stage-1 configs the training check uses
#   clip/ val/            a short re-encoded clip (JPEG frames) and two validation pairs made from it
#   gpu-check.sh          a copy of scripts/gpu-check.sh; MANIFEST: what was built, from which commit
#
# Binaries are stripped, and the build machine's paths (libtorch's rpath, the set-up's ONNX Runtime
# path) are blanked inside them, so nothing in the bundle can find this machine's files by accident:
# what the check script does not put on the library path is missing, here as on the GPU machine.
#
#   scripts/gpu-bundle.sh [DIR]          (make gpu-bundle; GPU_BUNDLE_LIMIT_MIB=64)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUNDLE="${1:-${GPU_BUNDLE:-$ROOT/gpu-bundle}}"
LIMIT_MIB="${GPU_BUNDLE_LIMIT_MIB:-64}"
CARGO="${CARGO:-cargo}"
CLIP_SRC="${GPU_BUNDLE_CLIP:-$ROOT/../shared/data/clean-driving/udacity/highway-1280x720.mp4}"
CLIP_FRAMES="${GPU_BUNDLE_CLIP_FRAMES:-16}"
PY="$ROOT/.venv/bin/python"
GST_LIBDIR="$(pkg-config --variable=libdir gstreamer-1.0 2>/dev/null || echo /usr/lib/x86_64-linux-gnu)"
GST_PLUGINDIR="$(pkg-config --variable=pluginsdir gstreamer-1.0 2>/dev/null || echo "$GST_LIBDIR/gstreamer-1.0")"
GST_SCANNER="$(pkg-config --variable=pluginscannerdir gstreamer-1.0 2>/dev/null || echo "$GST_LIBDIR/gstreamer1.0/gstreamer-1.0")/gst-plugin-scanner"
# The GStreamer plugins the checks' pipelines use: queue/fakesink/capsfilter (coreelements),
# videotestsrc, videoconvert/videoscale, multifilesrc/multifilesink, jpegdec, pngenc.
GST_PLUGINS=(coreelements videotestsrc videoconvertscale multifile jpeg png)
# Libraries every target Linux has in a compatible version: never bundled (glibc, the C++ runtime).
SYSTEM_LIBS_RE='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libutil|libstdc\+\+|libgcc_s)\.so'

say() { printf 'gpu-bundle: %s\n' "$*"; }
die() { printf 'gpu-bundle: error: %s\n' "$*" >&2; exit 1; }

[ -x "$PY" ] || die "$PY is missing: run make setup first"
[ -f "$CLIP_SRC" ] || die "no clip source at $CLIP_SRC (set GPU_BUNDLE_CLIP to a video GStreamer can decode)"
ORT_LIB="$(readlink -f .deps/libonnxruntime.so 2>/dev/null || true)"
[ -f "$ORT_LIB" ] || die ".deps/libonnxruntime.so is missing: run make setup"
if [ "$(cat .deps/ort-flavour 2>/dev/null || echo cpu)" != cpu ]; then
  # The bundle carries the CPU library (the GPU one is the machine's, or too large to carry).
  ORT_LIB="$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1 || true)"
  [ -f "$ORT_LIB" ] || die "the CPU ONNX Runtime library is not in .venv (make setup GPU=0 installs it)"
fi
LIBTORCH_LIB="$(readlink -f .deps/libtorch 2>/dev/null || true)/lib"

# --- build ---------------------------------------------------------------------------------------
# Cargo's JSON messages name each executable; print those of the targets asked for.
executables() { # PACKAGE KIND NAME...  (reads cargo's JSON on stdin)
  "$PY" -c '
import json, sys
pkg, kind, names = sys.argv[1], sys.argv[2], set(sys.argv[3:])
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact":
        continue
    t = m["target"]
    if kind not in t["kind"] or t["name"] not in names:
        continue
    if ("#" + pkg + "@") not in m["package_id"] and ("/" + pkg + "#") not in m["package_id"]:
        continue
    files = [m["executable"]] if m.get("executable") else [f for f in m["filenames"] if f.endswith(".so")]
    for f in files:
        print(t["name"] + "\t" + f)
' "$@"
}
build() { # LABEL CARGO-ARGS...  -> cargo's JSON in $TMPD/LABEL.json
  local label="$1"; shift
  say "cargo $*"
  "$CARGO" "$@" --message-format=json-render-diagnostics > "$TMPD/$label.json" \
    || die "cargo $* failed"
}
TMPD="$(mktemp -d)"
trap 'rm -rf "$TMPD"' EXIT
build derain build --release -p derain --features train,cuda --bin derain
build derain-tests test --release -p derain --features train,cuda --test gpu --test train_gpu --no-run
build plugin build --release -p gst-plugin-derain --features cuda --lib
build plugin-tests test --release -p gst-plugin-derain --features cuda --test gpu --no-run

DERAIN_BIN="$(executables derain bin derain < "$TMPD/derain.json" | cut -f2 | head -n 1)"
PLUGIN_SO="$(executables gst-plugin-derain cdylib gstderain < "$TMPD/plugin.json" | cut -f2 | head -n 1)"
T_GPU="$(executables derain test gpu < "$TMPD/derain-tests.json" | cut -f2 | head -n 1)"
T_TRAIN="$(executables derain test train_gpu < "$TMPD/derain-tests.json" | cut -f2 | head -n 1)"
T_PLUGIN="$(executables gst-plugin-derain test gpu < "$TMPD/plugin-tests.json" | cut -f2 | head -n 1)"
for v in DERAIN_BIN PLUGIN_SO T_GPU T_TRAIN T_PLUGIN; do
  [ -n "${!v}" ] && [ -f "${!v}" ] || die "cargo named no file for $v"
done

# --- assemble --------------------------------------------------------------------------------------
STAGE="$BUNDLE.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,libexec,lib,gst-plugins,tests,models,configs,clip,val}

install -m 755 "$DERAIN_BIN" "$STAGE/bin/derain"
install -m 755 "$T_GPU" "$STAGE/tests/derain-gpu"
install -m 755 "$T_TRAIN" "$STAGE/tests/derain-train_gpu"
install -m 755 "$T_PLUGIN" "$STAGE/tests/gst-derain-gpu"
install -m 644 "$PLUGIN_SO" "$STAGE/gst-plugins/libgstderain.so"
for p in "${GST_PLUGINS[@]}"; do
  [ -f "$GST_PLUGINDIR/libgst$p.so" ] || die "GStreamer plugin libgst$p.so not in $GST_PLUGINDIR"
  install -m 644 "$GST_PLUGINDIR/libgst$p.so" "$STAGE/gst-plugins/"
done
for t in gst-launch-1.0 gst-inspect-1.0; do
  install -m 755 "$(command -v "$t")" "$STAGE/bin/$t"
done
install -m 755 "$GST_SCANNER" "$STAGE/libexec/gst-plugin-scanner"
ORT_NAME="$(basename "$ORT_LIB")"
# ONNX Runtime is stored xz-compressed (28 MiB -> 8): gpu-check.sh unpacks it into its work folder.
say "compressing $ORT_NAME"
xz -T0 -9 -c "$ORT_LIB" > "$STAGE/lib/$ORT_NAME.xz"

# Every shared library the executables and plugins need, except the system's own (ldd resolves
# them here, on Debian 12, against what the set-up installed).
collect_libs() {
  local f dep name
  for f in "$STAGE"/bin/* "$STAGE"/libexec/* "$STAGE"/tests/* "$STAGE"/gst-plugins/*.so; do
    # libtorch is the GPU machine's (its own CUDA build), never bundled; nor ONNX Runtime's deps.
    { LD_LIBRARY_PATH="$LIBTORCH_LIB" ldd "$f" 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// {print $1 "\t" $3}'
  done | sort -u | while IFS=$'\t' read -r name dep; do
    [[ "$name" =~ $SYSTEM_LIBS_RE ]] && continue
    case "$dep" in "$LIBTORCH_LIB"/*|*/site-packages/*) continue ;; esac
    [ -f "$STAGE/lib/$name" ] || install -m 644 "$(readlink -f "$dep")" "$STAGE/lib/$name"
  done
}
collect_libs
# The libraries' own dependencies (one more pass reaches the fixed point for GStreamer's tree).
for _ in 1 2; do
  for f in "$STAGE"/lib/*.so*; do
    [ -L "$f" ] && continue
    case "$f" in *.xz) continue ;; esac
    { LD_LIBRARY_PATH="$STAGE/lib" ldd "$f" 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// {print $1 "\t" $3}'
  done | sort -u | while IFS=$'\t' read -r name dep; do
    [[ "$name" =~ $SYSTEM_LIBS_RE ]] && continue
    [ -f "$STAGE/lib/$name" ] || install -m 644 "$(readlink -f "$dep")" "$STAGE/lib/$name"
  done
done

# Strip (the release profile keeps line tables for backtraces; the bundle has no room for them).
for f in "$STAGE"/bin/* "$STAGE"/libexec/* "$STAGE"/tests/* "$STAGE"/gst-plugins/*.so "$STAGE"/lib/*.so*; do
  [ -L "$f" ] && continue
  case "$f" in *.xz) continue ;; esac
  strip --strip-unneeded "$f" 2>/dev/null || strip "$f" 2>/dev/null || true
done

# Blank this machine's paths inside the binaries (same length, so nothing moves): libtorch's rpath
# (build.rs) and the ONNX Runtime path the set-up baked in (ORT_DYLIB_PATH). On the GPU machine
# they would point nowhere anyway; here they would let a missing library go unnoticed.
"$PY" - "$STAGE" "$LIBTORCH_LIB" "$ROOT/.deps/libonnxruntime.so" "$(readlink -f .deps/libtorch 2>/dev/null || true)/lib" <<'PY'
import os, sys
stage, needles = sys.argv[1], [n for n in sys.argv[2:] if len(n) > 8]
needles = sorted({n.encode() for n in needles}, key=len, reverse=True)
for sub in ("bin", "tests", "gst-plugins"):
    d = os.path.join(stage, sub)
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        data = open(p, "rb").read()
        new = data
        for n in needles:
            blank = (b"/nonexistent-build-path" + b"_" * len(n))[: len(n)]
            new = new.replace(n, blank)
        if new != data:
            open(p, "wb").write(new)
            print(f"gpu-bundle: blanked build-machine paths in {sub}/{name}")
PY

install -m 644 models/*.onnx "$STAGE/models/"
install -m 644 configs/derain-lite-pretrain.toml configs/derain-r9-pretrain.toml "$STAGE/configs/"
install -m 755 scripts/gpu-check.sh "$STAGE/gpu-check.sh"

# The clip: every other frame of the source's first 2*CLIP_FRAMES, re-encoded as JPEG and numbered
# from 0000 (the element reads them with multifilesrc ! jpegdec; the trainer reads the folder).
say "clip: $CLIP_FRAMES JPEG frames from $CLIP_SRC"
mkdir -p "$TMPD/clipall"
gst-launch-1.0 -q filesrc location="$CLIP_SRC" ! decodebin ! videoconvert ! jpegenc quality=85 \
  ! multifilesink location="$TMPD/clipall/%04d.jpg" > "$TMPD/clip.log" 2>&1 \
  || { cat "$TMPD/clip.log" >&2; die "could not decode the clip $CLIP_SRC"; }
n_clip=0
for f in $(ls "$TMPD/clipall" | sort | awk 'NR % 2 == 1'); do
  [ "$n_clip" -ge "$CLIP_FRAMES" ] && break
  cp "$TMPD/clipall/$f" "$STAGE/clip/$(printf '%04d' "$n_clip").jpg"
  n_clip=$((n_clip + 1))
done
[ "$n_clip" -ge 4 ] || die "the clip has $n_clip frames (want at least 4)"
# Two small validation pairs for the training check (the configs validate at their last step).
mkdir -p "$TMPD/valsrc"
cp "$STAGE/clip/0000.jpg" "$STAGE/clip/$(printf '%04d' $((n_clip - 1))).jpg" "$TMPD/valsrc/"
"$DERAIN_BIN" synth --clean "$TMPD/valsrc" --out "$STAGE/val" --preset mixed --seed 7 \
  --downscale 4 > "$TMPD/synth.log" 2>&1 \
  || { cat "$TMPD/synth.log" >&2; die "derain synth could not make the validation pairs"; }

# --- manifest and size -----------------------------------------------------------------------------
glibc_needed="$(for f in "$STAGE"/bin/* "$STAGE"/libexec/* "$STAGE"/tests/* "$STAGE"/gst-plugins/*.so "$STAGE"/lib/*.so*; do
  objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' || true; done | sort -u -V | tail -n 1 | sed 's/GLIBC_//')"
glibcxx_needed="$(for f in "$STAGE"/bin/* "$STAGE"/tests/* "$STAGE"/gst-plugins/*.so "$STAGE"/lib/*.so*; do
  objdump -T "$f" 2>/dev/null | grep -o 'GLIBCXX_[0-9][0-9.]*' || true; done | sort -u -V | tail -n 1 | sed 's/GLIBCXX_//')"
{
  echo "commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src crates plugins build.rs Cargo.toml Cargo.lock 2>/dev/null || echo '+changes')"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "build_host=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
  echo "glibc_needed=$glibc_needed"
  echo "glibcxx_needed=$glibcxx_needed"
  echo "gstreamer=$(pkg-config --modversion gstreamer-1.0 2>/dev/null || echo unknown)"
  echo "onnxruntime=$ORT_NAME"
  echo "torch_built_against=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo unknown)"
  echo "clip_frames=$n_clip"
  echo "clip_source=$(basename "$CLIP_SRC")"
} > "$STAGE/MANIFEST"
(cd "$STAGE" && find . -type f -printf '%s\t%p\n' | sort -k2) > "$STAGE/FILES"

bytes="$(du -sb "$STAGE" | cut -f1)"
mib="$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')"
say "largest files:"
sort -rn "$STAGE/FILES" | head -n 8 | awk '{ printf "  %6.1f MiB  %s\n", $1 / 1048576, $2 }'
if [ "$bytes" -gt $((LIMIT_MIB * 1048576)) ]; then
  die "the bundle ($STAGE) is $mib MiB: over the $LIMIT_MIB MiB that can be carried to the GPU machine"
fi
rm -rf "$BUNDLE"
mv "$STAGE" "$BUNDLE"
say "$BUNDLE: $mib MiB of $LIMIT_MIB MiB (glibc >= $glibc_needed needed on the target)"
say "on the GPU machine: scripts/gpu-check.sh $(basename "$BUNDLE")   (report in \$OUT/gpu-report.md and .json)"
