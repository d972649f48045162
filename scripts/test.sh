#!/usr/bin/env bash
# The test suite: fetch the real weights, then every crate's unit, integration, doc and
# end-to-end tests. Tests that need weights fail (rather than skip) under this script.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The camera feature needs libclang (bindgen in v4l2-sys-mit). As root with apt (CI), it is
# installed here; elsewhere the script stops and says what to install.
# (libclang-dev, not only the library: bindgen also needs clang's own headers.)
have_libclang() {
  if command -v dpkg >/dev/null; then
    dpkg -s libclang-dev >/dev/null 2>&1
  else
    compgen -G '/usr/lib*/libclang*.so*' >/dev/null || compgen -G '/usr/lib/llvm*/lib/libclang*.so*' >/dev/null
  fi
}
if [ "${1:-}" = "--check-libclang" ]; then
  have_libclang
  exit
fi
if ! have_libclang; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq libclang-dev
  else
    echo "test.sh: libclang not found; the edge runtime's camera feature needs it: apt-get install libclang-dev" >&2
    exit 2
  fi
fi

# The validate report's end-to-end test opens the page in headless Chromium (Debian's
# `chromium`); as root with apt (CI) it is installed here, elsewhere the script says so.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  else
    echo "test.sh: chromium not found; the validate report's end-to-end test needs it: apt-get install chromium" >&2
    exit 2
  fi
fi

scripts/fetch-weights.sh
export LINESIGHT_REQUIRE_WEIGHTS=1 LINESIGHT_NO_PROGRESS=1
# One run over the default members, with the V4L2 camera source (off by default) built in
# and its tests run (no camera device is needed: without one, `camera:ID` must fail with a
# clear message). One feature set means tract, candle and the rest are built once; the
# end-to-end tests build the binaries with the same features (LINESIGHT_E2E_FEATURES).
export LINESIGHT_E2E_FEATURES=linesight-edge/camera
cargo test --features "$LINESIGHT_E2E_FEATURES" --no-fail-fast
