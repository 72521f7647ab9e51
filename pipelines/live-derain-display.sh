#!/usr/bin/env bash
# live source -> derain -> display: a camera (V4L2) derained on screen, never falling behind:
# frames older than 200 ms are dropped (and counted) instead of queueing up.
#
#   pipelines/live-derain-display.sh [DEVICE|test] [MODEL.onnx] [PROVIDER]
#
# DEVICE defaults to /dev/video0; "test" uses a live test pattern instead of a camera. Without a
# display (DISPLAY unset) the frames go to a fakesink and the statistics are printed.
set -euo pipefail
dev="${1:-/dev/video0}"; model="${2:-}"; provider="${3:-auto}"
if [ "$dev" = test ]; then
  src=(videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1)
else
  [ -e "$dev" ] || { echo "error: no camera at $dev (use 'test' for a test pattern)" >&2; exit 1; }
  src=(v4l2src device="$dev")
fi
sink=(autovideosink sync=false)
[ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || sink=(fakesink sync=true)
model_prop=()
[ -n "$model" ] && model_prop=(model="$model")
exec gst-launch-1.0 -e -m "${src[@]}" ! videoconvert ! queue max-size-buffers=2 leaky=downstream \
  ! derain "${model_prop[@]}" provider="$provider" drop-policy=drop-late max-lateness=200 \
  ! videoconvert ! "${sink[@]}"
