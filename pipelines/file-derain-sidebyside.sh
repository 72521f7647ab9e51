#!/usr/bin/env bash
# file -> (rainy | derained) side by side -> file: shows what the element does to a drive.
#
#   pipelines/file-derain-sidebyside.sh INPUT OUTPUT.mp4 [MODEL.onnx] [PROVIDER]
#
# MODEL empty uses the element's embedded default (derain-r9 on a GPU, derain-lite on the CPU).
# Needs the plugin where GStreamer finds it: `make install`, or GST_PLUGIN_PATH=target/release.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,8p' "$0"; exit 2; }
in="$1"; out="$2"; model="${3:-}"; provider="${4:-auto}"
[ -r "$in" ] || { echo "error: cannot read input '$in'" >&2; exit 1; }
touch "$out" 2>/dev/null || { echo "error: cannot write output '$out'" >&2; exit 1; }
model_prop=()
[ -n "$model" ] && model_prop=(model="$model")
# The width of the left panel places the right one; read it from the file's first frame.
width="$(gst-launch-1.0 -v filesrc location="$in" ! decodebin ! videoconvert ! video/x-raw,format=RGB \
  ! fakesink num-buffers=1 2>/dev/null | sed -n 's/.*width=(int)\([0-9]*\).*/\1/p' | head -n1)"
[ -n "$width" ] || { echo "error: cannot read the frame size of '$in'" >&2; exit 1; }
exec gst-launch-1.0 -e \
  compositor name=mix sink_1::xpos="$width" ! videoconvert \
  ! x264enc tune=zerolatency speed-preset=veryfast ! h264parse ! mp4mux ! filesink location="$out" \
  filesrc location="$in" ! decodebin ! videoconvert ! video/x-raw,format=RGB ! tee name=t \
  t. ! queue max-size-buffers=4 ! mix.sink_0 \
  t. ! queue max-size-buffers=4 ! derain "${model_prop[@]}" provider="$provider" ! mix.sink_1
