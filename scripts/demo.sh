#!/usr/bin/env bash
# The main job on the embedded default: unlabeled photos -> MLLM names -> NeaR -> bundle ->
# edge decisions on held-out photos.
#
# 1. fetch the real MobileNetV2 and all-MiniLM-L6-v2 weights (pinned, hash-checked)
# 2. build both binaries
# 3. linesight-train pipeline --config examples/demo.toml: the MLLM SIMULATOR (in-process,
#    accuracy 0.7) names 30 unlabeled demo photos (5 bird species), refine cleans the names
#    with the photos' neighbours, train fits the NeaR head, export writes a parity-checked
#    bundle, eval scores it on the 15 held-out photos
# 4. linesight-edge classify decides on the 15 held-out photos, one JSON line each
# 5. a summary: accuracy, and MLLM calls made vs what asking the MLLM about every photo costs
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/demo"
mkdir -p "$OUT"

scripts/fetch-weights.sh
# With libclang present (CI installs it first), build with the features scripts/test.sh
# tests with, so its `cargo test` does not rebuild tract and friends for other features.
FEATURES=()
if scripts/test.sh --check-libclang; then FEATURES=(--features linesight-edge/camera); fi
cargo build --quiet --bins "${FEATURES[@]}"
TRAIN="$ROOT/target/debug/linesight-train"
EDGE="$ROOT/target/debug/linesight-edge"

echo "== pipeline: label (simulated MLLM) -> refine -> train (near) -> export -> eval"
rm -rf "$OUT/pipeline"   # a fresh run: the MLLM is asked again (the answer log is the cache)
"$TRAIN" --log warn --json pipeline --config examples/demo.toml > "$OUT/pipeline.json"
python3 - "$OUT/pipeline.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
for s in p["stages"]:
    r = s["report"] or {}
    keep = {k: r[k] for k in ("calls", "classes", "targets_changed", "targets_filled", "clean_share", "bundle_bytes", "cacc", "top1_exact") if k in r}
    if "export" in r:
        keep["max_abs_logit_diff"] = r["export"]["max_abs_logit_diff"]
    print(f"  {s['stage']:<7} {s['status']:<8} {s['seconds']:6.1f} s  {json.dumps(keep)}")
PY

echo "== linesight-edge classify: 15 held-out photos"
mapfile -t TEST_IMAGES < <(awk -F, 'NR > 1 && $3 == "test" { print "models/demo/" $1 }' models/demo/manifest.csv)
"$EDGE" classify --bundle "$OUT/pipeline/model.lsb" --json "${TEST_IMAGES[@]}" | tee "$OUT/decisions.jsonl"

echo "== summary"
python3 - "$OUT/pipeline.json" "$OUT/decisions.jsonl" "${#TEST_IMAGES[@]}" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
decisions = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
held_out = int(sys.argv[3])
e = p["eval"]
print(f"held-out photos: {e['n']}  cACC {e['cacc']*100:.1f}%  exact top-1 {e['top1_exact']*100:.1f}%  sACC {e['sacc'] if e['sacc'] is None else round(e['sacc']*100,1)}%")
print(f"MLLM calls made: {p['mllm_calls']} (naming {p['labelled_images']} training photos once, plus round 1)")
print(f"edge decisions: {len(decisions)} held-out photos decided on the box with 0 MLLM calls "
      f"(asking the MLLM directly: {held_out} calls, and one per photo for as long as the line runs)")
PY
