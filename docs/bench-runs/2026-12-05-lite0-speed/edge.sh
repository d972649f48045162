# Edge latency, release linesight-edge: the four bundles alternating, 5 rounds of 50 runs.
cd "$(dirname "$0")/../../.."
E=target/bench/release/linesight-edge
O=target/lite0-speed
uptime
for round in 1 2 3 4 5; do
  for b in mobilenet-v2 efficientnet-lite0 mobilenet-v2-int8 efficientnet-lite0-int8; do
    $E --log error bench --bundle $O/$b.lsb --threads 1 --iterations 50 --warmup 3 --json 2>/dev/null \
      | python3 -c "import json,sys; r=json.load(sys.stdin); print(json.dumps({'round': $round, 'bundle': '$b', **{k: r[k] for k in r if k not in ('signature_check',)}}))"
  done
done
uptime
