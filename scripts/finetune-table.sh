#!/usr/bin/env bash
# Fine-tuned vs frozen backbone on cub26 (issue 19). Runs scripts/near-table.sh for the
# label -> refine -> frozen near (and the oracle's frozen prototype) runs, then trains each
# run's refined.json again with the backbone's last stages fine-tuned on augmented views
# (`train --trainable-blocks`), same seed, scored on the test split.
#
# usage: scripts/finetune-table.sh [OUT]   env: ACCS="0.5 0.7" SEEDS="1 2 3" (as near-table.sh),
#        BACKBONE=mobilenet-v2 (passed on to near-table.sh; the refined file names the backbone
#        train uses), BLOCKS=1 (--trainable-blocks), FT_ARGS="..." (more train flags, e.g.
#        "--finetune-views 8 --finetune-epochs 40"), SKIP_NEAR=1 (reuse OUT/runs/*/refined.json),
#        TRAIN=path/to/linesight-train (use that binary, as near-table.sh), ORACLE=0 (no oracle
#        fine-tuning)
# Writes OUT/finetune.jsonl (one line per fine-tuned run) and prints the table beside
# near-table.sh's OUT/results.jsonl. Trunk views are cached under OUT/cache/views, so the
# seeds and accuracies after the first reuse them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-$ROOT/target/finetune-table}"
DATA="${DATA:-$ROOT/../shared/data/cub26}"
ACCS="${ACCS:-0.5 0.7}"
SEEDS="${SEEDS:-1 2 3}"
BLOCKS="${BLOCKS:-1}"
export BACKBONE="${BACKBONE:-mobilenet-v2}" ACCS SEEDS DATA
export LINESIGHT_NO_PROGRESS=1
if [ "${SKIP_NEAR:-0}" != 1 ]; then
  METHODS="near" scripts/near-table.sh "$OUT"
fi
TRAIN="${TRAIN:-$ROOT/target/debug/linesight-train}"
: >>"$OUT/finetune.jsonl"

finetune_run() { # run-dir method seed accuracy
  local run="$OUT/runs/$1" tag="ft-$2-seed$3"
  # shellcheck disable=SC2086
  "$TRAIN" --log warn --json train --refined "$run/refined.json" --cache "$OUT/cache" --method "$2" --seed "$3" \
    --trainable-blocks "$BLOCKS" ${FT_ARGS:-} --out "$run/ckpt-$tag" \
    --eval-manifest "$DATA/manifest.csv" --eval-split test >"$run/train-$tag.json"
  python3 - "$run/train-$tag.json" "$1" "$2" "$3" "$4" "$BLOCKS" "${FT_ARGS:-}" >>"$OUT/finetune.jsonl" <<'PY'
import json, sys
path, run, method, seed, acc, blocks, args = sys.argv[1:8]
t = json.load(open(path))
f = t["finetune"]
print(json.dumps({"run": run, "accuracy": float(acc), "seed": int(seed), "method": method,
                  "trainable_blocks": int(blocks), "args": args, "cacc": t["eval"]["cacc"],
                  "sacc": t["eval"]["sacc"], "finetune_seconds": t["finetune_seconds"], **f}))
PY
}

for acc in $ACCS; do
  for seed in $SEEDS; do
    echo "== fine-tune: accuracy $acc, seed $seed" >&2
    finetune_run "acc$acc-seed$seed" near "$seed" "$acc"
  done
done
# near-table.sh names its oracle runs oracle-seedN (ORACLE_SEEDS); older tables: oracle.
for seed in $SEEDS; do
  [ "${ORACLE:-1}" = 0 ] && break
  run=oracle-seed$seed
  [ -f "$OUT/runs/$run/refined.json" ] || run=oracle
  [ -f "$OUT/runs/$run/refined.json" ] || continue
  echo "== fine-tune: oracle ($run), seed $seed" >&2
  finetune_run "$run" prototype "$seed" 1.0
done

python3 - "$OUT/results.jsonl" "$OUT/finetune.jsonl" "$BLOCKS" "${FT_ARGS:-}" <<'PY' | tee "$OUT/finetune-table.md"
import json, sys, statistics as st
frozen = [json.loads(l) for l in open(sys.argv[1])]
tuned = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
blocks, args = int(sys.argv[3]), sys.argv[4]
tuned = [r for r in tuned if r["trainable_blocks"] == blocks and r["args"] == args]
def cell(v):
    v = [x * 100 for x in v if x is not None]
    if not v: return "-"
    return f"{st.mean(v):.1f} ± {st.stdev(v):.1f} (n={len(v)})" if len(v) > 1 else f"{v[0]:.1f} (n=1)"
accs = sorted({r["accuracy"] for r in frozen if not r["run"].startswith("oracle")})
print(f"| names | frozen (near / oracle prototype) | fine-tuned, {blocks} stage(s) {args} |")
print("|---|---|---|")
for a in accs:
    print(f"| near @{a} | " + cell([r["cacc"] for r in frozen if r["method"] == "near" and r["accuracy"] == a and not r["run"].startswith("oracle")])
          + " | " + cell([r["cacc"] for r in tuned if not r["run"].startswith("oracle") and r["accuracy"] == a]) + " |")
print("| oracle (true names) | " + cell([r["cacc"] for r in frozen if r["run"].startswith("oracle") and r["method"] == "prototype"])
      + " | " + cell([r["cacc"] for r in tuned if r["run"].startswith("oracle")]) + " |")
if tuned:
    def med(k): return st.median(r[k] for r in tuned)
    first = [r for r in tuned if r["trunk_views_computed"] > 0]
    print()
    print(f"fine-tuning per run (median of {len(tuned)}): {med('finetune_seconds'):.0f} s in all; tail + head "
          f"{med('tail_seconds'):.0f} s for {med('epochs_run'):.0f} epochs ({med('tail_images_per_second'):.0f} image-epochs/s)")
    for r in first:
        print(f"trunk views computed in {r['run']} seed {r['seed']}: {r['trunk_views_computed']} in {r['trunk_seconds']:.0f} s "
              f"({r['trunk_views_per_second']:.1f} views/s); later runs read them from the cache")
PY
