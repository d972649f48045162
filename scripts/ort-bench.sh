#!/usr/bin/env bash
# The int8 side-by-side benchmark (docs/benchmarks.md, "int8 side by side"):
# tract f32 / tract int8 / onnxruntime f32 / onnxruntime int8 (its own best encoding),
# at 1 and 2 threads, for MobileNetV2 and the ViT-B/16-shaped tower, in one process.
#
#   scripts/ort-bench.sh [OUT_DIR]
#
# Inputs (bundles; a missing int8 bundle is skipped, a missing f32 bundle skips the model):
#   MNV2_F32 MNV2_INT8 VIT_F32 VIT_INT8   default target/int8/{mnv2,vit-b16}-{f32,int8}.lsb
#   DATA        cub26 (default ../shared/data/cub26): calibration (train) and agreement photos
#   ROUNDS, ITERATIONS, VIT_ROUNDS, VIT_ITERATIONS, THREADS (default 7, 10, 5, 4, 1,2)
# Output: OUT_DIR (default docs/bench-runs/DATE-HOST-int8/) with README.md (command,
# commit, versions, CPU), side-by-side.{json,md}, the per-bundle `linesight-edge bench`
# JSON (load time, peak RSS: one process per bundle) and onnxruntime's quantisation choice.
#
# Sets up, pinned, under target/ort/: a venv with onnxruntime, onnx, numpy and pillow
# from PyPI; the side-by-side binary loads the wheel's libonnxruntime.so.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
ONNX_VERSION=1.23.2
NUMPY_VERSION=2.4.6
PILLOW_VERSION=13.0.0

W=target/ort
DATA=${DATA:-../shared/data/cub26}
INT8_DIR=${INT8_DIR:-target/int8}
MNV2_F32=${MNV2_F32:-$INT8_DIR/mnv2-f32.lsb}
MNV2_INT8=${MNV2_INT8:-$INT8_DIR/mnv2-int8.lsb}
VIT_F32=${VIT_F32:-$INT8_DIR/vit-b16-f32.lsb}
VIT_INT8=${VIT_INT8:-$INT8_DIR/vit-b16-int8.lsb}
ROUNDS=${ROUNDS:-7}
ITERATIONS=${ITERATIONS:-10}
VIT_ROUNDS=${VIT_ROUNDS:-5}
VIT_ITERATIONS=${VIT_ITERATIONS:-4}
THREADS=${THREADS:-1,2}
OUT=${1:-docs/bench-runs/$(date +%F)-$(hostname -s)-int8}

log() { echo "ort-bench: $*" >&2; }

# 1. onnxruntime and the quantiser's python packages, pinned.
if [ ! -x "$W/venv/bin/python" ] || ! "$W/venv/bin/python" -c "import onnxruntime, onnx, numpy, PIL; assert onnxruntime.__version__ == '$ORT_VERSION'" 2>/dev/null; then
  log "setting up $W/venv (onnxruntime $ORT_VERSION, onnx $ONNX_VERSION, numpy $NUMPY_VERSION, pillow $PILLOW_VERSION)"
  mkdir -p "$W/wheels"
  python3 -m pip download -q -d "$W/wheels" \
    "onnxruntime==$ORT_VERSION" "onnx==$ONNX_VERSION" "numpy==$NUMPY_VERSION" "pillow==$PILLOW_VERSION"
  python3 -m venv "$W/venv"
  "$W/venv/bin/pip" install -q --no-index --find-links "$W/wheels" \
    "onnxruntime==$ORT_VERSION" "onnx==$ONNX_VERSION" "numpy==$NUMPY_VERSION" "pillow==$PILLOW_VERSION"
fi
LIB=$(ls "$W"/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so."$ORT_VERSION" | head -1)
[ -f "$LIB" ] || { log "no libonnxruntime.so.$ORT_VERSION in the venv"; exit 2; }

# 2. The binaries (same dev profile as the tests: fully optimised).
cargo build -q -p linesight-edge --bin linesight-edge
cargo build -q -p linesight-bench --bin side-by-side
EDGE=target/debug/linesight-edge
SBS=target/debug/side-by-side

