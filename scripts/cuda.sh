#!/usr/bin/env bash
# The trainer's `cuda` build: candle's CUDA backend for `train --device cuda` and
# `pipeline --device cuda` (issue 19; docs/near.md "GPU host"). CI builds and tests without
# it; this script is the GPU host's build and its check.
#
#   scripts/cuda.sh build          linesight-train with --features linesight-trainer/cuda,
#                                  into $TARGET/release/ (default target/cuda)
#   scripts/cuda.sh check          build, then the trainer's tests in that build: every CPU
#                                  test, and trainer/tests/it/cuda.rs, shown (GPU against CPU;
#                                  on a host without a GPU, the error that names the device).
#                                  Missing weights fail; where nvidia-smi lists a GPU, a GPU
#                                  test that cannot open it fails instead of skipping.
#   scripts/cuda.sh measure [OUT]  cub26 (examples/cub26-finetuned.toml): the pipeline on the
#                                  GPU, then the same fine-tuning (that file's [train]) on each
#                                  of $DEVICES with its own empty view cache, side by side
#                                  (OUT default docs/bench-runs/DATE-HOST-cuda)
#
# The CUDA toolkit: the host's own (`nvcc` on PATH, or $CUDA_HOME/bin/nvcc), or else NVIDIA's
# CUDA 13.4 wheels from PyPI, pinned below and unpacked under target/cuda-toolkit/13.4.92/ (nvcc,
# NVVM, CRT, runtime headers, CCCL, cuBLAS, cuRAND, NVRTC: about 700 MB to download).
# Linking needs the driver's libcuda.so. A GPU host has it from its NVIDIA driver; on a host
# without a driver (a build-only check), INSTALL_LIBCUDA=1 installs Debian bookworm's
# `libcuda1` from its non-free component (as root; adds contrib and non-free, where its
# dependencies live, to apt's sources).
#
# Env: CUDA_COMPUTE_CAP (the GPU's, from nvidia-smi; else 90, H100 and H200), TARGET,
#      DEVICES (measure; default "cpu cuda"), DATA (default ../shared/data/cub26: the set
#      examples/cub26-finetuned.toml names; measure scores its test split),
#      LINESIGHT_REQUIRE_GPU=1 (check: a missing GPU fails the GPU tests instead of SKIPPED).
#
# A GPU host's driver must be at least as new as the toolkit: candle hands the driver PTX
# to compile, and a driver refuses PTX from a newer toolkit (CUDA_ERROR_UNSUPPORTED_PTX_VERSION).
# The script compares nvidia-smi's "CUDA Version" with nvcc's and stops when the toolkit is
# newer: install the toolkit that matches the driver, or point CUDA_HOME at it.
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_WHEELS=(
  nvidia-cuda-nvcc==13.4.92 nvidia-nvvm==13.4.92 nvidia-cuda-crt==13.4.92
  nvidia-cuda-runtime==13.4.92 nvidia-cuda-nvrtc==13.4.92 nvidia-cuda-cccl==13.3.5.0.6
  nvidia-cublas==13.10.0.20 nvidia-curand==10.4.5.25
)
WHEELS_CUDA=13.4 # the CUDA release of the wheels above
TOOLKIT_DIR=target/cuda-toolkit/13.4.92 # one folder per pin: a new pin fetches afresh
TARGET=${TARGET:-target/cuda}
DATA=${DATA:-../shared/data/cub26}
BIN=$TARGET/release/linesight-train

log() { echo "cuda.sh: $*" >&2; }
die() { log "$*"; exit 2; }

# The CUDA release the driver runs ("CUDA Version" in nvidia-smi), empty without a driver
# (or when nvidia-smi fails: a driver/library mismatch is reported by the first CUDA call).
driver_cuda() {
  command -v nvidia-smi >/dev/null || return 0
  { nvidia-smi 2>/dev/null || true; } | sed -n 's/.*CUDA Version: *\([0-9]*\.[0-9]*\).*/\1/p' | head -1
}

