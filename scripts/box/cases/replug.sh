# Unplug and replug a camera that keeps running: vivid at 5 fps (the loop keeps up, so a
# drop is the driver's), dropped buffers injected (percentage_of_dropped_buffers), then
# vivid's `disconnect` (the next dequeue fails as an unplug does), the module unloaded and
# loaded again under another /dev/videoN. The one `run` process counts the loss, reopens
# by the stable by-path id and decides again; /healthz goes 503 and back to 200.
. /box/lib.sh
ROOT=/tmp/models
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
metric() { http_get /metrics | awk -v m="linesight_$1_total" '$1 == m { print $2 }'; }
decisions() { wc -l </tmp/decisions.jsonl 2>/dev/null || echo 0; }
# Waits (at most $2 s) until the shell condition $1 holds; T = the time it held.
wait_for() {
  n=0
  until eval "$1"; do
    n=$((n + 1))
    if [ $n -gt $(($2 * 10)) ]; then
      tail -20 /tmp/run.log
      fail "not within $2 s: $1"
    fi
    sleep 0.1
  done
  T=$(now)
}
"$EDGE" run --config /tmp/edge.toml --root "$ROOT" --source "camera:$VIVID" --http 127.0.0.1:9464 \
  --sink jsonl:/tmp/decisions.jsonl --no-store --every-frame >/tmp/run.log 2>&1 &
pid=$!
t_start=$(now)
wait_for "http_ok /healthz" 120
t_up=$T
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

# Unplug. vivid's `disconnect` unregisters the node (the loop's next dequeue fails with
# ENODEV, as on a USB unplug); vivid registers it again when its last user closes it, so a
# second process holds it open meanwhile, and the by-path link is removed as udev removes
# it when a device goes away. Then the module is unloaded (the device is gone) and loaded
# again under another number, as a camera plugged back in may come back.
errors0=$(metric source_errors)
reconnects0=$(metric reconnects)
n0=$(decisions)
sleep 600 <"$node0" &
holder=$!
t_unplug=$(now)
run v4l2-ctl -d "$VIVID" -c disconnect=1
wait_for "! http_ok /healthz" 30
t_503=$T
e=$(metric source_errors)
[ "$e" -gt "$errors0" ] || fail "the unplug was not counted as a source error ($errors0 -> $e)"
echo "box: healthz 503 $(awk "BEGIN { print $t_503 - $t_unplug }") s after the unplug; source_errors $errors0 -> $e"
rm -rf /dev/v4l
kill $holder
wait $holder 2>/dev/null
vivid_unload
t_gone=$(now)
sleep 2
vivid_load multiplanar=1 vid_cap_nr=3
node1=$(readlink -f "$VIVID")
t_back=$(now)
[ "$node1" != "$node0" ] || fail "vivid came back under the same node $node0"
echo "box: unplugged $node0, came back as $node1 (same stable id $VIVID) $(awk "BEGIN { print $t_back - $t_unplug }") s after the unplug"
wait_for "http_ok /healthz" 60
t_200=$T
n1=$(decisions)
wait_for "[ \$(decisions) -gt $((n1 + 5)) ]" 60
t_dec=$T
r=$(metric reconnects)
[ "$r" -gt "$reconnects0" ] || fail "no reconnect counted ($reconnects0 -> $r)"
kill -0 $pid 2>/dev/null || fail "run exited"
http_get /metrics >/out/metrics.txt
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
