# The aarch64 binary on bundles built on x86: inspect (the self-test tolerance travels in
# the manifest), install (verifies, loads, passes the self-test vectors on this CPU), then
# classify the photos with raw logits; the host compares them with x86's.
. /box/lib.sh
refused=
for b in f32 int8; do
  run "$EDGE" inspect --bundle "/box/data/$b.lsb" >"/out/inspect-$b.txt"
  grep -i "tolerance" "/out/inspect-$b.txt" || fail "inspect does not show the self-test tolerance of $b"
  # tract's kernel choice is logged by tract-linalg at info level.
  # A refused install (self-test) fails the case, after the photos are compared too.
  if RUST_LOG=info,tract_linalg=debug "$EDGE" install "/box/data/$b.lsb" --root "/tmp/root-$b" --allow-unsigned --json \
    >"/out/install-$b.json" 2>"/out/install-$b.log"; then
    cat "/out/install-$b.json"
  else
    tail -3 "/out/install-$b.log"
    refused="$refused $b"
  fi
  t0=$(now)
  "$EDGE" classify --bundle "/box/data/$b.lsb" --json --logits --threads 2 /box/data/photos \
    >"/out/arm-$b.jsonl" 2>"/out/classify-$b.log" || { cat "/out/classify-$b.log"; fail "classify $b"; }
  echo "box: $b: classified $(wc -l <"/out/arm-$b.jsonl") photos in $(awk "BEGIN { print $(now) - $t0 }") s"
done
grep -h -i "kernel\|impl\|cpu" /out/install-*.log | sort | uniq -c | head -20
[ -z "$refused" ] || fail "install refused (self-test on aarch64):$refused"
echo "box: same-answers ran"
