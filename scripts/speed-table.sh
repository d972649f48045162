#!/usr/bin/env bash
# The edge speed table (docs/benchmarks.md, "Edge speed"): the MobileNetV2 cub26 student in a
# release build, tract f32 / tract int8 / onnxruntime f32 / onnxruntime's best int8, at 1 and
# 2 threads, interleaved round by round in one process (`side-by-side`), with top-1 agreement
# on the cub26 test split (held-out photos), per-op profiles of both tract bundles, load time
# and peak RSS, and tract's allocations per run. With BEFORE=<commit> the same is measured for
# that commit's build first (its own worktree, same target dir: only linesight's crates
# rebuild), so one run gives the before/after table.
#
#   scripts/speed-table.sh [OUT_DIR]
#
# Environment:
#   BEFORE           a commit to measure too (OUT_DIR/before/); unset: only this checkout
#   MNV2_F32         the f32 student (default target/pipeline-cub26/model.lsb, made by
#                    `linesight-train pipeline --config examples/cub26.toml` when missing)
#   MNV2_INT8        its int8 bundle (default target/speed/mnv2-int8.lsb, made by
#                    `linesight-train quantize` when missing: calibration on the train split,
#                    parity on the test split, written even below the gate)
#   EXTRA_MODELS     more side-by-side specs, space-separated NAME=F32.lsb,INT8.lsb (e.g. the
#                    all-int8 bundle against the same f32 one); each is its own interleaved
#                    set of rounds, profiled like MNV2_INT8
#   ROUNDS ITERATIONS THREADS AGREEMENT_IMAGES   (default 9, 20, 1,2, 780)
#   DATA             cub26 (default ../shared/data/cub26)
#   BENCH_TARGET     the release build's target dir (default target/bench)
# Output: OUT_DIR (default docs/bench-runs/DATE-speed/) with README.md (commands, commit,
# versions, CPU, load before and after every step), side-by-side.{md,json}, edge-bench-*.json,
# edge-profile-*.txt, alloc-*.txt, and the same under before/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DATA=${DATA:-../shared/data/cub26}
ROUNDS=${ROUNDS:-9}
ITERATIONS=${ITERATIONS:-20}
THREADS=${THREADS:-1,2}
AGREEMENT_IMAGES=${AGREEMENT_IMAGES:-780}
BT=$(realpath -m "${BENCH_TARGET:-target/bench}")
MNV2_F32=${MNV2_F32:-target/pipeline-cub26/model.lsb}
MNV2_INT8=${MNV2_INT8:-target/speed/mnv2-int8.lsb}
OUT=$(realpath -m "${1:-docs/bench-runs/$(date +%F)-speed}")
W=target/ort
ORT_VERSION=1.31.1

log() { echo "speed-table: $*" >&2; }
mkdir -p "$OUT" target/speed
LOAD="$OUT/load.txt"
load() { echo "$(date -u +%FT%TZ) $1: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$LOAD"; }
: >"$LOAD"

# onnxruntime (pinned venv, as scripts/ort-bench.sh sets it up).
if [ ! -x "$W/venv/bin/python" ]; then
  log "setting up $W/venv"
  mkdir -p "$W/wheels"
  python3 -m pip download -q -d "$W/wheels" "onnxruntime==$ORT_VERSION" "onnx==1.23.2" "numpy==2.4.6" "pillow==13.0.0"
  python3 -m venv "$W/venv"
  "$W/venv/bin/pip" install -q --no-index --find-links "$W/wheels" "onnxruntime==$ORT_VERSION" "onnx==1.23.2" "numpy==2.4.6" "pillow==13.0.0"
fi
LIB=$(realpath "$(ls "$W"/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so."$ORT_VERSION" | head -1)")

