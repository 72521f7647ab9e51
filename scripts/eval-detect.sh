#!/usr/bin/env bash
# `make eval-detect`: does deraining help the detector? Runs `derain eval-detect` on rainy/clean
# pairs: the detector's mAP@0.5 on the rainy frames and on the derained frames, both against the
# detector's own boxes on the clean frames.
#
#   MODEL=M.onnx DETECTOR=D.onnx PAIRS=DIR PROVIDER=auto scripts/eval-detect.sh [--check-inputs]
#
# --check-inputs only checks the detector, pairs and model exist (make runs it before building).
# MODEL empty (make passes models/derain-lite.onnx when it exists): an identity model (output = input) stands in; the
# two figures must then be equal, and the script fails if they are not.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${DERAIN_DATA:-$ROOT/../shared/data}"
DETECTOR="${DETECTOR:-$DATA/models/yolox_nano_416.onnx}"
PAIRS="${PAIRS:-$DATA/pairs/carla-dev}"
PROVIDER="${PROVIDER:-auto}"
MODEL="${MODEL:-}"
BIN="$ROOT/target/release/derain"
OUT="$ROOT/target/eval-detect"

[ -r "$DETECTOR" ] || { echo "eval-detect: detector '$DETECTOR' not found: set DETECTOR=path/to/detector.onnx" >&2; exit 1; }
if [ ! -d "$PAIRS/rainy" ] || [ ! -d "$PAIRS/clean" ]; then
  echo "eval-detect: '$PAIRS' does not hold rainy/ and clean/ folders: set PAIRS=DIR" >&2
  exit 1
fi
if [ -n "$MODEL" ] && [ ! -r "$MODEL" ]; then
  echo "eval-detect: model '$MODEL' not found (leave MODEL empty for the identity stand-in)" >&2
  exit 1
fi
[ "${1:-}" = --check-inputs ] && exit 0
[ -x "$BIN" ] || { echo "eval-detect: $BIN is missing: run \`make eval-detect\` (it builds it)" >&2; exit 1; }
mkdir -p "$OUT"
identity=0
if [ -z "$MODEL" ]; then
  identity=1
  MODEL="$OUT/identity.onnx"
  "$BIN" fixture identity --out "$MODEL" >/dev/null
  cat <<'MSG'
======================================================================================
 eval-detect: NO TRAINED DERAINING MODEL EXISTS YET (MODEL is empty).
 Using an IDENTITY model (output = input): "derained" frames ARE the rainy frames, so
 both mAP figures below MUST be equal. The rainy figure is the baseline a model must beat.
======================================================================================
MSG
fi
result="$("$BIN" eval-detect --pairs "$PAIRS" --detector "$DETECTOR" --model "$MODEL" \
  --provider "$PROVIDER" --json "$OUT/eval-detect.json")"
echo "$result"
echo "eval-detect: figures written to $OUT/eval-detect.json"
if [ "$identity" = 1 ]; then
  rainy="$(awk '/rainy +vs clean/ {print $NF}' <<<"$result")"
  derained="$(awk '/derained vs clean/ {print $NF}' <<<"$result")"
  if [ -z "$rainy" ] || [ "$rainy" != "$derained" ]; then
    echo "eval-detect: identity model but rainy mAP '$rainy' != derained mAP '$derained'" >&2
    exit 1
  fi
  echo "eval-detect: identity check passed (both $rainy); again, no model was evaluated."
fi
