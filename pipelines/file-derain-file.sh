#!/usr/bin/env bash
# file -> derain -> file: derains a recorded drive (any container/codec GStreamer decodes) and
# writes an H.264 MP4.
#
#   pipelines/file-derain-file.sh INPUT OUTPUT.mp4 [MODEL.onnx] [PROVIDER]
#
# MODEL defaults to the element's embedded default (when the build has one); PROVIDER to auto.
# Needs the plugin where GStreamer finds it: `make install`, or GST_PLUGIN_PATH=target/release.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
in="$1"; out="$2"; model="${3:-}"; provider="${4:-auto}"
[ -r "$in" ] || { echo "error: cannot read input '$in'" >&2; exit 1; }
touch "$out" 2>/dev/null || { echo "error: cannot write output '$out'" >&2; exit 1; }
model_prop=()
[ -n "$model" ] && model_prop=(model="$model")
exec gst-launch-1.0 -e \
  filesrc location="$in" ! decodebin ! videoconvert ! video/x-raw,format=RGB \
  ! derain "${model_prop[@]}" provider="$provider" \
  ! videoconvert ! x264enc tune=zerolatency speed-preset=veryfast ! h264parse \
  ! mp4mux ! filesink location="$out"
