#!/usr/bin/env bash
# The whole GPU measurement in one call (issue 30), run from the bundle `make gpu-bundle` builds:
#
#   scripts/gpu-check.sh gpu-bundle            on the NVIDIA GPU machine (report in $OUT)
#   GPU_CHECK_CPU=1 scripts/gpu-check.sh DIR   the same script on the CPU (make gpu-check-cpu)
#
# Writes every figure to $OUT/gpu-report.md and $OUT/gpu-report.json (rewritten after each step,
# so a killed run still leaves what it measured) and each step's log to $OUT/logs/. Steps, most
# important first, each under its own time limit inside one budget (GPU_CHECK_BUDGET, 460 s):
#   1. probe: GPU, driver, CUDA, cuDNN, torch, glibc, the bundle's libraries, every ONNX Runtime on
#      the machine with its CUDA / TensorRT provider libraries, and what the element can run;
#   2. the element (bundled GStreamer, ort-library = the CUDA-capable ONNX Runtime found):
#      derain-r9 at 1920x1080 with TensorRT FP16 and CUDA FP32: fps, p99, engine build time,
#      cached start, FP16 against FP32 output (PSNR-Y);
#   3. bad input: no provider library, a missing ONNX Runtime, an unwritable or truncated engine
#      cache, device-id beyond the GPUs present: each a report line, never the end of the script;
#   4. the GPU test executables with --ignored;
#   5. `derain train` steps/s on cuda and cpu for derain-lite and derain-r9, loss agreement;
#   6. the element at the other sizes and for derain-lite.
# Nothing here stops the script: a failed, hung or crashed step is a line in the report.
#
# Environment:
#   OUT               where the report goes (default ./gpu-check-out)
#   TORCH_LIB         libtorch's folder (default /opt/torch/.venv/lib/python3*/site-packages/torch/lib)
#   TORCH_PYTHON      the Python with that torch (default /opt/torch/.venv/bin/python3)
#   GPU_CHECK_ORT     a libonnxruntime.so with the CUDA/TensorRT providers (default: searched for)
#   GPU_CHECK_SEARCH  folders searched for ONNX Runtime besides Python's site-packages
#   GPU_CHECK_BUDGET  seconds for all steps (460 on a GPU, 900 with GPU_CHECK_CPU=1)
#   GPU_CHECK_FRAMES  frames per speed measurement (400; 3 on the CPU)
#   GPU_CHECK_STEPS   training steps per run (40; 4 on the CPU)
#   GPU_CHECK_CPU=1   no GPU: cpu stands in for cuda and tensorrt, figures are the CPU's, and only
#                     the bundle and TORCH_LIB are on the library path (what a GPU run would see)
set -u
# No `set -e`: a failing step is a line in the report, never the end of the report.

T_START_MS="$(date +%s%3N)"
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
SELF_DIR="$(dirname "$SELF")"
if [ $# -ge 1 ]; then
  B="$1"
elif [ -x "$SELF_DIR/bin/derain" ]; then
  B="$SELF_DIR"
else
  B="$SELF_DIR/../gpu-bundle"
fi
if [ ! -x "$B/bin/derain" ]; then
  echo "gpu-check: no bundle at $B (bin/derain missing): run make gpu-bundle and pass its folder" >&2
  exit 2
fi
B="$(cd "$B" && pwd)"
CPU_MODE="${GPU_CHECK_CPU:-0}"
[ "$CPU_MODE" = 1 ] || CPU_MODE=0
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT/logs" || { echo "gpu-check: cannot create $OUT" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)"
LOGS="$OUT/logs"
MD="$OUT/gpu-report.md"
JSON="$OUT/gpu-report.json"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
cleanup() {
  chmod -R u+w "$WORK" 2> /dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'note "interrupted by a signal: the report ends here"; write_json; exit 130' INT TERM

if [ "$CPU_MODE" = 1 ]; then
  MODE=cpu
  BUDGET="${GPU_CHECK_BUDGET:-900}"
  FRAMES="${GPU_CHECK_FRAMES:-3}"
  STEPS="${GPU_CHECK_STEPS:-4}"
  STEPS_SKIP=1
  START_FRAMES=2
  PSNR_FRAMES=2
else
  MODE=gpu
  BUDGET="${GPU_CHECK_BUDGET:-460}"
  FRAMES="${GPU_CHECK_FRAMES:-400}"
  STEPS="${GPU_CHECK_STEPS:-40}"
  STEPS_SKIP=5
  START_FRAMES=5
  PSNR_FRAMES=6
fi
SIZES="${GPU_CHECK_SIZES:-1920x1080 1280x720}"
KEY_SIZE="${SIZES%% *}"

# --- report ---------------------------------------------------------------------------------------
: > "$WORK/figures.tsv"
: > "$WORK/steps.tsv"
: > "$WORK/notes.txt"
: > "$MD"
md() { printf '%s\n' "$*" >> "$MD"; }
# A figure: a key and its value (a number stays a number in the JSON).
fig() { printf '%s\t%s\n' "$1" "$(printf '%s' "$2" | tr '\t\n\r' '   ')" >> "$WORK/figures.tsv"; }
figv() { awk -F'\t' -v k="$1" '$1 == k { v = $2 } END { print v }' "$WORK/figures.tsv"; }
# A line worth reading first (something missing, failed or a goal missed).
note() {
  md "- **$***"
  note_only "$@"
}
# The same, when the report already has the line.
note_only() {
  printf '%s\n' "$*" >> "$WORK/notes.txt"
  echo "gpu-check: $*" >&2
}
json_str() {
  local s="$1"
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="$(printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037' | tr '\t\n\r' '   ')"
  printf '"%s"' "$s"
}
json_val() {
  if [[ "$1" =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then
    printf '%s' "$1"
  elif [ "$1" = true ] || [ "$1" = false ]; then
    printf '%s' "$1"
  else
    json_str "$1"
  fi
}
write_json() {
  local now first k v name status secs detail
  now="$(date +%s%3N)"
  {
    printf '{\n  "schema": 1,\n  "mode": "%s",\n' "$MODE"
    printf '  "elapsed_s": %s,\n' "$(awk -v a="$T_START_MS" -v b="$now" 'BEGIN { printf "%.1f", (b - a) / 1000 }')"
    printf '  "budget_s": %s,\n  "bundle": {' "$BUDGET"
    first=1
    while IFS='=' read -r k v; do
      [ -n "$k" ] || continue
      [ $first = 1 ] || printf ','
      first=0
      printf '\n    %s: %s' "$(json_str "$k")" "$(json_str "$v")"
    done < "$B/MANIFEST"
    printf '\n  },\n  "figures": {'
    first=1
    # The last value of each key, in first-seen order.
    while IFS=$'\t' read -r k v; do
      [ $first = 1 ] || printf ','
      first=0
      printf '\n    %s: %s' "$(json_str "$k")" "$(json_val "$v")"
    done < <(awk -F'\t' '!($1 in v) { order[++n] = $1 } { v[$1] = $2 } END { for (i = 1; i <= n; i++) print order[i] "\t" v[order[i]] }' "$WORK/figures.tsv")
    printf '\n  },\n  "steps": ['
    first=1
    while IFS=$'\t' read -r name status secs detail; do
      [ $first = 1 ] || printf ','
      first=0
      printf '\n    {"name": %s, "status": %s, "seconds": %s, "detail": %s}' \
        "$(json_str "$name")" "$(json_str "$status")" "$(json_val "$secs")" "$(json_str "$detail")"
    done < "$WORK/steps.tsv"
    printf '\n  ],\n  "notes": ['
    first=1
    while IFS= read -r v; do
      [ $first = 1 ] || printf ','
      first=0
      printf '\n    %s' "$(json_str "$v")"
    done < "$WORK/notes.txt"
    printf '\n  ]\n}\n'
  } > "$JSON.tmp" && mv "$JSON.tmp" "$JSON"
}

elapsed_s() { echo $((($(date +%s%3N) - T_START_MS) / 1000)); }

# run_step NAME LIMIT CMD...: runs CMD under `timeout` (capped by what is left of the budget),
# its output in $LOGS/NAME.log. Sets RC (124: timed out, 128+N: killed by signal N, -1: skipped),
# SECS and LOG; records the step. Never exits the script.
RC=0
SECS=0
LOG=/dev/null
run_step() {
  local name="$1" limit="$2" left t0 status detail
  shift 2
  LOG="$LOGS/$name.log"
  left=$((BUDGET - $(elapsed_s)))
  if [ "$left" -lt 8 ]; then
    RC=-1
    SECS=0
    printf '%s\tskipped\t0\tout of time (budget %s s)\n' "$name" "$BUDGET" >> "$WORK/steps.tsv"
    echo "skipped: out of time" > "$LOG"
    return 1
  fi
  [ "$limit" -gt $((left - 3)) ] && limit=$((left - 3))
  echo "gpu-check: [$(elapsed_s)s] $name (limit ${limit}s)" >&2
  t0="$(date +%s%3N)"
  timeout -k 5 "$limit" "$@" > "$LOG" 2>&1 < /dev/null
  RC=$?
  SECS="$(awk -v a="$t0" -v b="$(date +%s%3N)" 'BEGIN { printf "%.2f", (b - a) / 1000 }')"
  case "$RC" in
    0) status=ok detail="" ;;
    124 | 137) status=timeout detail="killed after ${limit} s" ;;
    *) if is_signal "$RC"; then status=crashed detail="signal $((RC - 128))"; else status=failed detail="exit $RC"; fi ;;
  esac
  [ "$status" = ok ] || detail="$detail: $(error_line "$LOG")"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$SECS" "$detail" >> "$WORK/steps.tsv"
  # Keep logs small enough to come back.
  if [ "$(stat -c %s "$LOG" 2> /dev/null || echo 0)" -gt 2000000 ]; then
    { head -c 500000 "$LOG"; echo; echo "[... cut ...]"; tail -c 1000000 "$LOG"; } > "$LOG.cut" && mv "$LOG.cut" "$LOG"
  fi
  [ "$RC" = 0 ]
}
# Killed by a signal (timeout reports 128+N; gst-launch's own error exit is 255, not a signal).
is_signal() { [ "$1" -gt 128 ] && [ "$1" -le 192 ]; }
# The first line of a log that says what went wrong (for GStreamer, the element's own reason).
error_line() {
  local l
  l="$(awk '/^Additional debug info:/ { getline; getline; print; exit }' "$1" 2> /dev/null)"
  if [ -n "$l" ]; then
    printf '%s' "${l:0:300}"
    return
  fi
  l="$(grep -m1 -E '^ERROR|^error|panicked|Error:|error:|cannot|not found|No such file' "$1" 2> /dev/null)"
  [ -n "$l" ] || l="$(grep -v '^\s*$' "$1" 2> /dev/null | tail -n 1)"
  printf '%s' "${l:0:300}"
}
# What happened to a step, in words: "ran", "refused: why", "HUNG", "CRASHED".
outcome() {
  case "$RC" in
    0) echo "ran (exit 0)" ;;
    -1) echo "skipped (out of time)" ;;
    124 | 137) echo "HUNG: killed after ${SECS} s" ;;
    *) if is_signal "$RC"; then echo "CRASHED: signal $((RC - 128)): $(error_line "$LOG")"; else echo "refused (exit $RC): $(error_line "$LOG")"; fi ;;
  esac
}

