#!/usr/bin/env bash
# The rain score (crates/derain-core/src/rainscore.rs): reproduce the shipped fit, cross-validate
# fitting recipes on this project's own split, and report each recipe's fit once on the dev frames.
#
#   scripts/rain-score.sh [OUT_DIR]          (make val-data and make release first)
#
# Choice is made on the cross-validation alone (worst fold first, then mean): every real rain
# folder the project may fit on is held out in turn and scored against held-out dry frames
# (runs/val-dry, with their downscaled, noisy, turned and lined variants), and four more folds
# score rain rendered over those dry frames (faint streaks, with veil, behind windshield drops,
# the driving mix). The dev frames (pairs/*, clean-driving/*, every real-rain folder, incl. the
# measuring-only spac-rb2-vehicle and raindrops-on-glass) are scored once per recipe, to report.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${DERAIN_DATA:-$ROOT/../shared/data}"
BIN="$ROOT/target/release/derain"
OUT="${1:-$ROOT/target/rain-score}"
[ -x "$BIN" ] || { echo "rain-score: $BIN is missing: run make release" >&2; exit 1; }
[ -d "$DATA/real-rain" ] || { echo "rain-score: no data at $DATA: nothing to fit" >&2; exit 1; }
for d in runs/val-dry runs/val-dry-rain/rainy; do
  [ -d "$d" ] || { echo "rain-score: $d is missing: run make val-data" >&2; exit 1; }
done
mkdir -p "$OUT"
FIT_RAIN=("$DATA/real-rain/spac-ra1" "$DATA/real-rain/j4rnet-courtyard"
  "$DATA/unpaired-synthetic-rain/nturain-b1-vehicle")
ALL_RAIN=("${FIT_RAIN[@]}" "$DATA/real-rain/ddn-street" "$DATA/real-rain/idcgan")
DEV_DRY=("$DATA/pairs/rain12/clean" "$DATA/pairs/nturain-a1/clean" "$DATA/pairs/carla-dev/clean"
  "$DATA/clean-driving/bdd" "$DATA/clean-driving/kitti/image_2" "$DATA/clean-driving/udacity")
DEV_RAIN=("$DATA/pairs/rain12/rainy" "$DATA/pairs/nturain-a1/rainy" "$DATA/pairs/carla-dev/rainy"
  "$DATA"/real-rain/* "$DATA/unpaired-synthetic-rain/nturain-b1-vehicle")

# 1. The shipped fit, reproduced: its weights must equal models/rain-score.json's.
"$BIN" rain-score fit --dry ./configs/clean-train.txt --rainy "${FIT_RAIN[@]}" \
  --val-dry ./runs/val-dry --val-rainy ./runs/val-dry-rain/rainy \
  "$DATA/real-rain/ddn-street" "$DATA/real-rain/idcgan" -o "$OUT/shipped-recipe.json"
python3 - "$OUT/shipped-recipe.json" models/rain-score.json <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
same = all(abs(x - y) < 1e-9 for k in ("mean", "std", "weights") for x, y in zip(a[k], b[k]))
print("shipped fit reproduced" if same else "shipped fit NOT reproduced: the code or data changed")
PY

# 2. Recipes, cross-validated on the own split (name, then fit options).
recipes=(
  "shipped|--presets mixed --synth-copies 3"
  "driving16-hn|--presets mixed,driving --synth-copies 16 --hard-negatives"
)
for r in "${recipes[@]}"; do
  name="${r%%|*}"; read -r -a opts <<< "${r#*|}"
  "$BIN" rain-score cv --dry ./configs/clean-train.txt --rainy "${ALL_RAIN[@]}" \
    --val-dry ./runs/val-dry "${opts[@]}" --json "$OUT/cv-$name.json" | tee "$OUT/cv-$name.txt"
  # 3. Fitted on everything the project may fit on, reported once on the dev frames.
  "$BIN" rain-score fit --dry ./configs/clean-train.txt --rainy "${ALL_RAIN[@]}" "${opts[@]}" \
    --val-dry ./runs/val-dry --val-rainy ./runs/val-dry-rain/rainy -o "$OUT/fit-$name.json"
  "$BIN" rain-score eval --model "$OUT/fit-$name.json" --dry "${DEV_DRY[@]}" \
    --rainy "${DEV_RAIN[@]}" --json "$OUT/dev-$name.json" | tee "$OUT/dev-$name.txt"
done
echo
for r in "${recipes[@]}"; do
  name="${r%%|*}"
  printf '%-14s own split: %s | dev: %s\n' "$name" "$(tail -1 "$OUT/cv-$name.txt")" \
    "$(tail -1 "$OUT/dev-$name.txt" | cut -d';' -f1)"
done