mkdir -p "$OUT"
MODEL_ARGS=()
VIT_ARGS=()
USED=()
for spec in "mnv2 $MNV2_F32 $MNV2_INT8" "vit-b16 $VIT_F32 $VIT_INT8"; do
  read -r name f32 int8 <<<"$spec"
  if [ ! -f "$f32" ]; then log "$name: no f32 bundle at $f32, skipped"; continue; fi
  [ -f "$int8" ] || { log "$name: no int8 bundle at $int8 (tract int8 skipped)"; int8=""; }
  mkdir -p "$W/$name"
  # 3. onnxruntime's own int8 model from the f32 bundle's ONNX.
  if [ ! -f "$W/$name/f32.onnx" ] || [ "$f32" -nt "$W/$name/f32.onnx" ]; then
    "$EDGE" inspect --bundle "$f32" --json --extract-onnx "$W/$name/f32.onnx" >"$W/$name/inspect.json"
  fi
  if [ ! -f "$W/$name/ort-int8.onnx" ] || [ "$W/$name/f32.onnx" -nt "$W/$name/ort-int8.onnx" ]; then
    log "$name: quantising for onnxruntime (QDQ and QOperator, per-channel; the fastest is kept)"
    "$W/venv/bin/python" scripts/ort-quantize.py --onnx "$W/$name/f32.onnx" \
      --inspect "$W/$name/inspect.json" --data "$DATA" --out-dir "$W/$name"
  fi
  cp "$W/$name/choice.json" "$OUT/ort-quantize-$name.json"
  # 4. Load time and peak RSS of each bundle, one process each.
  for b in "$f32" $int8; do
    for t in ${THREADS//,/ }; do
      "$EDGE" bench --bundle "$b" --threads "$t" --iterations 20 --json \
        >"$OUT/edge-bench-$(basename "$b" .lsb)-t$t.json"
    done
    "$EDGE" bench --bundle "$b" --iterations 5 --profile >"$OUT/edge-profile-$(basename "$b" .lsb).txt"
  done
  USED+=("$f32" $int8)
  arg="$name=$f32,$int8,$W/$name/ort-int8.onnx"
  if [ "$name" = mnv2 ]; then MODEL_ARGS+=(--model "$arg"); else VIT_ARGS+=(--model "$arg"); fi
done

# 5. The side-by-side runs (one process per model family: rounds differ).
run_sbs() {
  local dir=$1 rounds=$2 iterations=$3; shift 3
  "$SBS" --ort-lib "$LIB" "$@" --threads "$THREADS" --rounds "$rounds" --iterations "$iterations" \
    --images "$DATA/images" --out "$dir" --log warn
}
[ ${#MODEL_ARGS[@]} -gt 0 ] && run_sbs "$OUT/mnv2" "$ROUNDS" "$ITERATIONS" "${MODEL_ARGS[@]}"
[ ${#VIT_ARGS[@]} -gt 0 ] && run_sbs "$OUT/vit-b16" "$VIT_ROUNDS" "$VIT_ITERATIONS" "${VIT_ARGS[@]}"

cat >"$OUT/README.md" <<EOF
# int8 side by side, $(date -u +%FT%TZ)

Command: \`scripts/ort-bench.sh $*\` (ROUNDS=$ROUNDS ITERATIONS=$ITERATIONS VIT_ROUNDS=$VIT_ROUNDS VIT_ITERATIONS=$VIT_ITERATIONS THREADS=$THREADS)
Commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- edge-runtime bench shared || echo " (with uncommitted changes)")
rustc: $(rustc --version)
tract: 0.23.9; onnxruntime: $ORT_VERSION (PyPI wheel, $LIB)
CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores
Bundles: ${USED[*]:-none}

Files: \`*/side-by-side.{md,json}\` (medians, p95, ratios; raw latencies in the JSON),
\`edge-bench-*.json\` (\`linesight-edge bench --json\`: load time, peak RSS per bundle),
\`edge-profile-*.txt\` (op-type shares), \`ort-quantize-*.json\` (onnxruntime's int8 candidates).
EOF
log "wrote $OUT"
cat "$OUT"/*/side-by-side.md 2>/dev/null || true