# --- environment: only the bundle, libtorch and the CUDA libraries --------------------------------
if [ -z "${TORCH_LIB:-}" ]; then
  for d in /opt/torch/.venv/lib/python3*/site-packages/torch/lib; do
    [ -d "$d" ] && TORCH_LIB="$d"
  done
fi
TORCH_LIB="${TORCH_LIB:-/opt/torch/.venv/lib/python3/site-packages/torch/lib}"
TORCH_PYTHON="${TORCH_PYTHON:-/opt/torch/.venv/bin/python3}"
TORCH_SITE="$(dirname "$(dirname "$TORCH_LIB")")"
# The CUDA, cuDNN and NVRTC libraries the torch wheel brought (the ONNX Runtime CUDA provider and
# the element's NVRTC kernels load them by name).
CUDA_LIBS=""
for d in "$TORCH_SITE"/nvidia/*/lib "$TORCH_SITE"/tensorrt_libs; do
  [ -d "$d" ] && CUDA_LIBS="${CUDA_LIBS:+$CUDA_LIBS:}$d"
done
INHERITED_LD="${LD_LIBRARY_PATH:-}"
set_ld_path() { # extra dirs first after the bundle (the ONNX Runtime's own CUDA libraries)
  local p="$B/lib:$TORCH_LIB"
  [ -n "${1:-}" ] && p="$p:$1"
  [ -n "$CUDA_LIBS" ] && p="$p:$CUDA_LIBS"
  # On the GPU machine keep what it sets (e.g. /usr/local/cuda); on the CPU, nothing else.
  [ "$CPU_MODE" = 0 ] && [ -n "$INHERITED_LD" ] && p="$p:$INHERITED_LD"
  export LD_LIBRARY_PATH="$p"
}
set_ld_path ""
unset GST_PLUGIN_PATH GST_PLUGIN_SYSTEM_PATH GST_PLUGIN_SCANNER GST_REGISTRY
export GST_PLUGIN_SYSTEM_PATH_1_0="$B/gst-plugins"
export GST_PLUGIN_PATH_1_0=""
export GST_PLUGIN_SCANNER_1_0="$B/libexec/gst-plugin-scanner"
export GST_REGISTRY_1_0="$WORK/gst-registry.bin"
export XDG_CACHE_HOME="$WORK/cache"
export RUST_BACKTRACE=1
export RUST_LOG="${RUST_LOG:-info}"
# ONNX Runtime's CPU library travels xz-compressed: unpacked here (xz, else Python's lzma).
CPU_ORT=""
for z in "$B"/lib/libonnxruntime.so.*.xz; do
  [ -f "$z" ] || continue
  mkdir -p "$WORK/ort"
  CPU_ORT="$WORK/ort/$(basename "$z" .xz)"
  if ! { command -v xz > /dev/null 2>&1 && xz -dc "$z" > "$CPU_ORT"; }; then
    for py in "$TORCH_PYTHON" python3; do
      LD_LIBRARY_PATH="$INHERITED_LD" "$py" -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as i, open(sys.argv[2], "wb") as o: shutil.copyfileobj(i, o)' "$z" "$CPU_ORT" 2> /dev/null && break
    done
  fi
done
if [ -z "$CPU_ORT" ] || [ ! -s "$CPU_ORT" ]; then
  UNPACK_ERROR="the bundle's ONNX Runtime (lib/libonnxruntime.so.*.xz) could not be unpacked (no xz, no Python lzma)"
  CPU_ORT="$B/lib/libonnxruntime.so"
fi
export DERAIN_ORT_LIBRARY="$CPU_ORT"
unset ORT_DYLIB_PATH
DERAIN="$B/bin/derain"
GST_LAUNCH="$B/bin/gst-launch-1.0"

md "# GPU check report"
md ""
md "- mode: **$MODE**$([ "$CPU_MODE" = 1 ] && echo ' (GPU_CHECK_CPU=1: cpu stands in for cuda and tensorrt; figures are the CPU'"'"'s)')"
md "- host: $(hostname 2> /dev/null), $(. /etc/os-release 2> /dev/null && echo "$PRETTY_NAME"), kernel $(uname -r), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
md "- started: $(date -u +%Y-%m-%dT%H:%M:%SZ); budget ${BUDGET} s; bundle $B ($(tr '\n' ' ' < "$B/MANIFEST"))"
md "- library path: \`$LD_LIBRARY_PATH\`"
fig run.mode "$MODE"
fig run.host "$(hostname 2> /dev/null)"
fig run.started "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
fig run.frames_per_measurement "$FRAMES"
[ -n "${UNPACK_ERROR:-}" ] && note "$UNPACK_ERROR: every ONNX Runtime step on the CPU will fail"
write_json

# --- 1. probe ---------------------------------------------------------------------------------------
md ""
md "## Probe"
GPU_COUNT=0
GPU_NAME=""
if command -v nvidia-smi > /dev/null 2>&1; then
  if run_step probe-nvidia-smi 30 env LD_LIBRARY_PATH="$INHERITED_LD" nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv,noheader; then
    GPU_COUNT="$(grep -c . "$LOG")"
    GPU_NAME="$(head -n 1 "$LOG" | cut -d, -f2 | sed 's/^ *//')"
    DRIVER="$(head -n 1 "$LOG" | cut -d, -f3 | tr -d ' ')"
    fig probe.gpu.name "$GPU_NAME"
    fig probe.gpu.count "$GPU_COUNT"
    fig probe.gpu.memory "$(head -n 1 "$LOG" | cut -d, -f4 | sed 's/^ *//')"
    fig probe.gpu.compute_capability "$(head -n 1 "$LOG" | cut -d, -f5 | tr -d ' ')"
    fig probe.driver "$DRIVER"
    md "- GPUs: $GPU_COUNT: $(tr '\n' ';' < "$LOG")"
    LD_LIBRARY_PATH="$INHERITED_LD" timeout 20 nvidia-smi > "$LOGS/probe-nvidia-smi-full.log" 2>&1
    CUDA_DRV="$(grep -o 'CUDA Version: *[0-9.]*' "$LOGS/probe-nvidia-smi-full.log" | grep -o '[0-9.]*$')"
    fig probe.driver_cuda_max "$CUDA_DRV"
    # CUDA 13.0 (torch cu130, onnxruntime-gpu for CUDA 13) needs a 580 driver or newer.
    if [ "${DRIVER%%.*}" -ge 580 ] 2> /dev/null; then
      md "- driver $DRIVER (runs CUDA up to ${CUDA_DRV:-?}): new enough for CUDA 13 (580 or newer)"
      fig probe.driver_ok_for_cuda13 true
    else
      note "driver $DRIVER is too old for CUDA 13 (needs 580 or newer; it runs CUDA up to ${CUDA_DRV:-?}): CUDA 13 steps below are expected to fail"
      fig probe.driver_ok_for_cuda13 false
    fi
  else
    note "nvidia-smi failed ($(outcome)): no usable GPU driver"
  fi
