#!/usr/bin/env bash
# The levers table on cub26 (issue 8): what each signal that does not share the MLLM's
# habits adds to NeaR. The train split is labelled by the MLLM SIMULATOR (unlabeled to the
# pipeline: symlinks named by row number), refined, trained; the test split is scored.
#
# Rows (per simulator seed):
#   direct MLLM            the simulator asked once about every test image (greedy)
#   direct MLLM + list     the same with the species list offered in the prompt
#   naive / near           train labelled once (greedy), no lever
#   near + confusion       refine --correct-confusion (habits estimated from neighbours only)
#   near + samples         label --samples $SAMPLES --temperature $TEMP
#   near + vocabulary      label --vocabulary and refine --vocabulary (the 26 species names)
#   near + verified        refine --verified: $VERIFIED train images per class, true labels
#   near + all             all three levers together
#
# usage: scripts/levers-table.sh [OUT]
# env:   ACC=0.6 SEEDS="1 2 3" SIM_ARGS="--systematic 0.5 --spread 0.15" SAMPLES=5 TEMP=1.0
#        VERIFIED=2 DATA=path/to/cub26
# Writes OUT/results.jsonl (one line per run and row) and prints the table.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-$ROOT/target/levers-table}"
DATA="${DATA:-$ROOT/../shared/data/cub26}"
ACC="${ACC:-0.6}"
SEEDS="${SEEDS:-1 2 3}"
SIM_ARGS="${SIM_ARGS:---systematic 0.5 --spread 0.15}"
SAMPLES="${SAMPLES:-5}"
TEMP="${TEMP:-1.0}"
VERIFIED="${VERIFIED:-2}"
MANIFEST="$DATA/manifest.csv"
export LINESIGHT_NO_PROGRESS=1
mkdir -p "$OUT"
scripts/fetch-weights.sh >/dev/null
cargo build --quiet --bins
TRAIN="$ROOT/target/debug/linesight-train"
T() { "$TRAIN" --log warn --json "$@"; }

for split in train test; do
  if [ ! -d "$OUT/images/$split" ]; then
    mkdir -p "$OUT/images/$split"
    awk -F, -v s="$split" 'NR > 1 && $3 == s { printf "%s %05d\n", $1, NR }' "$MANIFEST" |
      while read -r p i; do ln -s "$(cd "$DATA" && realpath "$p")" "$OUT/images/$split/$i.jpg"; done
  fi
done
# The vocabulary hint: the species list a user would have (the class names, nothing else).
awk -F, 'NR > 1 { print $2 }' "$MANIFEST" | sort -u >"$OUT/species.txt"

start_sim() { # seed -> SIM_PID, SIM_URL
  # shellcheck disable=SC2086
  "$TRAIN" --log warn simulate-mllm --truth "$MANIFEST" --listen 127.0.0.1:0 --accuracy "$ACC" --seed "$1" $SIM_ARGS \
    >"$RUN/sim.json" 2>"$RUN/sim.err" &
  SIM_PID=$!
  for _ in $(seq 100); do
    SIM_URL="$(grep -o 'http://[0-9.:]*/v1' "$RUN/sim.err" || true)"
    [ -n "$SIM_URL" ] && return 0
    sleep 0.1
  done
  echo "simulator did not start: $(cat "$RUN/sim.err")" >&2
  exit 1
}

label() { # split out [label flags...]
  local split="$1" out="$2"; shift 2
  T label --images "$OUT/images/$split" --endpoint "$SIM_URL" --model simulated --concurrency 16 \
    --category bird --expert ornithologist --granularity species --out "$RUN/$out.jsonl" "$@" >"$RUN/$out.label.json"
}

refine_train() { # row labels method [refine flags...]
  local row="$1" labels="$2" method="$3"; shift 3
  T refine --images "$OUT/images/train" --labels "$RUN/$labels.jsonl" --cache "$OUT/cache" --category bird \
    --out "$RUN/refined-$row.json" "$@" >"$RUN/refine-$row.json"
  T train --refined "$RUN/refined-$row.json" --cache "$OUT/cache" --method "$method" --seed "$SEED" \
    --out "$RUN/ckpt-$row" --eval-manifest "$MANIFEST" --eval-split test >"$RUN/train-$row.json"
}

: >"$OUT/results.jsonl"
for SEED in $SEEDS; do
  echo "== accuracy $ACC $SIM_ARGS, seed $SEED" >&2
  RUN="$OUT/runs/seed$SEED"
  mkdir -p "$RUN"
  # Verified images: $VERIFIED train rows per class, drawn with the seed.
  python3 - "$MANIFEST" "$VERIFIED" "$SEED" >"$RUN/verified.csv" <<'PY'
