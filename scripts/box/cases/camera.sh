# A real V4L2 driver as the camera: vivid, one webcam-like capture node. `cameras` lists
# it; `run --source camera:ID` decides 100 frames each from YUYV and NV12 at 640x480
# (single-planar API) and from NM12 (vivid multiplanar=2, the multi-planar API of ARM
# camera pipelines); the converted RGB is checked against vivid's own RGB24 rendering of
# its colour bars (tests/it/camera.rs, vivid_colour_bars).
. /box/lib.sh
ROOT=/tmp/models
run "$EDGE" install /box/data/tiny-a.lsb --root "$ROOT" --allow-unsigned
for api in single multi; do
  if [ $api = single ]; then
    vivid_load multiplanar=1
    formats="YUYV NV12"
  else
    vivid_load multiplanar=2
    formats="NM12"
  fi
  "$EDGE" cameras | tee "/out/cameras-$api.txt"
  "$EDGE" cameras --json >"/out/cameras-$api.json" || fail "cameras --json"
  grep -q "use:      --source camera:$VIVID" "/out/cameras-$api.txt" || fail "cameras does not offer camera:$VIVID"
  # vivid's own RGB24 frame: the reference colours.
  run v4l2-ctl -d "$VIVID" --set-fmt-video=width=640,height=480,pixelformat=RGB3 \
    --stream-mmap --stream-skip=2 --stream-count=1 --stream-to=/tmp/ref.rgb
  for f in $formats; do
    # An emulated CPU takes seconds per inference: the stall watchdog (5 s by default,
    # time without a usable frame) would otherwise fire between two frames.
    cat >"/tmp/edge-$f.toml" <<TOML
[source]
stall_timeout_ms = 60000
[source.camera]
format = "$f"
width = 640
height = 480
TOML
    t0=$(now)
    "$EDGE" run --config "/tmp/edge-$f.toml" --root "$ROOT" --source "camera:$VIVID" --max-frames "${boxframes:-100}" \
      --sink "jsonl:/out/decisions-$f.jsonl" --no-store --json >"/out/run-$f.json" 2>"/out/run-$f.log" ||
      { cat "/out/run-$f.log"; fail "run on camera:$VIVID in $f"; }
    echo "box: $f: run decided $(wc -l <"/out/decisions-$f.jsonl") lines in $(awk "BEGIN { print $(now) - $t0 }") s"
    grep -m1 "camera streaming" "/out/run-$f.log"
  done
  echo "+ colour bars: $formats"
  LINESIGHT_VIVID="$VIVID" LINESIGHT_VIVID_REF=/tmp/ref.rgb LINESIGHT_VIVID_FORMATS="$formats" \
    /box/tests/it --ignored --exact camera::vivid_colour_bars --nocapture 2>&1 | tee "/out/colour-$api.txt"
  grep -q "test result: ok. 1 passed" "/out/colour-$api.txt" || fail "colour bars ($formats)"
  vivid_unload
done
echo "box: camera ok"
