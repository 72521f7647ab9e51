#!/usr/bin/env bash
# A candidate model on the city validation split (CamVid Seq05VD, never trained on; `make
# val-seq05` first), both sides, in one markdown row:
#   - rain side: PSNR-Y input -> output on each rendered kind of rain (light, heavy, driving,
#     streaks only, veil only, drops only), so one can see which effect a model removes;
#   - dry side: PSNR-Y of the output against its input on the 171 dry frames, mean / worst
#     (the floor: mean >= 40, worst >= 33).
#
#   scripts/eval-seq05.sh MODEL.onnx [OUT_DIR]
set -euo pipefail
export RUST_LOG="${RUST_LOG:-warn}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${DERAIN_BIN:-$ROOT/target/release/derain}"
MODEL="${1:?usage: scripts/eval-seq05.sh MODEL.onnx [OUT_DIR]}"
OUT="${2:-$ROOT/target/eval-seq05/$(basename "$MODEL" .onnx)}"
KINDS=(light heavy driving streaks veil drops)
[ -r "$MODEL" ] || { echo "eval-seq05: model '$MODEL' not found" >&2; exit 1; }
[ -x "$BIN" ] || { echo "eval-seq05: $BIN is missing: run make release" >&2; exit 1; }
for k in "${KINDS[@]}"; do
  [ -d "runs/val-seq05/$k" ] || { echo "eval-seq05: runs/val-seq05/$k is missing: run make val-seq05" >&2; exit 1; }
done
mkdir -p "$OUT"
for k in "${KINDS[@]}"; do
  "$BIN" eval --model "$MODEL" --pairs "runs/val-seq05/$k" --provider cpu --json "$OUT/rain-$k.json" > /dev/null
done
# The dry frames: the clean half of any render (the same 171 frames).
"$BIN" eval --model "$MODEL" --dry runs/val-seq05/light/clean --provider cpu --json "$OUT/dry.json" > /dev/null
python3 - "$MODEL" "$OUT" "${KINDS[@]}" <<'PY'
import json, os, sys
model, out, kinds = sys.argv[1], sys.argv[2], sys.argv[3:]
load = lambda n: json.load(open(os.path.join(out, n)))
cells = []
for k in kinds:
    m = load(f"rain-{k}.json")["mean"]
    cells.append(f"{m['input_psnr_y']:.2f} → {m['psnr_y']:.2f}")
d = load("dry.json")
cells.append(f"{d['mean']['psnr_y']:.2f} / {d['worst']['psnr_y']:.2f}")
print("| model | " + " | ".join(kinds) + " | dry mean / worst |")
print("|---" * (len(kinds) + 2) + "|")
print(f"| {os.path.basename(model)} | " + " | ".join(cells) + " |")
PY
