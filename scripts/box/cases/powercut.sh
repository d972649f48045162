# One boot of the power-cut cycle, on the ext4 virtio disk `models` (mounting it replays
# the journal a cut left): check what the last cut left (status, then run 5 frames on
# `current`: it loads and passes its self-test), then install the bundle named by
# `boxinstall=` while the host may SIGKILL qemu at any moment. Markers on the console
# tell the host where the guest is; the install's step names come from its debug log.
. /box/lib.sh
dev=$(disk models) || fail "no disk with serial models"
mkdir -p /mnt
mount -t ext4 "$dev" /mnt || fail "cannot mount $dev"
ROOT=/mnt/models
if [ "${boxcheck:-1}" = 1 ]; then
  "$EDGE" status --root "$ROOT" --json >/tmp/status.json 2>/tmp/status.log || { cat /tmp/status.log; fail "status"; }
  "$EDGE" run --root "$ROOT" --source synthetic --max-frames 5 --sink none --no-store --json >/tmp/run.json 2>/tmp/run.log ||
    { cat /tmp/run.log; fail "run --max-frames 5 on current"; }
  echo "BOX-STATUS $(tr -d '\n' </tmp/status.json)"
  echo "BOX-RUN $(tr -d '\n' </tmp/run.json)"
fi
if [ "${boxinstall:-}" = other ]; then
  # The bundle that is not current: every cut interrupts a change of model.
  cur=$(tr -d '\n' </tmp/status.json | grep -o '"current":true,"previous":[a-z]*,"model_id":"[^"]*"' | sed 's/.*"model_id":"//; s/"$//')
  boxinstall=$([ "$cur" = tiny-a ] && echo tiny-b || echo tiny-a)
fi
if [ -n "${boxinstall:-}" ]; then
  echo "BOX-INSTALLING $boxinstall"
  echo "BOX-INSTALL-START $(now)"
  # Through a pipe: plain log lines (no colours) the host can match; its steps carry the
  # guest's uptime so the host can time the writing part.
  { RUST_LOG=info,linesight_edge::slots=debug "$EDGE" install "/box/data/$boxinstall.lsb" --root "$ROOT" \
    --allow-unsigned; echo $? >/tmp/install.rc; } 2>&1 | while IFS= read -r line; do echo "$(now) $line"; done
  [ "$(cat /tmp/install.rc)" = 0 ] || fail "install $boxinstall"
  echo "BOX-INSTALL-DONE $(now)"
fi
umount /mnt
echo "box: powercut boot done"
