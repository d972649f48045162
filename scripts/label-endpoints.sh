#!/usr/bin/env bash
# Labelling across several MLLM servers, measured (issue 18): `linesight-train label` on the
# cub26 train split (775 photos) against `linesight-train simulate-mllm` processes (a
# SIMULATOR of a multimodal LLM, not a model; every server gets the same --seed, so they
# behave as one model served three times).
#
# 1. Kill run: three simulators, per-endpoint --concurrency; the third is SIGKILLed once a
#    third of the naming answers are in. Checked from the answer log: every image answered
#    exactly once; calls, answers, errors and set-asides per endpoint from the accounting.
# 2. Throughput: 1 endpoint vs 3 endpoints, same per-endpoint concurrency and simulated
#    latency, ROUNDS rounds interleaved (the order alternates), a fresh log each time; the
#    naming round's answers/s (`answers_per_s` of the accounting). Medians.
#
# Usage: scripts/label-endpoints.sh [OUT_DIR]
#   OUT_DIR default: docs/bench-runs/<date>-<host>-label-endpoints
#   env: LATENCY_MS (200: mean simulated latency; each request 0.5-1.5x), CONCURRENCY (4 per
#   endpoint), ROUNDS (3), BIN (target/release/linesight-train: an optimised build without
#   debug assertions, `cargo build --release --bin linesight-train`), DATA (../shared/data/cub26)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LATENCY_MS="${LATENCY_MS:-200}"
CONCURRENCY="${CONCURRENCY:-4}"
ROUNDS="${ROUNDS:-3}"
BIN="${BIN:-target/release/linesight-train}"
DATA="${DATA:-../shared/data/cub26}"
OUT="${1:-docs/bench-runs/$(date -u +%Y-%m-%d)-$(hostname -s)-label-endpoints}"
[ -x "$BIN" ] || { echo "label-endpoints.sh: \`$BIN\` not found; build it: cargo build --release --bin linesight-train" >&2; exit 2; }
[ -f "$DATA/manifest.csv" ] || { echo "label-endpoints.sh: \`$DATA/manifest.csv\` not found (set DATA)" >&2; exit 2; }
MANIFEST="$(cd "$DATA" && pwd)/manifest.csv"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export LINESIGHT_NO_PROGRESS=1

# The train photos under neutral names, as `pipeline` links them.
mkdir -p "$WORK/images"
python3 - "$MANIFEST" "$WORK/images" <<'EOF'
import csv, os, sys
manifest, out = sys.argv[1], sys.argv[2]
base = os.path.dirname(manifest)
rows = [r for r in csv.DictReader(open(manifest)) if r["split"] == "train"]
for i, r in enumerate(rows):
    ext = os.path.splitext(r["path"])[1]
    os.symlink(os.path.join(base, r["path"]), os.path.join(out, f"{i:05}{ext}"))
print(f"{len(rows)} train photos", file=sys.stderr)
EOF
N=$(ls "$WORK/images" | wc -l)

# Starts simulator number $1; sets URL[$1] and PID[$1].
declare -A URL PID
start_sim() {
  local err="$WORK/sim$1.err"
  : >"$err"
  "$BIN" simulate-mllm --truth "$MANIFEST" --listen 127.0.0.1:0 --seed 1 \
    --latency-ms "$LATENCY_MS" >/dev/null 2>"$err" &
  PID[$1]=$!
  PIDS+=("$!")
  disown "$!" # no job-control message when one is killed on purpose
  for _ in $(seq 200); do
    URL[$1]=$(grep -o 'http://[0-9.:]*/v1' "$err" | head -1 || true)
    [ -n "${URL[$1]}" ] && return
    sleep 0.05
  done
  echo "label-endpoints.sh: simulator $1 did not start: $(cat "$err")" >&2
  exit 2
}

# label LOG ENDPOINT... (round 1 skipped: the context is given, so only naming is timed)
label() {
  local log="$1"
  shift
  local args=()
  for e in "$@"; do args+=(--endpoint "$e"); done
  "$BIN" --json label --images "$WORK/images" "${args[@]}" --model simulated \
    --concurrency "$CONCURRENCY" --category bird --expert ornithologist --granularity species \
    --out "$log" >"$log.report.json" 2>"$log.err"
}

naming_lines() {
  if [ -f "$1" ]; then grep -c '"round":"name"' "$1" || true; else echo 0; fi
}

for i in 1 2 3; do start_sim "$i"; done

# 1. Kill run.
KILL_LOG="$WORK/kill/labels.jsonl"
mkdir -p "$WORK/kill"
label "$KILL_LOG" "${URL[1]}" "${URL[2]}" "${URL[3]}" &
LABEL_PID=$!
KILL_AT=$((N / 3))
while [ "$(naming_lines "$KILL_LOG")" -lt "$KILL_AT" ]; do
  kill -0 "$LABEL_PID" 2>/dev/null || { echo "label ended before the kill: $(cat "$KILL_LOG.err")" >&2; exit 2; }
  sleep 0.05