else
  note "no nvidia-smi on this machine: no NVIDIA driver, so nothing runs on a GPU here"
  fig probe.gpu.count 0
fi
if [ -r /proc/driver/nvidia/version ]; then
  md "- kernel driver: $(head -n 1 /proc/driver/nvidia/version)"
fi
GLIBC="$(getconf GNU_LIBC_VERSION 2> /dev/null | awk '{ print $2 }')"
GLIBC_NEED="$(sed -n 's/^glibc_needed=//p' "$B/MANIFEST")"
fig probe.glibc "$GLIBC"
if [ -n "$GLIBC" ] && [ -n "$GLIBC_NEED" ] && [ "$(printf '%s\n%s\n' "$GLIBC_NEED" "$GLIBC" | sort -V | head -n 1)" != "$GLIBC_NEED" ]; then
  note "glibc $GLIBC here, the bundle needs $GLIBC_NEED: bundled programs will not start"
else
  md "- glibc $GLIBC (bundle needs $GLIBC_NEED)"
fi

# torch: version, CUDA, cuDNN, whether it sees the GPU.
if [ -x "$TORCH_PYTHON" ]; then
  # shellcheck disable=SC2016
  run_step probe-torch 120 env LD_LIBRARY_PATH="$INHERITED_LD" "$TORCH_PYTHON" -c '
import torch
print("torch=" + torch.__version__)
print("torch_cuda=" + str(torch.version.cuda))
print("cudnn=" + str(torch.backends.cudnn.version()))
ok = torch.cuda.is_available()
print("cuda_available=" + str(ok).lower())
print("cuda_devices=" + str(torch.cuda.device_count() if ok else 0))
if ok:
    print("device0=" + torch.cuda.get_device_name(0))
'
  for k in torch torch_cuda cudnn cuda_available cuda_devices device0; do
    v="$(sed -n "s/^$k=//p" "$LOG" | tail -n 1)"
    [ -n "$v" ] && fig "probe.torch.$k" "$v"
  done
  md "- torch ($TORCH_PYTHON): $(tr '\n' ' ' < "$LOG" | cut -c1-400)"
else
  note "no Python at $TORCH_PYTHON (TORCH_PYTHON): torch, CUDA and cuDNN versions unread"
fi
if [ -f "$TORCH_LIB/libtorch.so" ]; then
  md "- libtorch: $TORCH_LIB ($([ -f "$TORCH_LIB/libtorch_cuda.so" ] && echo 'with CUDA' || echo 'CPU only'))"
  fig probe.torch_lib "$TORCH_LIB"
  fig probe.torch_lib_cuda "$([ -f "$TORCH_LIB/libtorch_cuda.so" ] && echo true || echo false)"
else
  note "no libtorch.so in $TORCH_LIB (TORCH_LIB): derain train and the training test cannot start"
fi
for f in "$TORCH_SITE"/nvidia/cudnn/lib/libcudnn.so.*; do
  [ -f "$f" ] && fig probe.cudnn_library "$(basename "$f")" && break
done

