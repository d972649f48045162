# The box boots, the aarch64 binary runs and sees no camera before vivid is loaded.
. /box/lib.sh
run "$EDGE" --version
"$EDGE" cameras | tee /out/cameras.txt
grep -q "no cameras" /out/cameras.txt || fail "cameras listed a device before any driver was loaded"
echo "box: smoke ok"
