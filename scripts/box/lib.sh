# Helpers for the guest's case scripts (busybox sh), sourced by each case.
EDGE=/box/bin/linesight-edge

fail() {
  echo "box: FAIL: $*"
  exit 1
}

# Prints the command, runs it, fails the case when it fails.
run() {
  echo "+ $*"
  "$@" || fail "exit $?: $*"
}

# The block device whose virtio serial is $1 (`-device virtio-blk-pci,serial=...`).
disk() {
  for b in /sys/block/vd*; do
    if [ "$(cat "$b/serial" 2>/dev/null)" = "$1" ]; then
      echo "/dev/${b##*/}"
      return 0
    fi
  done
  return 1
}

# Seconds since boot, with hundredths (the timeline of the camera cases).
now() { cut -d' ' -f1 /proc/uptime; }

# /dev/v4l/by-path links as udev's persistent-v4l rule makes them (no udev in the box):
# platform-<device>-video-index<N> -> ../../videoM. Rebuilt after every module (un)load.
v4l_links() {
  rm -rf /dev/v4l
  for s in /sys/class/video4linux/video*; do
    [ -e "$s" ] || continue
    dev=$(basename "$(readlink -f "$s/device")")
    mkdir -p /dev/v4l/by-path
    ln -sf "../../${s##*/}" "/dev/v4l/by-path/platform-$dev-video-index$(cat "$s/index")"
  done
}

# vivid as one webcam-like capture node (one camera input), with extra parameters.
vivid_load() {
  insmod /lib/modules/vivid.ko n_devs=1 node_types=0x1 num_inputs=1 input_types=0x0 "$@" ||
    fail "insmod vivid $*"
  i=0
  until ls /sys/class/video4linux/video* >/dev/null 2>&1 && [ -c "/dev/$(ls /sys/class/video4linux | head -1)" ]; do
    i=$((i + 1))
    [ $i -lt 100 ] || fail "no /dev/video* 10 s after loading vivid"
    sleep 0.1
  done
  v4l_links
  VIVID=/dev/v4l/by-path/platform-vivid.0-video-index0
  [ -e "$VIVID" ] || fail "no $VIVID after loading vivid ($(ls -l /dev/v4l/by-path))"
  # Colour bars without the changing on-screen text.
  v4l2-ctl -d "$VIVID" -c osd_text_mode=2 || fail "cannot turn off vivid's OSD text"
}

# Unloads vivid, retrying while a process still holds the device open.
vivid_unload() {
  i=0
  until rmmod vivid 2>/dev/null; do
    i=$((i + 1))
    if [ $i -ge 300 ]; then
      grep vivid /proc/modules
      ls -l /proc/[0-9]*/fd 2>/dev/null | grep video
      grep video /proc/[0-9]*/maps 2>/dev/null | head
      fail "cannot unload vivid (device still open?)"
    fi
    sleep 0.1
  done
  v4l_links
}

# GET a path of the loopback health endpoint on port $HTTP_PORT; prints the response.
# (busybox nc: the static busybox's wget crashes resolving an address without NSS.)
HTTP_PORT=9464
http_get() { printf 'GET %s HTTP/1.0\r\n\r\n' "$1" | nc -w 3 127.0.0.1 "$HTTP_PORT" 2>/dev/null; }
http_ok() { http_get "$1" | head -1 | grep -q " 200 "; }
