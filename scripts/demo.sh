#!/usr/bin/env bash
# The main job on the embedded default: labelled demo photos -> prototype bundle ->
# the edge runtime decides on held-out photos.
#
# 1. fetch the real MobileNetV2 weights (pinned, hash-checked; see scripts/fetch-weights.sh)
# 2. build both binaries
# 3. linesight-train prototypes on models/demo (5 bird species, 6 labelled photos each)
# 4. linesight-edge classify the 15 held-out photos, one JSON line each
# 5. linesight-train eval on the same held-out photos: cACC and exact top-1
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${DEMO_OUT:-$ROOT/target/demo}"
mkdir -p "$OUT"

scripts/fetch-weights.sh
cargo build --quiet --bins
TRAIN="$ROOT/target/debug/linesight-train"
EDGE="$ROOT/target/debug/linesight-edge"

echo "== prototypes: 30 labelled demo photos -> $OUT/demo.lsb"
"$TRAIN" --log warn prototypes --manifest models/demo/manifest.csv --split train \
  --model-id demo-birds --out "$OUT/demo.lsb" > "$OUT/prototypes.json"
cat "$OUT/prototypes.json"

echo "== linesight-edge classify: 15 held-out photos"
mapfile -t TEST_IMAGES < <(awk -F, 'NR > 1 && $3 == "test" { print "models/demo/" $1 }' models/demo/manifest.csv)
"$EDGE" classify --bundle "$OUT/demo.lsb" --json "${TEST_IMAGES[@]}" | tee "$OUT/decisions.jsonl"

echo "== eval on the held-out photos"
"$TRAIN" --log warn --json eval --bundle "$OUT/demo.lsb" --manifest models/demo/manifest.csv --split test | tee "$OUT/eval.json"
