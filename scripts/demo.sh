#!/usr/bin/env bash
# `make demo [INPUT=drive.mp4]`: derain a driving clip with the element's embedded default model
# through pipelines/file-derain-sidebyside.sh and write a side-by-side video (rainy | derained).
#
# Without INPUT, a rainy clip is made on the spot: seeded synthetic rain (`derain synth`) over the
# clean Udacity clip in ../shared/data (else over a generated moving scene); the clean frames are
# then known, so the demo also prints the PSNR-Y gain. Outputs go to demo-out/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${DERAIN_DATA:-$ROOT/../shared/data}"
OUT_DIR="$ROOT/demo-out"
INPUT="${INPUT:-}"
BIN="$ROOT/target/release/derain"
export GST_PLUGIN_PATH="$ROOT/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
mkdir -p "$OUT_DIR"

count_frames() {
  gst-launch-1.0 -v filesrc location="$1" ! decodebin ! identity silent=false ! fakesink 2>&1 \
    | grep -c 'last-message = chain' || true
}

# The model the element will pick on this machine (CPU: derain-lite), as a file for `derain eval`.
MODEL_FILE=""
for m in models/derain-lite.onnx models/derain-r9.onnx; do
  if [ -f "$m" ]; then MODEL_FILE="$m"; break; fi
done
MODEL_PROP=""
if [ -z "$MODEL_FILE" ]; then
  cat <<'MSG'
======================================================================================
 NOTE: this checkout ships no trained model yet (models/ is empty), so the element has
 no embedded default. The demo runs an IDENTITY model instead: the right half is NOT
 derained. Train one with `derain train` (README) or update the checkout.
======================================================================================
MSG
  MODEL_FILE="$OUT_DIR/identity.onnx"
  "$BIN" fixture identity --out "$MODEL_FILE" >/dev/null
  MODEL_PROP="$MODEL_FILE"
fi

CLEAN_DIR=""
if [ -n "$INPUT" ]; then
  CLIP="$INPUT"
else
  SRC="$DATA/clean-driving/udacity/highway-960x540.mp4"
  if [ ! -r "$SRC" ]; then
    echo "demo: $SRC not found (set DERAIN_DATA); rendering rain over a generated moving scene"
    SRC="$OUT_DIR/scene.mp4"
    gst-launch-1.0 -q videotestsrc num-buffers=75 pattern=ball ! \
      video/x-raw,width=640,height=360,framerate=25/1 ! videoconvert ! \
      x264enc speed-preset=veryfast ! h264parse ! mp4mux ! filesink location="$SRC"
  fi
  rm -rf "$OUT_DIR/synth"
  echo "demo: rendering seeded rain (preset medium, seed 7) over $SRC"
  "$BIN" synth --clean "$SRC" --out "$OUT_DIR/synth" --preset medium --seed 7 --video \
    --max-frames 100 >/dev/null
  CLIP="$(ls "$OUT_DIR"/synth/*-rainy.mp4 | head -n1)"
  CLEAN_DIR="$OUT_DIR/synth"
fi

OUT="$OUT_DIR/side-by-side.mp4"
FRAMES="$(count_frames "$CLIP")"
if [ "$FRAMES" -eq 0 ]; then
  echo "demo: error: no video frame could be decoded from $CLIP" >&2
  exit 1
fi
echo "demo: $CLIP ($FRAMES frames) -> derain -> $OUT (left: rainy, right: derained)"
START=$(date +%s.%N)
pipelines/file-derain-sidebyside.sh "$CLIP" "$OUT" "$MODEL_PROP" auto >/dev/null
END=$(date +%s.%N)
awk -v n="$FRAMES" -v a="$START" -v b="$END" \
  'BEGIN { printf "demo: %d frames in %.1f s: %.1f frames per second (decode, derain, encode)\n", n, b - a, n / (b - a) }'
echo "demo: wrote $OUT"

if [ -n "$CLEAN_DIR" ]; then
  # The same frames through the same model and conversion, scored against the known clean ones.
  "$BIN" eval --model "$MODEL_FILE" --pairs "$CLEAN_DIR" --provider cpu \
    --json "$OUT_DIR/scores.json" >"$OUT_DIR/scores.txt" 2>/dev/null
  python3 - "$OUT_DIR/scores.json" "$MODEL_FILE" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["mean"]
print(f"demo: PSNR-Y {d['input_psnr_y']:.2f} dB rainy -> {d['psnr_y']:.2f} dB derained "
      f"({d['psnr_y'] - d['input_psnr_y']:+.2f} dB) with {sys.argv[2]}")
PY
fi