# How many GPUs nvidia-smi lists (0 without a driver or when it fails).
gpus() {
  command -v nvidia-smi >/dev/null || { echo 0; return; }
  { nvidia-smi -L 2>/dev/null || true; } | grep -c '^GPU ' || true
}

# ldconfig's cache listing (ldconfig lives in /sbin, off a Debian user's PATH), captured
# whole: `ldconfig -p | grep -q` can end in SIGPIPE, which pipefail turns into a miss.
ld_cache() {
  local ldc
  ldc=$(command -v ldconfig || echo /sbin/ldconfig)
  "$ldc" -p 2>/dev/null || true
}

# True when release $1 is newer than release $2 (sort -V order).
newer() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" = "$1" ]; }

# The toolkit: the host's, else the pinned wheels. Sets CUDA_HOME, PATH, LD_LIBRARY_PATH.
toolkit() {
  if [ -n "${CUDA_HOME:-}" ] && [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    die "CUDA_HOME=$CUDA_HOME has no bin/nvcc: point it at a CUDA toolkit's folder, or unset it to use nvcc from PATH or the pinned wheels"
  fi
  if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null; then
    # Through links (/usr/local/bin/nvcc -> /usr/local/cuda-12.x/bin/nvcc) to the toolkit.
    CUDA_HOME=$(cd "$(dirname "$(readlink -f "$(command -v nvcc)")")/.." && pwd)
  fi
  if [ -z "${CUDA_HOME:-}" ]; then
    CUDA_HOME=$PWD/$TOOLKIT_DIR/nvidia/cu13
    if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
      # Before 700 MB of downloads: a driver older than the wheels would refuse their PTX.
      # (PyPI's CUDA 12 nvcc wheels carry only ptxas, not nvcc: such a host needs its own
      # toolkit.)
      local drv
      drv=$(driver_cuda)
      if [ -n "$drv" ] && newer "$WHEELS_CUDA" "$drv"; then
        die "no CUDA toolkit on this host, and the driver runs CUDA $drv, older than the CUDA $WHEELS_CUDA wheels this script fetches (their PTX would be refused). Install the CUDA $drv toolkit (NVIDIA's installer or your distribution's nvidia-cuda-toolkit) and rerun with CUDA_HOME set to it, or update the driver to one for CUDA $WHEELS_CUDA or later."
      fi
      log "no CUDA toolkit on this host: fetching NVIDIA's CUDA $WHEELS_CUDA wheels into $TOOLKIT_DIR"
      rm -rf "$TOOLKIT_DIR"
      mkdir -p "$TOOLKIT_DIR/wheels"
      python3 -m pip download -q --no-deps -d "$TOOLKIT_DIR/wheels" "${CUDA_WHEELS[@]}"
      for w in "$TOOLKIT_DIR"/wheels/*.whl; do
        python3 -m zipfile -e "$w" "$TOOLKIT_DIR"
      done
      chmod +x "$CUDA_HOME"/bin/* "$CUDA_HOME"/nvvm/bin/*
      # The linker asks for the unversioned names (-lcublas ...); the wheels ship .so.N.
      for lib in "$CUDA_HOME"/lib/lib*.so.*; do
        base=${lib%%.so.*}.so
        [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
      done
    fi
  fi
  export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
  export LD_LIBRARY_PATH="$CUDA_HOME/lib:$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local release
  release=$(nvcc --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
  log "toolkit: $CUDA_HOME (CUDA $release)"
  if command -v nvidia-smi >/dev/null; then
    local driver
    driver=$(driver_cuda)
    if [ -n "$driver" ] && newer "$release" "$driver"; then
      die "the driver runs CUDA $driver but the toolkit is CUDA $release: its PTX would be refused at the first kernel. Install a CUDA $driver toolkit and set CUDA_HOME to it (or update the driver)."
    fi
    if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
      # Drivers before 510 cannot answer compute_cap: set CUDA_COMPUTE_CAP (e.g. 80, 86, 90).
      CUDA_COMPUTE_CAP=$({ nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null || true; } | head -1 | tr -d '.[:space:]')
      case "$CUDA_COMPUTE_CAP" in
        '' | *[!0-9]*) [ "$(gpus)" = 0 ] || die "nvidia-smi could not tell the GPU's compute capability: set CUDA_COMPUTE_CAP (e.g. 80 for A100, 86 for RTX 30xx/A10, 89 for L4/RTX 40xx, 90 for H100/H200)"
                       CUDA_COMPUTE_CAP= ;;
      esac
    fi
  fi
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
  log "compute capability: $CUDA_COMPUTE_CAP"
}

# libcuda.so for the linker (and at run time): the driver's, or Debian's for a build-only host.
libcuda() {
  local cache
  cache=$(ld_cache)
  if grep -q 'libcuda\.so ' <<<"$cache"; then
    return
  fi
  local d so1
  for d in lib/stubs lib64/stubs targets/x86_64-linux/lib/stubs; do
    [ -e "$CUDA_HOME/$d/libcuda.so" ] && return # a full toolkit's link stub
  done
  # A driver with only the versioned name: link the wheels' toolkit to it.
  so1=$(sed -n 's/.*libcuda\.so\.1 (libc6,x86-64) => //p' <<<"$cache" | head -1)
  if [ -n "$so1" ] && [ -w "$CUDA_HOME/lib" ]; then
    ln -sf "$so1" "$CUDA_HOME/lib/libcuda.so"
    return
  fi
  if [ "${INSTALL_LIBCUDA:-0}" != 1 ]; then
    die "no libcuda.so (the NVIDIA driver's library) to link against. On a GPU host install the NVIDIA driver; to only build here, rerun with INSTALL_LIBCUDA=1 (Debian, root: installs libcuda1 from non-free)."
  fi
  [ "$(id -u)" = 0 ] || die "INSTALL_LIBCUDA=1 needs root"
  log "installing Debian's libcuda1 (non-free) to link against"
  cat >/etc/apt/sources.list.d/linesight-nonfree.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libcuda1 >/dev/null
}

build() {
  toolkit
  libcuda
  log "building linesight-train with the cuda feature into $TARGET (first build: ~15 min of CUDA kernels)"
  CARGO_TARGET_DIR=$TARGET cargo build --release -p linesight-trainer --features cuda --bins
  log "built $BIN"
}

check() {
  build
  # Real weights, or the GPU comparisons would pass by skipping.
  export LINESIGHT_REQUIRE_WEIGHTS=1
  if [ "$(gpus)" != 0 ] && [ -z "${LINESIGHT_REQUIRE_GPU:-}" ]; then
    log "nvidia-smi lists a GPU: the GPU tests must open it (LINESIGHT_REQUIRE_GPU=1)"
    export LINESIGHT_REQUIRE_GPU=1
  fi
  log "the trainer's tests in the cuda build"
  CARGO_TARGET_DIR=$TARGET cargo test --release -p linesight-trainer --features cuda
  log "GPU against CPU, shown (SKIPPED lines mean no GPU was used)"
  CARGO_TARGET_DIR=$TARGET cargo test --release -p linesight-trainer --features cuda --test it cuda:: -- --nocapture --test-threads 1
  log "check passed"
}

measure() {
  local config=examples/cub26-finetuned.toml
  [ -f "$DATA/manifest.csv" ] || die "no cub26 at $DATA (set DATA to the set $config names)"
  build
  local out=${1:-docs/bench-runs/$(date +%F)-$(hostname -s)-cuda}
  local devices=${DEVICES:-cpu cuda}
  # The pipeline runs on the first GPU named in $DEVICES, else on the CPU.
  local pipe_device=cpu d
  for d in $devices; do
    case $d in cuda*) pipe_device=$d; break ;; esac
  done
  local work=target/pipeline-cub26-finetuned # $config's work_dir
  local scratch=$TARGET/measure              # view caches and checkpoints, never under docs/
  mkdir -p "$out" "$scratch"
  # The fine-tuning of $config: its [train] table as train's --config.
  python3 - "$config" "$scratch/train.toml" <<'PY'
import re, sys
lines, keep = [], False
for line in open(sys.argv[1]):
    head = re.match(r"\s*\[([^\]]+)\]", line)
    if head:
        name = head.group(1).strip()
        keep = name == "train" or name.startswith("train.")
        if keep and name != "train":
            lines.append(f"[{name[len('train.'):]}]\n")
        continue
    if keep:
        lines.append(line)
open(sys.argv[2], "w").writelines(lines)
PY
  local method
  method=$(sed -n 's/^method *= *"\([a-z]*\)".*/\1/p' "$scratch/train.toml" | head -1)
  log "pipeline (label, refine and train on $pipe_device, export, eval): $config"
  local t0=$SECONDS
  "$BIN" --log warn --json pipeline --config "$config" --device "$pipe_device" --force \
    >"$out/pipeline-$pipe_device.json"
  echo $((SECONDS - t0)) >"$out/pipeline-$pipe_device.seconds"
  for d in $devices; do
    log "fine-tuning on $d with an empty view cache"
    local ckpt=$scratch/ckpt-$d cache=$scratch/cache-$d
    rm -rf "$cache" "$ckpt"
    mkdir -p "$cache"
    # The frozen embeddings near trains on, not the views: only fine-tuning is timed.
    cp "$work"/cache/*.json "$work"/cache/*.safetensors "$cache/"
    "$BIN" --log warn --json train --refined "$work/refined.json" --cache "$cache" \
      --config "$scratch/train.toml" --method "${method:-near}" --device "$d" --out "$ckpt" \
      --eval-manifest "$DATA/manifest.csv" --eval-split test >"$out/train-$d.json"
    rm -rf "$cache"
  done
  {
    echo "# cuda.sh measure: $(date -u +%FT%TZ)"
    echo
    echo "Command: \`scripts/cuda.sh measure $out\` (DEVICES=\"$devices\"), commit $(git describe --always --dirty)"
    echo "Fine-tuning: [train] of $config (\`train --config\`), the pipeline's refined.json"
    echo "CPU: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(nproc) threads"
    if command -v nvidia-smi >/dev/null; then
      echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
    fi
    echo "Toolkit: $(nvcc --version | tail -2 | head -1)"
    echo
    python3 - "$out" "$pipe_device" $devices <<'PY'
import json, sys
out, pipe_device, devices = sys.argv[1], sys.argv[2], sys.argv[3:]
p = json.load(open(f"{out}/pipeline-{pipe_device}.json"))
secs = open(f"{out}/pipeline-{pipe_device}.seconds").read().strip()
cacc = p.get("eval", {}).get("cacc") if isinstance(p.get("eval"), dict) else None
print(f"Pipeline (train on {pipe_device}): {secs} s wall" + (f", cACC {cacc * 100:.1f}" if cacc is not None else ""))
print()
print("| device | trunk views | trunk s | views/s | epochs | tail s | image-epochs/s | fine-tuning s | cACC (test) |")
print("|---|---|---|---|---|---|---|---|---|")
for d in devices:
    t = json.load(open(f"{out}/train-{d}.json"))
    f = t["finetune"]
    print(f"| {d} | {f['trunk_views_computed']} | {f['trunk_seconds']:.1f} | {f['trunk_views_per_second']:.1f} | "
          f"{f['epochs_run']} | {f['tail_seconds']:.1f} | {f['tail_images_per_second']:.0f} | "
          f"{t['finetune_seconds']:.1f} | {t['eval']['cacc'] * 100:.1f} |")
PY
  } | tee "$out/README.md"
}

case "${1:-}" in
  build) build ;;
  check) check ;;
  measure) shift; measure "$@" ;;
  *) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