import csv, os, random, sys
manifest, k, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = os.path.dirname(os.path.abspath(manifest))
rows = [r for r in csv.DictReader(open(manifest)) if r["split"] == "train"]
by = {}
for r in rows: by.setdefault(r["label"], []).append(r)
rng = random.Random(seed)
print("path,label,split")
for label in sorted(by):
    for r in rng.sample(by[label], min(k, len(by[label]))):
        print(f'{os.path.join(base, r["path"])},{label},train')
PY
  start_sim "$SEED"
  label test direct
  label test direct-list --vocabulary "$OUT/species.txt"
  label train n1
  label train n5 --samples "$SAMPLES" --temperature "$TEMP"
  label train list --vocabulary "$OUT/species.txt"
  label train all --samples "$SAMPLES" --temperature "$TEMP" --vocabulary "$OUT/species.txt"
  kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true
  T label score "$RUN/direct.jsonl" --truth "$MANIFEST" --split test >"$RUN/score-direct.json"
  T label score "$RUN/direct-list.jsonl" --truth "$MANIFEST" --split test >"$RUN/score-direct-list.json"
  refine_train naive n1 naive
  refine_train near n1 near
  refine_train confusion n1 near --correct-confusion
  refine_train samples n5 near
  refine_train vocabulary list near --vocabulary "$OUT/species.txt"
  refine_train verified n1 near --verified "$RUN/verified.csv"
  refine_train all all near --vocabulary "$OUT/species.txt" --verified "$RUN/verified.csv"
  python3 - "$RUN" "$SEED" "$ACC" "$SIM_ARGS" "$VERIFIED" >>"$OUT/results.jsonl" <<'PY'
import json, sys
run, seed, acc, sim_args, verified = sys.argv[1:6]
def calls(name):
    return json.load(open(f"{run}/{name}.label.json"))["naming"]["questions"]
common = {"seed": int(seed), "accuracy": float(acc), "sim_args": sim_args}
for row, name in [("direct MLLM", "direct"), ("direct MLLM + list", "direct-list")]:
    d = json.load(open(f"{run}/score-{name}.json"))
    print(json.dumps({**common, "row": row, "cacc": d["cacc"], "sacc": None, "top1_exact": d["accuracy"],
                      "mllm_calls_train": 0, "mllm_calls_per_test_image": 1, "expert_labels": 0}))
rows = [("naive", "naive", "n1", 0), ("near", "near", "n1", 0), ("near + confusion", "confusion", "n1", 0),
        ("near + samples", "samples", "n5", 0), ("near + vocabulary", "vocabulary", "list", 0),
        ("near + verified", "verified", "n1", int(verified)), ("near + all", "all", "all", int(verified))]
for row, tag, labels, v in rows:
    t = json.load(open(f"{run}/train-{tag}.json"))
    r = json.load(open(f"{run}/refine-{tag}.json"))
    e = t["eval"]
    print(json.dumps({**common, "row": row, "cacc": e["cacc"], "sacc": e["sacc"], "top1_exact": e["top1_exact"],
                      "classes": t["classes"], "mllm_calls_train": calls(labels), "mllm_calls_per_test_image": 0,
                      "expert_labels": r["summary"]["signals"]["verified"], "signals": r["summary"]["signals"],
                      "targets_changed_by_training": t["targets_changed_by_training"],
                      "estimated_mllm_accuracy": r.get("estimated_mllm_accuracy"),
                      "habits": r.get("habits", [])[:8]}))
PY
done

python3 - "$OUT/results.jsonl" <<'PY' | tee "$OUT/table.md"
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
order = []
for r in rows:
    if r["row"] not in order: order.append(r["row"])
def cell(v):
    v = [x * 100 for x in v if x is not None]
    if not v: return "-"
    return f"{st.mean(v):.1f} ± {st.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
base = [r["cacc"] for r in rows if r["row"] == "direct MLLM"]
print("| row | cACC | sACC | vs direct MLLM (cACC points) | MLLM calls (train labelling) | MLLM calls per new image | expert labels |")
print("|---|---|---|---|---|---|---|")
for name in order:
    rs = [r for r in rows if r["row"] == name]
    gain = st.mean(r["cacc"] for r in rs) * 100 - st.mean(base) * 100
    print(f"| {name} | {cell([r['cacc'] for r in rs])} | {cell([r['sacc'] for r in rs])} | {gain:+.1f} | "
          f"{rs[0]['mllm_calls_train']} | {rs[0]['mllm_calls_per_test_image']} | {rs[0]['expert_labels']} |")
PY
