#!/usr/bin/env bash
# file -> derain -> detect -> draw -> file: derains a recorded drive, runs an object detector on the
# derained frames and writes an H.264 MP4 with the boxes drawn in.
#
#   pipelines/file-derain-detect-file.sh INPUT OUTPUT.mp4 MODEL.onnx DETECTOR.onnx [PROVIDER] [YOLODETECT-PROPERTY...]
#
# MODEL is the deraining generator ("" = the element's embedded default, when the build has one);
# DETECTOR any YOLOX/YOLOv5/YOLOv8 ONNX detector; PROVIDER (default auto) runs both. Further
# arguments go to yolodetect, e.g. classes=car,truck,bus,person roi=0,0,1,0.85 json-path=boxes.jsonl
# Needs the plugin where GStreamer finds it: `make install`, or GST_PLUGIN_PATH=target/release.
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,9p' "$0"; exit 2; }
in="$1"; out="$2"; model="$3"; detector="$4"; provider="${5:-auto}"
shift $(( $# < 5 ? $# : 5 ))
[ -r "$in" ] || { echo "error: cannot read input '$in'" >&2; exit 1; }
[ -r "$detector" ] || { echo "error: cannot read detector '$detector'" >&2; exit 1; }
touch "$out" 2>/dev/null || { echo "error: cannot write output '$out'" >&2; exit 1; }
model_prop=()
[ -n "$model" ] && model_prop=(model="$model")
exec gst-launch-1.0 -e \
  filesrc location="$in" ! decodebin ! videoconvert ! video/x-raw,format=RGB \
  ! derain "${model_prop[@]}" provider="$provider" \
  ! videoconvert ! yolodetect model="$detector" provider="$provider" "$@" \
  ! boxoverlay \
  ! videoconvert ! x264enc tune=zerolatency speed-preset=veryfast ! h264parse \
  ! mp4mux ! filesink location="$out"