# The bundle's own libraries: anything still missing with this library path?
: > "$WORK/missing.txt"
: > "$WORK/outside.txt"
# Libraries every Linux has (never bundled); anything else should come from the bundle or torch.
SYSTEM_LIBS_RE='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libutil|libstdc\+\+|libgcc_s)\.so'
for f in "$B"/bin/* "$B"/libexec/* "$B"/tests/* "$B"/gst-plugins/*.so "$B"/lib/*.so* "$CPU_ORT"; do
  [ -L "$f" ] && continue
  case "$f" in *.xz) continue ;; esac
  [ -f "$f" ] || continue
  timeout 20 ldd "$f" > "$WORK/ldd.txt" 2> /dev/null
  awk -v f="${f#"$B"/}" '/not found/ { print f ": " $1 }' "$WORK/ldd.txt" >> "$WORK/missing.txt"
  awk '$2 == "=>" && $3 ~ /^\// { print $1 " " $3 }' "$WORK/ldd.txt" | while read -r name path; do
    [[ "$name" =~ $SYSTEM_LIBS_RE ]] && continue
    case "$path" in "$B"/* | "$TORCH_SITE"/*) continue ;; esac
    echo "$name from $path"
  done >> "$WORK/outside.txt"
done
sort -u -o "$WORK/outside.txt" "$WORK/outside.txt"
cp "$WORK/missing.txt" "$LOGS/probe-missing-libraries.log"
cp "$WORK/outside.txt" "$LOGS/probe-libraries-from-outside.log"
fig probe.libraries_from_outside "$(tr '\n' ';' < "$WORK/outside.txt")"
if [ -s "$WORK/outside.txt" ]; then
  if [ "$CPU_MODE" = 1 ]; then
    note "the bundle is incomplete: the build machine's own libraries filled in: $(tr '\n' ';' < "$WORK/outside.txt" | cut -c1-600)"
  else
    md "- libraries the machine provides (not bundled): $(tr '\n' ';' < "$WORK/outside.txt" | cut -c1-600)"
  fi
fi
if [ -s "$WORK/missing.txt" ]; then
  note "libraries missing for the bundle: $(tr '\n' ';' < "$WORK/missing.txt" | cut -c1-600)"
  fig probe.bundle_missing_libraries "$(awk '{ print $2 }' "$WORK/missing.txt" | sort -u | tr '\n' ' ')"
else
  md "- bundle: every library its programs and plugins link is found (bundle, libtorch, system)"
  fig probe.bundle_missing_libraries ""
fi
if run_step probe-gst-inspect 60 "$B/bin/gst-inspect-1.0" derain; then
  md "- GStreamer $("$B/bin/gst-inspect-1.0" --version 2> /dev/null | sed -n 2p | awk '{ print $2 }') from the bundle: the derain element loads"
else
  note "the derain element does not load from the bundle ($(outcome)); the element steps will fail"
fi

# Every ONNX Runtime on the machine, and whether its folder holds the GPU provider libraries.
python_roots() {
  local py
  for py in "$TORCH_PYTHON" python3 /usr/bin/python3 /usr/local/bin/python3; do
    command -v "$py" > /dev/null 2>&1 || [ -x "$py" ] || continue
    LD_LIBRARY_PATH="$INHERITED_LD" timeout 20 "$py" -c 'import site, sys
print("\n".join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))' 2> /dev/null
  done
}
SEARCH="${GPU_CHECK_SEARCH:-/opt /usr/local /usr/lib /root /home /workspace /venv /srv}"
python_roots | grep '^/' | sort -u | while read -r d; do [ -d "$d" ] && echo "$d"; done > "$WORK/roots-python.txt"
# shellcheck disable=SC2086
for d in $SEARCH; do [ -d "$d" ] && echo "$d"; done > "$WORK/roots-wide.txt"
ort_names=(\( -name 'libonnxruntime.so*' -o -name 'libonnxruntime_providers_*.so' -o -name 'libnvinfer.so*' \) -print)
: > "$WORK/found-all.txt"
# Python's own folders first (quick), then the wide search (its own time limit).
for r in python wide; do
  [ -s "$WORK/roots-$r.txt" ] || continue
  # shellcheck disable=SC2046
  run_step "probe-find-ort-$r" 60 find $(cat "$WORK/roots-$r.txt") -xdev -maxdepth 9 "${ort_names[@]}"
  cat "$LOG" >> "$WORK/found-all.txt"
done
grep '^/' "$WORK/found-all.txt" | grep -v -e "^$B/" -e "^$WORK/" | sort -u > "$WORK/found.txt"
cp "$WORK/found.txt" "$LOGS/probe-found.log"
GPU_ORT="${GPU_CHECK_ORT:-}"
HAS_TRT_LIB=0
grep -q '/libnvinfer\.so' "$WORK/found.txt" && HAS_TRT_LIB=1
fig probe.tensorrt_libraries_found "$([ $HAS_TRT_LIB = 1 ] && grep '/libnvinfer\.so' "$WORK/found.txt" | head -n 3 | tr '\n' ' ' || echo none)"
n_ort=0
best=0
while read -r lib; do
  [ -f "$lib" ] && [ ! -L "$lib" ] || continue
  case "$(basename "$lib")" in libonnxruntime.so.[0-9]*) ;; *) continue ;; esac
  d="$(dirname "$lib")"
  n_ort=$((n_ort + 1))
  cuda=no
  trt=no
  [ -f "$d/libonnxruntime_providers_cuda.so" ] && cuda=yes
  [ -f "$d/libonnxruntime_providers_tensorrt.so" ] && trt=yes
  md "- ONNX Runtime $(basename "$lib" | sed 's/libonnxruntime.so.//') at $lib: CUDA provider $cuda, TensorRT provider $trt"
  score=0
  [ $cuda = yes ] && score=2
  [ $trt = yes ] && score=$((score + 1))
  if [ -z "${GPU_CHECK_ORT:-}" ] && [ $score -gt $best ]; then
    best=$score
    GPU_ORT="$lib"
  fi
done < "$WORK/found.txt"
# Provider libraries without a libonnxruntime.so beside them cannot be loaded by the element.
grep 'libonnxruntime_providers_cuda.so$' "$WORK/found.txt" | while read -r p; do
  ls "$(dirname "$p")"/libonnxruntime.so.[0-9]* > /dev/null 2>&1 \
    || note "$p has no libonnxruntime.so beside it (a Python-only build): the element cannot use it"
done
fig probe.ort_libraries_found "$n_ort"
if [ -n "$GPU_ORT" ]; then
  GPU_ORT_DIR="$(dirname "$GPU_ORT")"
  fig probe.ort.gpu_library "$GPU_ORT"
  # Its own CUDA libraries (a wheel's site-packages/nvidia/*/lib), if it brought any.
  ORT_SITE="$(dirname "$(dirname "$GPU_ORT_DIR")")"
  extra=""
  for d in "$ORT_SITE"/nvidia/*/lib "$ORT_SITE"/tensorrt_libs; do
    [ -d "$d" ] && [ "$ORT_SITE" != "$TORCH_SITE" ] && extra="${extra:+$extra:}$d"
  done
  set_ld_path "$extra"
  for p in cuda tensorrt; do
    so="$GPU_ORT_DIR/libonnxruntime_providers_$p.so"
    [ -f "$so" ] || continue
    miss="$(timeout 20 ldd "$so" 2> /dev/null | awk '/not found/ { print $1 }' | tr '\n' ' ')"
    fig "probe.ort.${p}_provider_missing" "$miss"
    [ -n "$miss" ] && note "ONNX Runtime's $p provider ($so) cannot load: missing $miss"
  done
else
  note "no ONNX Runtime with the CUDA or TensorRT provider on this machine (searched Python's site-packages and $SEARCH): the element runs on the CPU only; its GPU figures are unmeasured"
fi

# What the element can run: a session on each provider through `derain inspect`.
CAN_CUDA=0
CAN_TRT=0
for p in cuda tensorrt; do
  lib="${GPU_ORT:-$CPU_ORT}"
  if run_step "probe-provider-$p" 90 "$DERAIN" inspect "$B/models/derain-lite.onnx" --provider "$p" --ort-library "$lib"; then
    [ $p = cuda ] && CAN_CUDA=1
    [ $p = tensorrt ] && CAN_TRT=1
    md "- provider $p: a session starts (ONNX Runtime $lib)"
    fig "probe.element.$p" true
  else
    md "- provider $p: cannot start: $(outcome)"
    fig "probe.element.$p" false
    fig "probe.element.${p}_why" "$(outcome)"
  fi
done
ELEMENT_CAN="cpu"
[ $CAN_CUDA = 1 ] && ELEMENT_CAN="$ELEMENT_CAN, cuda"
[ $CAN_TRT = 1 ] && ELEMENT_CAN="$ELEMENT_CAN, tensorrt"
md "- **the element can run: $ELEMENT_CAN**$([ $CAN_CUDA = 1 ] || [ $CAN_TRT = 1 ] || echo ' (no GPU provider: the GPU element figures below are unmeasured)')"
fig probe.element.can_run "$ELEMENT_CAN"
write_json

# Providers the element steps use: the real ones on a GPU, the CPU standing in with GPU_CHECK_CPU.
ELEMENT_ORT="${GPU_ORT:-$CPU_ORT}"
CONFIGS=""
if [ "$CPU_MODE" = 1 ]; then
  CONFIGS="tensorrt-fp16 cuda-fp32"
  ELEMENT_ORT="$CPU_ORT"
else
  [ $CAN_TRT = 1 ] && CONFIGS="tensorrt-fp16"
  [ $CAN_CUDA = 1 ] && CONFIGS="${CONFIGS:+$CONFIGS }cuda-fp32"
fi
config_provider() {
  if [ "$CPU_MODE" = 1 ]; then echo cpu; else case "$1" in tensorrt-*) echo tensorrt ;; cuda-*) echo cuda ;; *) echo cpu ;; esac; fi
}
config_fp16() { case "$1" in *-fp16) echo true ;; *) echo false ;; esac; }

# --- the element --------------------------------------------------------------------------------
# derain_launch NAME LIMIT MODEL PROVIDER FP16 CACHE W H FRAMES [element properties...]
#   videotestsrc -> NV12 WxH -> queue -> derain -> fakesink, frames as fast as they go.
derain_launch() {
  local name="$1" limit="$2" model="$3" provider="$4" fp16="$5" cache="$6" w="$7" h="$8" n="$9"
  shift 9
  run_step "$name" "$limit" "$GST_LAUNCH" -m videotestsrc num-buffers="$n" \
    ! "video/x-raw,format=NV12,width=$w,height=$h,framerate=30/1" ! queue max-size-buffers=4 \
    ! derain model="\"$model\"" provider="$provider" trt-fp16="$fp16" trt-cache-dir="\"$cache\"" \
    ort-library="\"$ELEMENT_ORT\"" stats-interval=20 rain-level=false "$@" \
    ! fakesink sync=false
}
# Figures from a derain_launch log: "fps p99_ms mean_ms frames provider".
launch_figures() {
  local n="$1" exec_s stats
  exec_s="$(grep -o 'Execution ended after [0-9:.]*' "$LOG" | tail -n 1 | awk '{ split($4, t, ":"); print t[1] * 3600 + t[2] * 60 + t[3] }')"
  stats="$(grep 'derain-stats' "$LOG" | tail -n 1)"
  field() { printf '%s' "$stats" | grep -o "$1=([a-z0-9]*)[^,;]*" | head -n 1 | sed 's/.*)//; s/"//g'; }
  awk -v e="${exec_s:-0}" -v n="$n" -v p99="$(field inference-p99-ms)" -v mean="$(field inference-mean-ms)" \
    -v fr="$(field frames-processed)" -v prov="$(field active-provider)" \
    'BEGIN { fps = (e > 0 && n > 1) ? (n - 1) / e : 0; printf "%.1f %.2f %.2f %s %s\n", fps, p99, mean, fr, (prov == "" ? "?" : prov) }'
}

# One model, size and provider: first start (engines built), speed, cached start.
measure_element() { # MODEL_NAME SIZE CONFIG
  local m="$1" size="$2" cfg="$3" w h model provider fp16 cache key first cached f
  w="${size%x*}"
  h="${size#*x}"
  model="$B/models/$m.onnx"
  provider="$(config_provider "$cfg")"
  fp16="$(config_fp16 "$cfg")"
  cache="$WORK/engines/$m-$size-$cfg"
  mkdir -p "$cache"
  key="element.$m.$size.$cfg"
  first=""
  case "$cfg" in tensorrt-*)
    # An empty cache: this start builds the TensorRT engines.
    if derain_launch "first-$m-$size-$cfg" 300 "$model" "$provider" "$fp16" "$cache" "$w" "$h" "$START_FRAMES"; then
      first="$SECS"
      fig "$key.first_start_s" "$first"
      fig "$key.engines_cached" "$(find "$cache" -type f | wc -l)"
    else
      note "$m $size $cfg: the first start failed: $(outcome)"
      fig "$key.error" "$(outcome)"
      md "| $m | $size | $cfg | failed: $(outcome) | | | | |"
      write_json
      return 1
    fi ;;
  esac
  if derain_launch "speed-$m-$size-$cfg" 180 "$model" "$provider" "$fp16" "$cache" "$w" "$h" "$FRAMES"; then
    read -r fps p99 mean frames active <<< "$(launch_figures "$FRAMES")"
    fig "$key.fps" "$fps"
    fig "$key.p99_ms" "$p99"
    fig "$key.mean_ms" "$mean"
    fig "$key.frames_in_window" "$frames"
    fig "$key.active_provider" "$active"
    fig "$key.run_s" "$SECS"
  else
    note "$m $size $cfg: the speed run failed: $(outcome)"
    fig "$key.error" "$(outcome)"
    md "| $m | $size | $cfg | failed: $(outcome) | | | | |"
    write_json
    return 1
  fi
  cached=""
  if [ -n "$first" ] && derain_launch "cached-$m-$size-$cfg" 120 "$model" "$provider" "$fp16" "$cache" "$w" "$h" "$START_FRAMES"; then
    cached="$SECS"
    fig "$key.cached_start_s" "$cached"
    f="$(awk -v a="$first" -v b="$cached" 'BEGIN { printf "%.1f", a - b }')"
    fig "$key.engine_build_s" "$f"
  fi
  md "| $m | $size | $cfg ($active) | $fps | $p99 | $mean | ${first:+$first s / ${cached:-?} s} | ${f:-} |"
  write_json
}

# FP16 against FP32 (and the GPU's FP32 against the CPU's) on the clip, PSNR-Y of the outputs.
clip_outputs() { # LABEL MODEL PROVIDER FP16 CACHE W H ORT
  local label="$1" model="$2" provider="$3" fp16="$4" cache="$5" w="$6" h="$7" ort="$8" dir
  dir="$WORK/psnr/$label"
  mkdir -p "$dir"
  run_step "clip-$label" 240 "$GST_LAUNCH" multifilesrc location="\"$B/clip/%04d.jpg\"" index=0 \
    stop-index=$((PSNR_FRAMES - 1)) caps="\"image/jpeg,framerate=15/1\"" ! jpegdec ! videoconvert ! videoscale \
    ! "video/x-raw,format=NV12,width=$w,height=$h" \
    ! derain model="\"$model\"" provider="$provider" trt-fp16="$fp16" trt-cache-dir="\"$cache\"" \
    ort-library="\"$ort\"" rain-level=false ! videoconvert ! video/x-raw,format=RGB \
    ! pngenc compression-level=1 ! multifilesink location="\"$dir/%04d.png\""
}
psnr_pair() { # KEY A B: PSNR-Y of A against B (mean and worst)
  local key="$1" a="$WORK/psnr/$2" b="$WORK/psnr/$3" mean worst
  if run_step "psnr-$2-vs-$3" 120 "$DERAIN" eval --pred "$a" --gt "$b" --json "$WORK/psnr/$2-vs-$3.json"; then
    read -r mean worst <<< "$(tr -d ' \n' < "$WORK/psnr/$2-vs-$3.json" | awk '{
      m = "?"; w = "?"
      if (match($0, /"mean":\{[^}]*\}/)) { s = substr($0, RSTART, RLENGTH); if (match(s, /"psnr_y":[^,}]*/)) m = substr(s, RSTART + 9, RLENGTH - 9) }
      if (match($0, /"worst":\{[^}]*\}/)) { s = substr($0, RSTART, RLENGTH); if (match(s, /"psnr_y":[^,}]*/)) w = substr(s, RSTART + 9, RLENGTH - 9) }
      if (m == "null") m = "inf"; if (w == "null") w = "inf"
      print m, w }')"
    fig "$key.mean_db" "$mean"
    fig "$key.worst_db" "$worst"
    echo "$mean $worst"
  else
    fig "$key.error" "$(outcome)"
    echo "? ?"
  fi
}
psnr_section() { # MODEL_NAME SIZE
  local m="$1" size="$2" w h model r16 r32 rcpu
  w="${size%x*}"
  h="${size#*x}"
  model="$B/models/$m.onnx"
  r16=""
  r32=""
  rcpu=""
  case " $CONFIGS " in *" tensorrt-fp16 "*)
    clip_outputs "$m-fp16" "$model" "$(config_provider tensorrt-fp16)" true "$WORK/engines/$m-$size-tensorrt-fp16" "$w" "$h" "$ELEMENT_ORT" && r16=1 ;;
  esac
  case " $CONFIGS " in *" cuda-fp32 "*)
    clip_outputs "$m-fp32" "$model" "$(config_provider cuda-fp32)" false "$WORK/engines/$m-$size-cuda-fp32" "$w" "$h" "$ELEMENT_ORT" && r32=1 ;;
  esac
  clip_outputs "$m-cpu" "$model" cpu false "$WORK/engines/cpu" "$w" "$h" "$CPU_ORT" && rcpu=1
  if [ -n "$r16" ] && [ -n "$r32" ]; then
    read -r mean worst <<< "$(psnr_pair "psnr.$m.$size.fp16_vs_fp32" "$m-fp16" "$m-fp32")"
    md "- $m $size, TensorRT FP16 against CUDA FP32 output: PSNR-Y $mean dB mean, $worst dB worst ($PSNR_FRAMES clip frames; goal ≥ 45)"
    if [ "$m" = derain-r9 ] && [ "$CPU_MODE" = 0 ]; then
      awk -v m="$worst" 'BEGIN { exit !(m == "inf" || m + 0 >= 45) }' || note "derain-r9 FP16 against FP32: $worst dB worst, under the 45 dB goal"
    fi
  else
    md "- $m $size: FP16 against FP32 unmeasured (needs both TensorRT FP16 and CUDA FP32)"
  fi
  if [ -n "$r32" ] && [ -n "$rcpu" ]; then
    read -r mean worst <<< "$(psnr_pair "psnr.$m.$size.gpu_fp32_vs_cpu" "$m-fp32" "$m-cpu")"
    md "- $m $size, CUDA FP32 against the CPU provider's output: PSNR-Y $mean dB mean, $worst dB worst"
  fi
  write_json
}

