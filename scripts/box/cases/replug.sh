# Unplug and replug a camera that keeps running: vivid at 5 fps (the loop keeps up, so a
# drop is the driver's), dropped buffers injected (percentage_of_dropped_buffers), then
# vivid's `disconnect` (the next dequeue fails as an unplug does), the module unloaded and
# loaded again under another /dev/videoN. The one `run` process counts the loss, reopens
# by the stable by-path id and decides again; /healthz goes 503 and back to 200.
. /box/lib.sh
ROOT=/tmp/models
H=http://127.0.0.1:9464
run "$EDGE" install /box/data/tiny-a.lsb --root "$ROOT" --allow-unsigned
vivid_load multiplanar=1
node0=$(readlink -f "$VIVID")
cat >/tmp/edge.toml <<TOML
[source]
stall_timeout_ms = 30000
reopen_backoff_ms = 200
reopen_backoff_max_ms = 1000
[source.camera]
format = "YUYV"
width = 640
height = 480
fps = 5
TOML
metric() { wget -q -O - "$H/metrics" | awk -v m="linesight_$1_total" '$1 == m { print $2 }'; }
decisions() { wc -l </tmp/decisions.jsonl 2>/dev/null || echo 0; }
# Waits (at most $2 s) until the shell condition $1 holds; prints the time it held.
wait_for() {
  deadline=$(awk "BEGIN { print $(now) + $2 }")
  until eval "$1"; do
    awk "BEGIN { exit !($(now) > $deadline) }" && fail "not within $2 s: $1"
    sleep 0.1
  done
  now
}
"$EDGE" run --config /tmp/edge.toml --root "$ROOT" --source "camera:$VIVID" --http 127.0.0.1:9464 \
  --sink jsonl:/tmp/decisions.jsonl --no-store --every-frame >/tmp/run.log 2>&1 &
pid=$!
t_start=$(now)
t_up=$(wait_for "http_ok $H/healthz" 120)
echo "box: healthz 200 after $(awk "BEGIN { print $t_up - $t_start }") s; $(decisions) decisions"

# Dropped buffers: the driver skips a share of frames; the gaps in its sequence numbers
# are counted as drops.
sleep 4
d0=$(metric dropped_frames)
f0=$(metric frames)
run v4l2-ctl -d "$VIVID" -c percentage_of_dropped_buffers=50
sleep 8
run v4l2-ctl -d "$VIVID" -c percentage_of_dropped_buffers=0
d1=$(metric dropped_frames)
f1=$(metric frames)
echo "box: with 50% dropped buffers for 8 s: $((f1 - f0)) frames decided, $((d1 - d0)) counted as dropped (before: $d0)"
[ $((d1 - d0)) -ge 5 ] || fail "dropped buffers were not counted as drops ($d0 -> $d1)"

# Unplug.
errors0=$(metric source_errors)
reconnects0=$(metric reconnects)
n0=$(decisions)
t_unplug=$(now)
run v4l2-ctl -d "$VIVID" -c disconnect=1
t_503=$(wait_for "! http_ok $H/healthz" 30)
e=$(metric source_errors)
[ "$e" -gt "$errors0" ] || fail "the unplug was not counted as a source error ($errors0 -> $e)"
echo "box: healthz 503 $(awk "BEGIN { print $t_503 - $t_unplug }") s after the unplug; source_errors $errors0 -> $e"
# Replug: unload (as the USB core would), load again under another number.
vivid_unload
t_gone=$(now)
sleep 2
vivid_load multiplanar=1 vid_cap_nr=3
node1=$(readlink -f "$VIVID")
t_back=$(now)
[ "$node1" != "$node0" ] || fail "vivid came back under the same node $node0"
echo "box: unplugged $node0, came back as $node1 (same stable id $VIVID)"
t_200=$(wait_for "http_ok $H/healthz" 60)
n1=$(decisions)
t_dec=$(wait_for "[ \$(decisions) -gt $((n1 + 5)) ]" 60)
r=$(metric reconnects)
[ "$r" -gt "$reconnects0" ] || fail "no reconnect counted ($reconnects0 -> $r)"
kill -0 $pid 2>/dev/null || fail "run exited"
wget -q -O /out/metrics.txt "$H/metrics"
kill -TERM $pid
wait $pid || fail "run exited with $? after SIGTERM"
cp /tmp/run.log /out/run.log
cat >/out/replug.json <<JSON
{"node_before": "$node0", "node_after": "$node1", "stable_id": "$VIVID",
 "unplug_to_503_s": $(awk "BEGIN { print $t_503 - $t_unplug }"),
 "module_reloaded_after_unplug_s": $(awk "BEGIN { print $t_back - $t_unplug }"),
 "reload_to_200_s": $(awk "BEGIN { print $t_200 - $t_back }"),
 "reload_to_5_new_decisions_s": $(awk "BEGIN { print $t_dec - $t_back }"),
 "unplug_to_200_s": $(awk "BEGIN { print $t_200 - $t_unplug }"),
 "decisions_before_unplug": $n0, "decisions_after": $(decisions),
 "source_errors": $(awk '$1 == "linesight_source_errors_total" { print $2 }' /out/metrics.txt),
 "reconnects": $(awk '$1 == "linesight_reconnects_total" { print $2 }' /out/metrics.txt),
 "open_failures": $(awk '$1 == "linesight_open_failures_total" { print $2 }' /out/metrics.txt),
 "dropped_with_50pct": $((d1 - d0)), "frames_with_50pct": $((f1 - f0)), "dropped_before": $d0}
JSON
cat /out/replug.json
echo "box: replug ok"
