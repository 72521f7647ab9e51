#!/usr/bin/env bash
# How a candidate model does on this project's own validation, without reading a dev set: the
# figures stage-2 (and stage-1c) choices are made on (models/README.md).
#   - rain side: PSNR-Y / SSIM-Y on runs/val-dry-rain (rain rendered over six kept-out frames)
#   - dry side: PSNR-Y of the output against its input on runs/val-dry, mean and worst
#   - real rain the trainer reads (no labels, so scoring it is not fitting to it): NIQE before
#     and after on real-rain/spac-ra1 and real-rain/j4rnet-courtyard, and the mean rain score
#     (crates/derain-core/src/rainscore.rs) of the input and of the output: rain removed lowers it
#
#   scripts/judge-stage2.sh MODEL.onnx [OUT_DIR]     (make val-data first)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${DERAIN_DATA:-$ROOT/../shared/data}"
BIN="$ROOT/target/release/derain"
MODEL="${1:?usage: scripts/judge-stage2.sh MODEL.onnx [OUT_DIR]}"
OUT="${2:-$ROOT/target/judge/$(basename "$MODEL" .onnx)}"
[ -r "$MODEL" ] || { echo "judge-stage2: model '$MODEL' not found" >&2; exit 1; }
[ -x "$BIN" ] || { echo "judge-stage2: $BIN is missing: run make release" >&2; exit 1; }
for d in runs/val-dry runs/val-dry-rain; do
  [ -d "$d" ] || { echo "judge-stage2: $d is missing: run make val-data" >&2; exit 1; }
done
mkdir -p "$OUT"
val() { # FILE SECTION KEY
  python3 -c 'import json,sys; print(f"{json.load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]]:.4f}")' "$1" "$2" "$3"
}
meanscore() { # rain-score output -> mean score
  awk -F'\t' '{s += $2; n++} END {if (n) printf "%.4f", s / n}'
}
"$BIN" eval --model "$MODEL" --pairs runs/val-dry-rain --provider cpu --json "$OUT/val-rain.json" > /dev/null
"$BIN" eval --model "$MODEL" --dry runs/val-dry --provider cpu --json "$OUT/val-dry.json" > /dev/null
echo "| model | val rain PSNR-Y / SSIM-Y | val dry mean / worst | set | NIQE in → out | rain score in → out |"
for set in spac-ra1 j4rnet-courtyard; do
  dir="$DATA/real-rain/$set"
  [ -d "$dir" ] || { echo "judge-stage2: skipping $set: $dir is absent" >&2; continue; }
  rm -rf "$OUT/$set"
  "$BIN" eval --model "$MODEL" --input "$dir" --provider cpu --out "$OUT/$set" \
    --json "$OUT/$set.json" > /dev/null
  s_in=$("$BIN" rain-score score "$dir" 2> /dev/null | meanscore)
  s_out=$("$BIN" rain-score score "$OUT/$set" 2> /dev/null | meanscore)
  echo "| $(basename "$MODEL") | $(val "$OUT/val-rain.json" mean psnr_y) / $(val "$OUT/val-rain.json" mean ssim_y)" \
    "| $(val "$OUT/val-dry.json" mean psnr_y) / $(val "$OUT/val-dry.json" worst psnr_y)" \
    "| $set | $(val "$OUT/$set.json" mean input_niqe) → $(val "$OUT/$set.json" mean niqe) | $s_in → $s_out |"
done