done
KILLED_AFTER=$(naming_lines "$KILL_LOG")
kill -9 "${PID[3]}"
while kill -0 "${PID[3]}" 2>/dev/null; do sleep 0.01; done
wait "$LABEL_PID"
cp "$KILL_LOG" "$OUT/kill-labels.jsonl"
cp "$KILL_LOG.accounting.json" "$OUT/kill-accounting.json"
python3 - "$KILL_LOG" "$KILL_LOG.accounting.json" "$N" "$KILLED_AFTER" "${URL[3]}" >"$OUT/kill-summary.md" <<'EOF'
import collections, json, sys
log, acc, n, killed_after, killed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
recs = [json.loads(l) for l in open(log) if l.strip()]
naming = [r for r in recs if r["round"] == "name"]
per_image = collections.Counter(r["image_sha256"] for r in naming)
by_endpoint = collections.Counter(r["endpoint"] for r in naming)
a = json.load(open(acc))
ok = len(per_image) == n and all(c == 1 for c in per_image.values())
print(f"SIGKILL of `{killed}` after {killed_after} of {n} naming answers were logged.\n")
print(f"Naming answers in the log: {len(naming)}; distinct images: {len(per_image)}; "
      f"images answered more than once: {sum(1 for c in per_image.values() if c > 1)}; "
      f"every image answered exactly once: {'yes' if ok else 'NO'}; run failures: {a['failed']}.\n")
print("| endpoint | concurrency | calls | answers (accounting) | answers (log) | errors | set aside | answer latency p50 / p95 ms |")
print("|---|---|---|---|---|---|---|---|")
for e in a["endpoints"]:
    kinds = ", ".join(f"{k} {v}" for k, v in e["error_kinds"].items()) or "-"
    mark = " (killed)" if e["url"] == killed else ""
    print(f"| `{e['url']}`{mark} | {e['concurrency']} | {e['calls']} | {e['answers']} | "
          f"{by_endpoint.get(e['url'], 0)} | {e['errors']} ({kinds}) | {e['set_aside']} | "
          f"{e['latency_ms']['p50']:.0f} / {e['latency_ms']['p95']:.0f} |")
print(f"\nAll calls: {a['calls']}; naming answers/s: {a['answers_per_s']:.1f}.")
if not ok:
    sys.exit(1)
EOF
cat "$OUT/kill-summary.md"

# 2. Throughput: the killed server comes back; 1 vs 3 endpoints, interleaved.
start_sim 3
echo "round,endpoints,answers,naming_wall_s,answers_per_s,calls,load1" >"$OUT/raw.csv"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="1 3"; else order="3 1"; fi
  for k in $order; do
    log="$WORK/r$r-$k/labels.jsonl"
    mkdir -p "$(dirname "$log")"
    if [ "$k" = 1 ]; then label "$log" "${URL[1]}"; else label "$log" "${URL[1]}" "${URL[2]}" "${URL[3]}"; fi
    python3 - "$log.accounting.json" "$r" "$k" >>"$OUT/raw.csv" <<'EOF'
import json, os, sys
a = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]},{sys.argv[3]},{a['naming']['answered']},{a['naming_wall_s']:.3f},{a['answers_per_s']:.2f},{a['calls']},{os.getloadavg()[0]:.1f}")
EOF
    tail -1 "$OUT/raw.csv"
  done
done
python3 - "$OUT/raw.csv" "$LATENCY_MS" "$CONCURRENCY" >"$OUT/summary.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
lat, conc = int(sys.argv[2]), int(sys.argv[3])
med = {}
print(f"Simulated latency {lat} ms mean (0.5-1.5x per request), concurrency {conc} per endpoint, {len(rows)//2} rounds interleaved.\n")
print("| endpoints | in flight at most | answers/s median | min | max | ideal (in flight / latency) |")
print("|---|---|---|---|---|---|")
for k in ("1", "3"):
    v = [float(r["answers_per_s"]) for r in rows if r["endpoints"] == k]
    med[k] = statistics.median(v)
    print(f"| {k} | {int(k)*conc} | {med[k]:.1f} | {min(v):.1f} | {max(v):.1f} | {int(k)*conc*1000/lat:.1f} |")
print(f"\nRatio 3 / 1 endpoints (medians): {med['3']/med['1']:.2f}x.")
EOF
cat "$OUT/summary.md"
{
  echo "# label across endpoints, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Command: \`LATENCY_MS=$LATENCY_MS CONCURRENCY=$CONCURRENCY ROUNDS=$ROUNDS BIN=$BIN scripts/label-endpoints.sh $OUT\`"
  echo
  echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "- $("$BIN" --version 2>/dev/null || echo linesight-train), $(rustc --version)"
  echo "- data: $MANIFEST, train split, $N photos"
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- servers: \`simulate-mllm\` (a simulator), seed 1, accuracy 0.7, latency $LATENCY_MS ms mean"
  echo
  echo "Files: kill-summary.md, kill-labels.jsonl, kill-accounting.json (run 1); raw.csv, summary.md (run 2)."
} >"$OUT/README.md"
echo "label-endpoints.sh: results in $OUT"
