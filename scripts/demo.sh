#!/usr/bin/env bash
# `make demo`: derain a driving clip end to end through GStreamer.
#
# No trained default model ships yet (that is a later milestone), so this demo does NOT remove
# rain: it runs the real pipeline (decode -> derain element -> encode) on a clip from
# ../shared/data with a pass-through (identity) model, to show the plumbing, the formats and the
# statistics. It says so on screen.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${DERAIN_DATA:-$ROOT/../shared/data}"
CLIP="$DATA/clean-driving/udacity/highway-960x540.mp4"
OUT_DIR="$ROOT/demo-out"
mkdir -p "$OUT_DIR"

cat <<'MSG'
======================================================================================
 derain demo
 NOTE: no trained deraining model is shipped yet. This run uses an IDENTITY model
 (output = input) to exercise the real pipeline; the output video is NOT derained.
======================================================================================
MSG

MODEL="$OUT_DIR/identity.onnx"
target/release/derain fixture identity --out "$MODEL"
if [ ! -r "$CLIP" ]; then
  echo "demo: $CLIP not found (set DERAIN_DATA); using a generated test clip instead"
  CLIP="$OUT_DIR/test-clip.mp4"
  gst-launch-1.0 -q videotestsrc num-buffers=60 pattern=smpte ! video/x-raw,width=640,height=360 \
    ! videoconvert ! x264enc ! h264parse ! mp4mux ! filesink location="$CLIP"
fi
export GST_PLUGIN_PATH="$ROOT/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
OUT="$OUT_DIR/derained.mp4"
echo "demo: $CLIP -> derain (identity model) -> $OUT"
SECONDS=0
pipelines/file-derain-file.sh "$CLIP" "$OUT" "$MODEL" cpu
echo "demo: wrote $OUT ($(stat -c %s "$OUT") bytes) in ${SECONDS} s"
echo "demo: again, the model was an identity: rain removal arrives with the shipped model."