md ""
md "## The element"
md ""
md "NV12 frames from videotestsrc through a queue into \`derain\` (rain-level=false, as the element"
md "bench) into fakesink, $FRAMES frames per speed run. fps: frames after the first over the"
md "PLAYING time; p99 and mean: the element's own per-frame processing time (conversion and"
md "inference) over the run (\`inference-p99-ms\` of its last derain-stats message); first start /"
md "cached start: wall time of a $START_FRAMES-frame run with an empty / filled TensorRT engine cache;"
md "engine build: their difference."
md ""
md "| model | size | provider | fps | p99 ms | mean ms | first / cached start | engine build s |"
md "|---|---|---|---|---|---|---|---|"
if [ -z "$CONFIGS" ]; then
  md "| derain-r9 | $KEY_SIZE | - | no CUDA- or TensorRT-capable ONNX Runtime found: unmeasured | | | | |"
else
  # The source alone, to show it is not what limits the fps.
  if run_step "source-alone-$KEY_SIZE" 60 "$GST_LAUNCH" videotestsrc num-buffers="$FRAMES" \
    ! "video/x-raw,format=NV12,width=${KEY_SIZE%x*},height=${KEY_SIZE#*x},framerate=30/1" ! queue max-size-buffers=4 ! fakesink sync=false; then
    read -r fps _ <<< "$(launch_figures "$FRAMES")"
    fig "element.source_alone.$KEY_SIZE.fps" "$fps"
    md "| (videotestsrc alone) | $KEY_SIZE | - | $fps | | | | |"
  fi
  for cfg in $CONFIGS; do
    measure_element derain-r9 "$KEY_SIZE" "$cfg"
  done
  # The goal: derain-r9 at 1920x1080, fastest provider >= 120 fps, p99 < 10 ms.
  best_fps=0
  best_cfg=""
  for cfg in $CONFIGS; do
    f="$(figv "element.derain-r9.$KEY_SIZE.$cfg.fps")"
    if [ -n "$f" ] && awk -v a="$f" -v b="$best_fps" 'BEGIN { exit !(a > b) }'; then
      best_fps="$f"
      best_cfg="$cfg"
    fi
  done
  if [ -n "$best_cfg" ]; then
    p99="$(figv "element.derain-r9.$KEY_SIZE.$best_cfg.p99_ms")"
    fig goal.derain_r9.provider "$best_cfg"
    fig goal.derain_r9.fps "$best_fps"
    fig goal.derain_r9.p99_ms "$p99"
    if awk -v f="$best_fps" -v p="$p99" 'BEGIN { exit !(f >= 120 && p < 10) }'; then
      fig goal.derain_r9.met true
      md ""
      md "- **goal met**: derain-r9 $KEY_SIZE on $best_cfg: $best_fps fps, p99 $p99 ms (≥ 120 fps, p99 < 10 ms)"
    else
      fig goal.derain_r9.met false
      [ "$CPU_MODE" = 0 ] && note "goal missed: derain-r9 $KEY_SIZE on $best_cfg (fastest): $best_fps fps, p99 $p99 ms (want ≥ 120 fps, p99 < 10 ms)"
    fi
  fi
  md ""
  psnr_section derain-r9 "$KEY_SIZE"
