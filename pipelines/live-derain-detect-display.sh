#!/usr/bin/env bash
# live source -> derain -> detect -> draw -> display: a camera (V4L2) derained, objects detected and
# boxed on screen, never falling behind: frames older than 200 ms are dropped (and counted) before
# deraining instead of queueing up.
#
#   pipelines/live-derain-detect-display.sh [DEVICE|test] MODEL.onnx DETECTOR.onnx [PROVIDER] [YOLODETECT-PROPERTY...]
#
# DEVICE defaults to /dev/video0; "test" uses a live test pattern instead of a camera. MODEL ""
# uses the derain element's embedded default (when the build has one). Further arguments go to
# yolodetect, e.g. interval=2 (detect every 2nd frame) roi=0,0,1,0.85 classes=car,person.
# Without a display (DISPLAY unset) the frames go to a fakesink and the messages are printed.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,11p' "$0"; exit 2; }
dev="$1"; model="$2"; detector="$3"; provider="${4:-auto}"
shift $(( $# < 4 ? $# : 4 ))
if [ "$dev" = test ]; then
  src=(videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1)
else
  [ -e "$dev" ] || { echo "error: no camera at $dev (use 'test' for a test pattern)" >&2; exit 1; }
  src=(v4l2src device="$dev")
fi
[ -r "$detector" ] || { echo "error: cannot read detector '$detector'" >&2; exit 1; }
sink=(autovideosink sync=false)
[ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || sink=(fakesink sync=true)
model_prop=()
[ -n "$model" ] && model_prop=(model="$model")
exec gst-launch-1.0 -e -m "${src[@]}" ! videoconvert ! queue max-size-buffers=2 leaky=downstream \
  ! derain "${model_prop[@]}" provider="$provider" drop-policy=drop-late max-lateness=200 \
  ! videoconvert ! yolodetect model="$detector" provider="$provider" "$@" \
  ! boxoverlay ! videoconvert ! "${sink[@]}"
