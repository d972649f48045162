#!/usr/bin/env bash
# The test suite: fetch the real weights, then every crate's unit, integration, doc and
# end-to-end tests. Tests that need weights fail (rather than skip) under this script.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/fetch-weights.sh
export LINESIGHT_REQUIRE_WEIGHTS=1 LINESIGHT_NO_PROGRESS=1
cargo test --workspace --no-fail-fast
