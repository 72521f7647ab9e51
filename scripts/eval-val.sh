#!/usr/bin/env bash
# A candidate model on this project's own validation split (never a dev set), both sides, at the
# three scales `make val-data` renders: the six kept-out frames at full size, 2x and 4x smaller.
#   - rain side: PSNR-Y on rain rendered over them (runs/val-dry-rain, runs/val-dry-x2, -x4)
#   - dry side: PSNR-Y of the output against its input, mean and worst, on the plain frames
#     (runs/val-dry, runs/val-dry-x{2,4}/clean) and with drawn thin lines
#     (runs/val-dry-lines-x{2,4}/clean)
# Prints one markdown row; the worst dry frame over all five dry sets is the figure to raise.
#
#   scripts/eval-val.sh MODEL.onnx [OUT_DIR]     (make val-data first)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release/derain"
MODEL="${1:?usage: scripts/eval-val.sh MODEL.onnx [OUT_DIR]}"
OUT="${2:-$ROOT/target/eval-val/$(basename "$MODEL" .onnx)}"
[ -r "$MODEL" ] || { echo "eval-val: model '$MODEL' not found" >&2; exit 1; }
[ -x "$BIN" ] || { echo "eval-val: $BIN is missing: run make release" >&2; exit 1; }
RAIN=(runs/val-dry-rain runs/val-dry-x2 runs/val-dry-x4)
DRY=(runs/val-dry runs/val-dry-x2/clean runs/val-dry-x4/clean runs/val-dry-lines-x2/clean
  runs/val-dry-lines-x4/clean)
for d in "${RAIN[@]}" "${DRY[@]}"; do
  [ -d "$d" ] || { echo "eval-val: $d is missing: run make val-data" >&2; exit 1; }
done
mkdir -p "$OUT"
for d in "${RAIN[@]}"; do
  "$BIN" eval --model "$MODEL" --pairs "$d" --provider cpu --json "$OUT/rain-$(basename "$d").json" > /dev/null
done
for d in "${DRY[@]}"; do
  "$BIN" eval --model "$MODEL" --dry "$d" --provider cpu \
    --json "$OUT/dry-$(echo "$d" | tr / _).json" > /dev/null
done
python3 - "$MODEL" "$OUT" <<'PY'
import glob, json, os, sys
model, out = sys.argv[1:]
load = lambda p: json.load(open(p))
rain = [load(os.path.join(out, f"rain-{n}.json"))["mean"] for n in ("val-dry-rain", "val-dry-x2", "val-dry-x4")]
dry = [load(p) for p in sorted(glob.glob(os.path.join(out, "dry-*.json")))]
cells = [f"{r['input_psnr_y']:.2f} → {r['psnr_y']:.2f}" for r in rain]
cells += [f"{d['mean']['psnr_y']:.2f} / {d['worst']['psnr_y']:.2f}" for d in dry]
worst = min(d["worst"]["psnr_y"] for d in dry)
print("| model | rain 1x | rain 2x | rain 4x | dry: " + " | ".join(
    os.path.basename(p)[4:-5] for p in sorted(glob.glob(os.path.join(out, "dry-*.json")))) + " | dry worst |")
print(f"| {os.path.basename(model)} | " + " | ".join(cells) + f" | {worst:.2f} |")
PY