fi
write_json

# --- 3. bad input -----------------------------------------------------------------------------------
md ""
md "## Bad input"
md ""
bad_case() { # KEY WHAT EXPECT(refused|ran|either) ...derain_launch args after NAME LIMIT
  local key="$1" what="$2" expect="$3" o verdict
  shift 3
  derain_launch "bad-$key" 90 "$@"
  o="$(outcome)"
  case "$RC" in
    0) [ "$expect" = refused ] && verdict="NOT HANDLED: ran" || verdict="handled" ;;
    -1) verdict="skipped" ;;
    124 | 137) verdict="NOT HANDLED: hung" ;;
    *) if is_signal "$RC"; then verdict="NOT HANDLED: crashed"; else
      [ "$expect" = ran ] && verdict="NOT HANDLED: refused" || verdict="handled"; fi ;;
  esac
  fig "bad.$key.outcome" "$o"
  fig "bad.$key.handled" "$([ "$verdict" = handled ] && echo true || echo false)"
  md "- $what: $o → **$verdict**"
  case "$verdict" in NOT*) note_only "bad input, $what: $verdict ($o)" ;; esac
  write_json
}
LITE="$B/models/derain-lite.onnx"
# The real providers in both modes: on the CPU these cases check that the script survives them.
TRT_P=tensorrt
# A provider library that is not there: the ONNX Runtime library alone in a folder.
mkdir -p "$WORK/ort-alone"
src_ort="$(readlink -f "${GPU_ORT:-$CPU_ORT}")"
cp "$src_ort" "$WORK/ort-alone/" 2> /dev/null
save_ort="$ELEMENT_ORT"
ELEMENT_ORT="$WORK/ort-alone/$(basename "$src_ort")"
bad_case no-provider-library "provider=cuda with an ONNX Runtime whose provider libraries are missing" refused \
  "$LITE" cuda false "$WORK/engines/bad" 320 180 2
