# The edge crate's own unit and integration test binaries, cross-compiled, run on the
# emulated Cortex-A72. The host laid out the repository files they read at the same
# absolute paths (CARGO_MANIFEST_DIR, CARGO_BIN_EXE_linesight-edge) and wrote the list.
. /box/lib.sh
export LINESIGHT_NO_PROGRESS=1 RUST_BACKTRACE=1
# Emulated, a frame's work and a model's load take several times longer than on a box:
# the swap tests' allowed gap between two decisions grows with them (83 ms was seen
# against the host's 79).
export LINESIGHT_SCHED_TOLERANCE_MS=500
failed=0
while read -r name exe dir skip; do
  echo "== $name ($exe)"
  set -- --test-threads 2
  for s in $(echo "$skip" | tr , ' '); do set -- "$@" --skip "$s"; done
  if (cd "$dir" && "$exe" "$@") >"/out/test-$name.txt" 2>&1; then
    grep "test result" "/out/test-$name.txt"
  else
    tail -60 "/out/test-$name.txt"
    failed=1
  fi
done </box/tests/list
[ $failed = 0 ] || fail "some test binaries failed on aarch64"
echo "box: arm-tests ok"
