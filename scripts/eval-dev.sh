#!/usr/bin/env bash
# `make eval-dev`: a model's scores on the held-out dev sets, next to the rainy input's, as the
# README results table and models/README.md report them. No training config reads these sets.
#   - PSNR-Y / SSIM-Y on pairs/rain12, pairs/carla-dev, pairs/nturain-a1 (`derain eval --pairs`)
#   - NIQE on real-rain/spac-rb2-vehicle and real-rain/raindrops-on-glass, before and after
#     (`derain eval --input`)
#   - dry frames untouched: PSNR-Y / SSIM-Y of the output against its own input, mean and worst,
#     on the clean frames of the three pair sets and clean-driving/bdd (`derain eval --dry`)
#
#   MODEL=models/derain-lite.onnx PROVIDER=cpu scripts/eval-dev.sh
#
# Writes every per-image score to target/eval-dev/<model>/*.json and prints one Markdown table.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${DERAIN_DATA:-$ROOT/../shared/data}"
PROVIDER="${PROVIDER:-auto}"
MODEL="${MODEL:-}"
BIN="$ROOT/target/release/derain"

if [ -z "$MODEL" ]; then
  echo "eval-dev: set MODEL=path/to/model.onnx (e.g. models/derain-lite.onnx)" >&2
  exit 1
fi
[ -r "$MODEL" ] || { echo "eval-dev: model '$MODEL' not found" >&2; exit 1; }
[ -d "$DATA/pairs" ] || { echo "eval-dev: no dev sets: '$DATA' has no pairs/ (set DERAIN_DATA)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "eval-dev: $BIN is missing: run make release" >&2; exit 1; }

OUT="$ROOT/target/eval-dev/$(basename "$MODEL" .onnx)"
mkdir -p "$OUT"
mean() { # FILE KEY -> the mean's value, 2 or 4 decimals
  python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["mean"][sys.argv[2]]; print(f"{v:.4f}" if v < 1 else f"{v:.2f}")' "$1" "$2"
}

rows=()
for set in rain12 carla-dev nturain-a1; do
  dir="$DATA/pairs/$set"
  if [ ! -d "$dir" ]; then echo "eval-dev: skipping $set: $dir is absent" >&2; continue; fi
  "$BIN" eval --model "$MODEL" --pairs "$dir" --provider "$PROVIDER" --json "$OUT/$set.json" > "$OUT/$set.txt"
  j="$OUT/$set.json"
  rows+=("| $set | PSNR-Y / SSIM-Y | $(mean "$j" input_psnr_y) / $(mean "$j" input_ssim_y) | $(mean "$j" psnr_y) / $(mean "$j" ssim_y) |")
done
for set in spac-rb2-vehicle raindrops-on-glass; do
  dir="$DATA/real-rain/$set"
  if [ ! -d "$dir" ]; then echo "eval-dev: skipping $set: $dir is absent" >&2; continue; fi
  "$BIN" eval --model "$MODEL" --input "$dir" --provider "$PROVIDER" --json "$OUT/$set.json" > "$OUT/$set.txt"
  j="$OUT/$set.json"
  rows+=("| $set | NIQE (lower is better) | $(mean "$j" input_niqe) | $(mean "$j" niqe) |")
done
worst() { # FILE KEY -> the worst image's value, 2 decimals
  python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["worst"][sys.argv[2]]; print(f"{v:.2f}")' "$1" "$2"
}
for set in pairs/rain12/clean pairs/carla-dev/clean pairs/nturain-a1/clean clean-driving/bdd; do
  dir="$DATA/$set"
  if [ ! -d "$dir" ]; then echo "eval-dev: skipping $set: $dir is absent" >&2; continue; fi
  name="dry-$(echo "$set" | tr / -)"
  "$BIN" eval --model "$MODEL" --dry "$dir" --provider "$PROVIDER" --json "$OUT/$name.json" > "$OUT/$name.txt"
  j="$OUT/$name.json"
  rows+=("| $set (dry) | PSNR-Y mean / worst, SSIM-Y (output vs input) | inf | $(mean "$j" psnr_y) / $(worst "$j" psnr_y), $(mean "$j" ssim_y) |")
done

echo "$MODEL on the held-out dev sets (provider $PROVIDER; per-image scores in $OUT)"
echo "| set | score | rainy input | derained |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