ELEMENT_ORT="$WORK/does-not-exist/libonnxruntime.so"
bad_case no-ort-library "ort-library naming a file that does not exist" refused \
  "$LITE" cpu false "$WORK/engines/bad" 320 180 2
ELEMENT_ORT="${GPU_ORT:-$CPU_ORT}"
# device-id beyond the GPUs present.
bad_case device-id-beyond "provider=cuda device-id=$((GPU_COUNT + 3)) with $GPU_COUNT GPU(s)" refused \
  "$LITE" cuda false "$WORK/engines/bad" 320 180 2 device-id=$((GPU_COUNT + 3))
# Engine caches: one built at a small size, then unwritable and truncated copies of it.
derain_launch "bad-engine-source" 150 "$LITE" "$TRT_P" true "$WORK/engines/bad-src" 320 180 2
n_eng="$(find "$WORK/engines/bad-src" -type f 2> /dev/null | wc -l)"
md "- (a small derain-lite engine cache for the next two cases: $(outcome), $n_eng file(s))"
# Unwritable: permissions where they bind (not root), else a path no one can create folders in.
ro="$WORK/engines/read-only"
mkdir -p "$ro"
chmod 555 "$ro"
if mkdir "$ro/probe" 2> /dev/null; then
  rmdir "$ro/probe"
  ro="/proc/derain-engine-cache"
  for c in /proc/derain-engine-cache /sys/derain-engine-cache; do
    mkdir -p "$c" 2> /dev/null || { ro="$c"; break; }
  done
fi
bad_case unwritable-cache "provider=tensorrt with trt-cache-dir=$ro (cannot be written)" either \
  "$LITE" "$TRT_P" true "$ro" 320 180 2
mkdir -p "$WORK/engines/truncated"
cp -r "$WORK/engines/bad-src/." "$WORK/engines/truncated/" 2> /dev/null
n_trunc=0
while read -r f; do
  truncate -s $(($(stat -c %s "$f") / 2)) "$f" && n_trunc=$((n_trunc + 1))
done < <(find "$WORK/engines/truncated" -type f -size +1k)
bad_case truncated-engine "provider=tensorrt with $n_trunc engine file(s) truncated to half" either \
  "$LITE" "$TRT_P" true "$WORK/engines/truncated" 320 180 2
ELEMENT_ORT="$save_ort"
case "$(figv probe.driver_ok_for_cuda13)" in
  true) md "- driver $(figv probe.driver): new enough for CUDA 13" ;;
  false) md "- driver $(figv probe.driver): too old for CUDA 13 (580 or newer): see the probe; the steps that need it report their own failures" ;;
  *) md "- driver: none found (no nvidia-smi or it failed): every GPU step reports its own failure" ;;
esac

# --- 4. the GPU test executables -------------------------------------------------------------------
md ""
md "## GPU tests (--ignored)"
md ""
run_test() { # NAME LIMIT EXE
  local name="$1" limit="$2" exe="$3" result skips
  DERAIN_ORT_LIBRARY="${GPU_ORT:-$CPU_ORT}" run_step "test-$name" "$limit" "$exe" --ignored --nocapture --test-threads=1
  result="$(grep -o 'test result: [^;]*; [0-9]* failed' "$LOG" | tail -n 1)"
  skips="$(grep -c 'skipping' "$LOG")"
  fig "tests.$name.status" "$(outcome)"
  fig "tests.$name.result" "${result:-none}"
  fig "tests.$name.skipped_checks" "$skips"
  # A test that finds no GPU returns early and passes: count those as skipped, not passed.
  md "- $name: $(outcome); ${result:-no test result}; $skips check(s) skipped (nothing measured by those)"
  grep -E 'skipping|PSNR|matched|relative|cuda [0-9]|FAILED|panicked' "$LOG" | head -n 20 | sed 's/^/  - /' >> "$MD"
  [ "$RC" = 0 ] || note "GPU test $name: $(outcome)"
  write_json
}
run_test derain-gpu 180 "$B/tests/derain-gpu"
run_test gst-derain-gpu 150 "$B/tests/gst-derain-gpu"
run_test derain-train_gpu 120 "$B/tests/derain-train_gpu"

