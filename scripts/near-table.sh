#!/usr/bin/env bash
# The NeaR table on cub26: the train split is labelled by the MLLM SIMULATOR (unlabeled to
# the pipeline: a folder of symlinks without the class folders), refined, trained with
# each method; the test split is scored. Direct MLLM = the simulator asked about every
# test image (same accuracy, same seed). Oracle = the simulator at accuracy 1.
#
# usage: scripts/near-table.sh [OUT]     env: ACCS="0.5 0.7" SEEDS="1 2 3" DATA=path/to/cub26
#        SIM_ARGS="--systematic 0.5 --spread 0.15" (extra simulator flags), ORACLE=0 (skip it)
#        BACKBONE=efficientnet-lite0 (refine --backbone; default mobilenet-v2; train follows
#        refined.json), KNN="efficientnet-lite0 ..." (refine --knn-backbone for each: the
#        neighbours from those backbones; default: BACKBONE's), ORACLE_SEEDS="1 2 3" (default 1),
#        TRAIN=path/to/linesight-train
#        (use that binary, do not build)
# Writes OUT/results.jsonl (one line per run and method) and prints the table.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-$ROOT/target/near-table}"
DATA="${DATA:-$ROOT/../shared/data/cub26}"
ACCS="${ACCS:-0.5 0.7}"
SEEDS="${SEEDS:-1 2 3}"
METHODS="${METHODS:-prototype naive vote near}"
MANIFEST="$DATA/manifest.csv"
export LINESIGHT_NO_PROGRESS=1
mkdir -p "$OUT"
scripts/fetch-weights.sh >/dev/null
BACKBONE="${BACKBONE:-mobilenet-v2}"
KNN_ARGS=()
for k in ${KNN:-}; do KNN_ARGS+=(--knn-backbone "$k"); done
if [ -z "${TRAIN:-}" ]; then
  cargo build --quiet --bins
  TRAIN="$ROOT/target/debug/linesight-train"
fi

# Unlabeled folders: symlinks named by row number (no class names in the paths).
for split in train test; do
  if [ ! -d "$OUT/images/$split" ]; then
    mkdir -p "$OUT/images/$split"
    awk -F, -v s="$split" 'NR > 1 && $3 == s { printf "%s %05d\n", $1, NR }' "$MANIFEST" |
      while read -r p i; do ln -s "$(cd "$DATA" && realpath "$p")" "$OUT/images/$split/$i.jpg"; done
  fi
done

start_sim() { # accuracy seed -> sets SIM_PID, SIM_URL
  # shellcheck disable=SC2086
  "$TRAIN" --log warn simulate-mllm --truth "$MANIFEST" --listen 127.0.0.1:0 --accuracy "$1" --seed "$2" ${SIM_ARGS:-} \
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

one_run() { # name accuracy seed
  RUN="$OUT/runs/$1"
  mkdir -p "$RUN"
  start_sim "$2" "$3"
  for split in train test; do
    "$TRAIN" --log warn --json label --images "$OUT/images/$split" --endpoint "$SIM_URL" --model simulated \
      --concurrency 16 --out "$RUN/labels-$split.jsonl" >"$RUN/label-$split.json"
  done
  kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true
  "$TRAIN" --log warn --json label score "$RUN/labels-test.jsonl" --truth "$MANIFEST" --split test >"$RUN/direct.json"
  "$TRAIN" --log warn --json refine --images "$OUT/images/train" --labels "$RUN/labels-train.jsonl" \
    --backbone "$BACKBONE" ${KNN_ARGS[@]+"${KNN_ARGS[@]}"} --cache "$OUT/cache" --out "$RUN/refined.json" >"$RUN/refine.json"
  for m in $METHODS; do
    "$TRAIN" --log warn --json train --refined "$RUN/refined.json" --cache "$OUT/cache" --method "$m" --seed "$3" \
      --out "$RUN/ckpt-$m" --eval-manifest "$MANIFEST" --eval-split test >"$RUN/train-$m.json"
  done
  python3 - "$RUN" "$1" "$2" "$3" "$METHODS" "$BACKBONE" "${KNN:-}" >>"$OUT/results.jsonl" <<'PY'
import json, sys
run, name, acc, seed, methods, backbone, knn = sys.argv[1:8]
d = json.load(open(f"{run}/direct.json"))
print(json.dumps({"run": name, "accuracy": float(acc), "seed": int(seed), "method": "direct-mllm",
                  "cacc": d["cacc"], "top1_exact": d["accuracy"], "sacc": None}))
r = json.load(open(f"{run}/refine.json"))
for m in methods.split():
    t = json.load(open(f"{run}/train-{m}.json"))
    e = t["eval"]
    print(json.dumps({"run": name, "accuracy": float(acc), "seed": int(seed), "method": m,
                      "cacc": e["cacc"], "top1_exact": e["top1_exact"], "sacc": e["sacc"],
                      "classes": t["classes"], "train_seconds": t["train_seconds"],
                      "refine_seconds": r["seconds"], "targets_changed_by_refine": r["summary"]["targets_changed"],
                      "backbone": backbone, "knn": knn.split() or [backbone]}))
PY
}

: >"$OUT/results.jsonl"
for acc in $ACCS; do
  for seed in $SEEDS; do
    echo "== simulator accuracy $acc, seed $seed" >&2
    one_run "acc$acc-seed$seed" "$acc" "$seed"
  done
done
if [ "${ORACLE:-1}" = 1 ]; then
  for seed in ${ORACLE_SEEDS:-1}; do
    echo "== oracle (simulator accuracy 1), seed $seed" >&2
    SIM_ARGS="" METHODS="prototype naive" one_run "oracle-seed$seed" 1.0 "$seed"
  done
fi

python3 - "$OUT/results.jsonl" <<'PY' | tee "$OUT/table.md"
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
accs = sorted({r["accuracy"] for r in rows if not r["run"].startswith("oracle")})
order = ["direct-mllm", "prototype", "naive", "vote", "near"]
def cell(rs, key):
    v = [r[key] * 100 for r in rs if r[key] is not None]
    if not v: return "-"
    return f"{st.mean(v):.1f} ± {st.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
print("| method | " + " | ".join(f"cACC @{a}" for a in accs) + " | " + " | ".join(f"sACC @{a}" for a in accs) + " |")
print("|---" * (1 + 2 * len(accs)) + "|")
for m in order:
    rs = lambda a: [r for r in rows if r["method"] == m and r["accuracy"] == a and not r["run"].startswith("oracle")]
    if not any(rs(a) for a in accs): continue
    print(f"| {m} | " + " | ".join(cell(rs(a), "cacc") for a in accs) + " | " + " | ".join(cell(rs(a), "sacc") for a in accs) + " |")
for m in ["prototype", "naive"]:
    o = [r for r in rows if r["run"].startswith("oracle") and r["method"] == m]
    if o: print(f"| oracle ({m}, true names) | " + " | ".join(cell(o, "cacc") for a in accs) + " | " + " | ".join(cell(o, "sacc") for a in accs) + " |")
PY