# Release binaries of a source tree into target/speed/<name>/.
build() { # build NAME SRC_DIR
  local name=$1 src=$2
  load "build $name start"
  (cd "$src" && CARGO_TARGET_DIR="$BT" cargo build -q --release --workspace --bins)
  mkdir -p "target/speed/$name"
  # Hard links, not copies (the binaries are ~240 MB each); a later build replaces the
  # files in $BT and leaves these.
  ln -f "$BT"/release/{linesight-edge,linesight-train,side-by-side} "target/speed/$name/"
  # tract's allocations per run, counted by the alloc test (release, same target dir).
  (cd "$src" && CARGO_TARGET_DIR="$BT" cargo test -q --release --features linesight-edge/camera --test alloc --no-run 2>/dev/null) || true
  local t
  t=$(ls -t "$BT"/release/deps/alloc-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
  [ -n "$t" ] && ln -f "$t" "target/speed/$name/alloc-test"
  load "build $name end"
}

if [ -n "${BEFORE:-}" ]; then
  if [ ! -d target/speed/before-src ]; then
    git worktree add --detach target/speed/before-src "$BEFORE" >&2
  else
    git -C target/speed/before-src checkout -q --detach "$BEFORE"
  fi
  build before target/speed/before-src
fi
build after .

# The bundles.
EDGE=target/speed/after/linesight-edge
TRAIN=target/speed/after/linesight-train
if [ ! -f "$MNV2_F32" ]; then
  log "no $MNV2_F32: running the cub26 pipeline"
  LINESIGHT_NO_PROGRESS=1 "$TRAIN" pipeline --config examples/cub26.toml >&2
fi
if [ ! -f "$MNV2_INT8" ]; then
  log "quantising $MNV2_F32 -> $MNV2_INT8 (calibration: train split; parity: test split)"
  LINESIGHT_NO_PROGRESS=1 "$TRAIN" --json quantize --bundle "$MNV2_F32" \
    --calibration "$DATA/manifest.csv" --calibration-split train \
    --parity "$DATA/manifest.csv" --parity-split test --parity-images 780 --allow-parity-drop \
    --out "$MNV2_INT8" >"$OUT/quantize-report.json"
fi
mkdir -p "$W/mnv2-speed"
"$EDGE" inspect --bundle "$MNV2_F32" --json --extract-onnx "$W/mnv2-speed/f32.onnx.new" >"$W/mnv2-speed/inspect.json"
# Replaced only when it changed: onnxruntime's int8 model is made again when it is older.
cmp -s "$W/mnv2-speed/f32.onnx.new" "$W/mnv2-speed/f32.onnx" && rm "$W/mnv2-speed/f32.onnx.new" \
  || mv "$W/mnv2-speed/f32.onnx.new" "$W/mnv2-speed/f32.onnx"
if [ ! -f "$W/mnv2-speed/ort-int8.onnx" ] || [ "$W/mnv2-speed/f32.onnx" -nt "$W/mnv2-speed/ort-int8.onnx" ]; then
  log "onnxruntime's own int8 (QDQ / QOperator, fastest kept)"
  "$W/venv/bin/python" scripts/ort-quantize.py --onnx "$W/mnv2-speed/f32.onnx" \
    --inspect "$W/mnv2-speed/inspect.json" --data "$DATA" --out-dir "$W/mnv2-speed"
fi
cp "$W/mnv2-speed/choice.json" "$OUT/ort-quantize-choice.json"

# One build's measurements into DIR.
measure() { # measure NAME DIR
  local name=$1 dir=$2 bin=target/speed/$1
  mkdir -p "$dir"
  load "$name side-by-side start"
  local agreement=(--agreement-manifest "$DATA/manifest.csv" --agreement-split test --agreement-images "$AGREEMENT_IMAGES")
  "$bin/side-by-side" --help | grep -q -- --agreement-manifest || agreement=(--agreement-images 20)
  local plain=(--plain) nodes=(--nodes)
  "$bin/side-by-side" --help | grep -q -- --plain || plain=()
  "$bin/linesight-edge" bench --help | grep -q -- --nodes || nodes=()
  local extra=() more=()
  for m in ${EXTRA_MODELS:-}; do
    extra+=(--model "$m")
    more+=("${m#*,}")
  done
  "$bin/side-by-side" --ort-lib "$LIB" \
    --model "mnv2=$MNV2_F32,$MNV2_INT8,$W/mnv2-speed/ort-int8.onnx" "${extra[@]}" \
    --images "$DATA/images" "${agreement[@]}" \
    --threads "$THREADS" --rounds "$ROUNDS" --iterations "$ITERATIONS" "${plain[@]}" \
    --out "$dir" --log warn >/dev/null
  load "$name side-by-side end"
  for b in "$MNV2_F32" "$MNV2_INT8" "${more[@]}"; do
    local tag
    tag=$(basename "$b" .lsb)
    "$bin/linesight-edge" bench --bundle "$b" --iterations 50 --json >"$dir/edge-bench-$tag.json"
    "$bin/linesight-edge" bench --bundle "$b" --iterations 9 --profile "${nodes[@]}" >"$dir/edge-profile-$tag.txt"
    if [ -x "$bin/alloc-test" ]; then
      LINESIGHT_ALLOC_BUNDLE=$(realpath "$b") "$bin/alloc-test" --nocapture --test-threads 1 \
        >"$dir/alloc-$tag.txt" 2>&1 || true
    fi
  done
  load "$name profiles end"
}

[ -n "${BEFORE:-}" ] && measure before "$OUT/before"
measure after "$OUT"

cat >"$OUT/README.md" <<EOF
# Edge speed table, $(date -u +%FT%TZ)

Command: \`scripts/speed-table.sh $*\` (BEFORE=${BEFORE:-none} ROUNDS=$ROUNDS ITERATIONS=$ITERATIONS THREADS=$THREADS AGREEMENT_IMAGES=$AGREEMENT_IMAGES)
Commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- edge-runtime bench shared trainer || echo " (with uncommitted changes)")${BEFORE:+; before: $(git rev-parse --short "$BEFORE")}
rustc: $(rustc --version); build: release (\`cargo build --release --workspace --bins\`)
tract: 0.23.9; onnxruntime: $ORT_VERSION (PyPI wheel, $LIB)
CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores; flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_vnni|amx_int8)$' | xargs)
Bundles: $MNV2_F32 ($(sha256sum "$MNV2_F32" | cut -c1-12)), $MNV2_INT8 ($(sha256sum "$MNV2_INT8" | cut -c1-12)), onnxruntime int8 $W/mnv2-speed/ort-int8.onnx
Agreement: top-1 against tract f32 on the cub26 test split (up to $AGREEMENT_IMAGES photos).
Load average before and after each step: load.txt.

Files: side-by-side.{md,json} (medians, p95, ratios, raw latencies), edge-bench-*.json (load
time, peak RSS, p50/p95), edge-profile-*.txt (tract op-type shares), alloc-*.txt (tract's
allocations per run, tests/alloc.rs in release), ort-quantize-choice.json; before/: the same
for the BEFORE build.
EOF
log "wrote $OUT"
cat "$OUT/side-by-side.md"