# --- 5. training -----------------------------------------------------------------------------------
md ""
md "## derain train: cuda against cpu"
md ""
md "Stage 1 configs with --steps $STEPS, crop 64, batch 4, on the bundle's clip; steps/s over steps"
md "after the first $STEPS_SKIP; loss: generator_total of the same step on both devices."
md ""
TRAIN_DEV=cuda
TRAIN_TAG=cuda
BATCH=4
TRAIN_LABEL=cuda
[ "$CPU_MODE" = 1 ] && TRAIN_DEV=cpu && TRAIN_TAG="cuda-standin" && TRAIN_LABEL="cuda (cpu standing in)"
train_run() { # NAME CONFIG DEVICE TAG
  local name="$1" cfg="$2" dev="$3" out="$WORK/train/$1-$4"
  run_step "train-$name-$4" 150 "$DERAIN" train --config "$B/configs/$cfg" --out "$out" \
    --device "$dev" --steps "$STEPS" --seed 1 --clean "$B/clip" \
    --set train.crop=64 --set train.batch="$BATCH" --set data.validation="$B/val" \
    --set data.validation_limit=2 --set run.checkpoint_every="$STEPS" --set run.validate_every="$STEPS"
  cp "$out/log.jsonl" "$LOGS/train-$name-$4.jsonl" 2> /dev/null
}
# "step loss seconds" per line of a run's log.jsonl (the top-level fields).
train_steps() {
  awk '{
    s = ""; l = ""; ips = ""
    if (match($0, /"step":[0-9]+/)) s = substr($0, RSTART + 7, RLENGTH - 7)
    if (match($0, /"generator_total":[-0-9.eE+]+/)) l = substr($0, RSTART + 18, RLENGTH - 18)
    if (match($0, /"images_per_s":[-0-9.eE+]+/)) ips = substr($0, RSTART + 15, RLENGTH - 15)
    if (s != "" && ips + 0 > 0) printf "%s %s %.6f\n", s, l, b / ips
  }' b="$BATCH" "$1" 2> /dev/null
}
for pair in derain-lite:derain-lite-pretrain.toml derain-r9:derain-r9-pretrain.toml; do
  name="${pair%%:*}"
  cfg="${pair#*:}"
  for run in "$TRAIN_DEV:$TRAIN_TAG" cpu:cpu; do
    dev="${run%%:*}"
    tag="${run#*:}"
    train_run "$name" "$cfg" "$dev" "$tag"
    [ "$RC" = 0 ] || { note "derain train $name on $dev: $(outcome)"; fig "train.$name.$tag.error" "$(outcome)"; }
    train_steps "$WORK/train/$name-$tag/log.jsonl" > "$WORK/train-$name-$tag.txt"
    sps="$(awk -v k="$STEPS_SKIP" '$1 > k { t += $3; n++ } END { if (n > 0 && t > 0) printf "%.2f", n / t }' "$WORK/train-$name-$tag.txt")"
    fig "train.$name.$tag.steps_per_s" "${sps:-?}"
    fig "train.$name.$tag.run_s" "$SECS"
    fig "train.$name.$tag.steps_logged" "$(wc -l < "$WORK/train-$name-$tag.txt")"
  done
  a="$WORK/train-$name-$TRAIN_TAG.txt"
  b="$WORK/train-$name-cpu.txt"
  agree="$(join <(sort -k1,1 "$a") <(sort -k1,1 "$b") 2> /dev/null | sort -n | head -n 10 | awk '
    { d = $2 - $4; if (d < 0) d = -d; m = ($4 < 0 ? -$4 : $4); if (m < 1e-6) m = 1e-6; r = d / m; if (r > worst) worst = r
      if (n < 5) list = list sprintf("%s%d: %.5f/%.5f", (n ? ", " : ""), $1, $2, $4); n++ }
    END { if (n) printf "%.2e %d %s\n", worst, n, list; else print "? 0 -" }')"
  read -r worst n_cmp list <<< "$agree"
  fig "train.$name.loss_max_rel_diff" "$worst"
  fig "train.$name.loss_steps_compared" "$n_cmp"
  g="$(figv "train.$name.$TRAIN_TAG.steps_per_s")"
  c="$(figv "train.$name.cpu.steps_per_s")"
  ratio="$(awk -v g="$g" -v c="$c" 'BEGIN { if (g + 0 > 0 && c + 0 > 0) printf "%.1f", g / c; else print "?" }')"
  fig "train.$name.speedup" "$ratio"
  md "- $name: $TRAIN_LABEL $g steps/s, cpu $c steps/s ($ratio×); loss over the first $n_cmp steps agrees within $worst relative (steps $TRAIN_DEV/cpu: $list)"
  if [ "$worst" != "?" ] && ! awk -v w="$worst" 'BEGIN { exit !(w <= 1e-2) }'; then
    note "derain train $name: $TRAIN_DEV and cpu losses differ by $worst relative (train_gpu.rs allows 1e-2)"
  fi
  write_json
done

# --- 6. the rest of the element grid -----------------------------------------------------------------
if [ -n "$CONFIGS" ]; then
  md ""
  md "## The element, other sizes and derain-lite"
  md ""
  md "| model | size | provider | fps | p99 ms | mean ms | first / cached start | engine build s |"
  md "|---|---|---|---|---|---|---|---|"
  for m in derain-r9 derain-lite; do
    for size in $SIZES; do
      [ "$m" = derain-r9 ] && [ "$size" = "$KEY_SIZE" ] && continue
      for cfg in $CONFIGS; do
        measure_element "$m" "$size" "$cfg"
      done
    done
  done
  md ""
  psnr_section derain-lite "$KEY_SIZE"
fi

# --- summary ----------------------------------------------------------------------------------------
md ""
md "## Summary"
md ""
total="$(elapsed_s)"
fig run.elapsed_s "$total"
n_ok="$(awk -F'\t' '$2 == "ok"' "$WORK/steps.tsv" | wc -l)"
n_all="$(wc -l < "$WORK/steps.tsv")"
md "- $n_ok of $n_all steps ran clean in $total s (budget $BUDGET s); per step:"
awk -F'\t' '{ printf "  - %s: %s, %s s%s\n", $1, $2, $3, ($4 != "" ? " (" $4 ")" : "") }' "$WORK/steps.tsv" >> "$MD"
if [ -s "$WORK/notes.txt" ]; then
  md "- to read first:"
  sed 's/^/  - /' "$WORK/notes.txt" >> "$MD"
fi
# On the CPU the run is a test of the bundle and of this script: it fails when anything but the
# GPU-only steps (providers, bad input) failed, a bad input was not handled, or a library is
# missing or came from outside the bundle. On a GPU the report is the result: always exit 0.
verdict=0
if [ "$CPU_MODE" = 1 ]; then
  bad_steps="$(awk -F'\t' '$2 != "ok" && $1 !~ /^(probe-provider-|bad-)/ { printf "%s (%s) ", $1, $2 }' "$WORK/steps.tsv")"
  unhandled="$(grep -c '^bad input.*NOT HANDLED' "$WORK/notes.txt")"
  problems=""
  [ -n "$bad_steps" ] && problems="$problems steps failed: $bad_steps;"
  [ "$unhandled" -gt 0 ] && problems="$problems $unhandled bad input(s) not handled;"
  [ -s "$WORK/missing.txt" ] && problems="$problems libraries missing;"
  [ -s "$WORK/outside.txt" ] && problems="$problems libraries from outside the bundle;"
  [ -n "${UNPACK_ERROR:-}" ] && problems="$problems ONNX Runtime not unpacked;"
  if [ -n "$problems" ]; then
    verdict=1
    md "- **CPU run: FAIL:$problems**"
    fig run.cpu_verdict "fail:$problems"
  else
    md "- CPU run: pass (every step ran; the GPU-only ones failed as they should, each handled)"
    fig run.cpu_verdict pass
  fi
fi
write_json
echo "gpu-check: done in ${total} s: $MD, $JSON" >&2
[ "$verdict" = 0 ] || echo "gpu-check: the CPU run FAILED: see the summary in $MD" >&2
exit "$verdict"
