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

# The fleet tests (tests/tests/e2e/mender.rs) drive the real Mender client: Debian's
# mender-client (3.4) and mender-artifact (3.9). As root with apt they are installed here
# (installing them starts no daemon); the tests then copy the Update Module into
# /usr/share/mender/modules/v3/ and create /etc/mender/artifact_info if it is missing,
# which needs root. LINESIGHT_REQUIRE_MENDER=1 makes a test that cannot run fail instead
# of skipping; set LINESIGHT_REQUIRE_MENDER=0 to let them skip on a machine without root.
if ! { command -v mender && command -v mender-artifact; } >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq mender-client mender-artifact
  else
    echo "test.sh: mender-client / mender-artifact not found; the fleet tests need them (as root: apt-get install mender-client mender-artifact), or set LINESIGHT_REQUIRE_MENDER=0 to skip them" >&2
  fi
fi
export LINESIGHT_REQUIRE_MENDER="${LINESIGHT_REQUIRE_MENDER:-1}"
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

# The edge runtime on ARM64 (scripts/box.sh, docs/box.md): cross-build linesight-edge and
# its test binaries for aarch64 once, then boot the emulated ARM64 box for every case
# (same answers as x86, the vivid camera, unplug/replug, power cuts on ext4, the edge
# crate's tests on ARM). LINESIGHT_BOX=0 leaves it out of a local run; CI runs it.
if [ "${LINESIGHT_BOX:-1}" != 0 ]; then
  scripts/box.sh build
  scripts/box.sh test
fi
