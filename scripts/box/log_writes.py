#!/usr/bin/env python3
"""Replays a qemu `blklogwrites` log (the dm-log-writes format) onto a copy of the disk
it started from, stopping at every flush point, and checks each state as a power cut
there would leave it on a disk that loses its volatile write cache: everything written
before the flush is on the platter, nothing after it.

Each state: `e2fsck -fy` (the journal replay a mount would do), then `e2fsck -fn` must find
the filesystem clean; the models root is copied out with `debugfs rdump` and the host's
`linesight-edge status --json` reads it: `current` must name a slot whose model.lsb is,
byte for byte, one of the given bundles and matches the slot's recorded sha256.

usage: log_writes.py BASE.img LOG.img WORKDIR EDGE_BINARY BUNDLE.lsb...
Prints one JSON object (per flush point: entry index, current slot, which bundle) and
exits 1 when a state fails.

Written here because the format's own replay tool (`replay-log` of xfstests) is in no
Debian 12 package; the format is four little-endian fields per entry.
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

MAGIC = 0x6A736677736872
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8


def entries(log):
    """Yields (index, sector, nr_sectors, flags, data) for each logged entry."""
    with open(log, "rb") as f:
        magic, version, nr, sectorsize = struct.unpack("<QQQI", f.read(28))
        if magic != MAGIC:
            sys.exit(f"{log}: not a log-writes log (magic {magic:#x})")
        pos = sectorsize
        for i in range(nr):
            f.seek(pos)
            sector, nr_sectors, flags, data_len = struct.unpack("<QQQQ", f.read(32))
            pos += sectorsize
            data = b""
            if not flags & DISCARD and nr_sectors:
                f.seek(pos)
                data = f.read(nr_sectors * sectorsize)
                pos += nr_sectors * sectorsize
            elif data_len:
                pos += -(-data_len // sectorsize) * sectorsize
            yield i, sector * sectorsize, nr_sectors * sectorsize, flags, data


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check(image, work, edge, bundles):
    """One state: fsck, then what `current` is. Returns (ok, detail)."""
    r1 = subprocess.run(["e2fsck", "-fy", image], capture_output=True, text=True)
    if r1.returncode > 1:
        return False, f"e2fsck -fy exit {r1.returncode}: {r1.stdout[-400:]}"
    r2 = subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True)
    if r2.returncode != 0:
        return False, f"not clean after journal replay: {r2.stdout[-400:]}"
    out = os.path.join(work, "root")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    ls = subprocess.run(["debugfs", "-R", "ls /models", image], capture_output=True, text=True)
    if "File not found" in ls.stderr + ls.stdout:
        return True, {"current": None, "note": "no models root yet"}
    subprocess.run(["debugfs", "-R", f"rdump /models {out}", image], capture_output=True, check=True)
    root = os.path.join(out, "models")
    st = subprocess.run([edge, "status", "--root", root, "--json"], capture_output=True, text=True)
    # Exit 1: status ran and lists problems (e.g. a half-written slot the next install
    # clears); they are kept in the state's detail. What must hold is about `current`.
    if st.returncode not in (0, 1):
        return False, f"status failed: {st.stderr[-400:]}"
    status = json.loads(st.stdout)
    cur = [s for s in status["slots"] if s.get("current")]
    if not status.get("current"):
        return True, {"current": None, "note": "nothing installed yet"}
    # `record` (the slot's install.json) is in the report only when it describes the
    # bundle beside it.
    recorded = (cur[0].get("record") or {}).get("bundle_sha256") if cur else None
    if not recorded:
        return False, f"current `{status.get('current')}` has no readable slot: {st.stdout[-400:]}"
    model = os.path.join(root, "slots", status["current"], "model.lsb")
    h = sha256(model) if os.path.exists(model) else None
    which = bundles.get(h)
    if which is None or h != recorded:
        return False, f"current `{status['current']}`: model.lsb is not a complete bundle (sha256 {h})"
    return True, {"current": status["current"], "bundle": which, "problems": status.get("problems", [])}


def main():
    base, log, work, edge = sys.argv[1:5]
    bundles = {sha256(b): os.path.basename(b) for b in sys.argv[5:]}
    os.makedirs(work, exist_ok=True)
    disk = os.path.join(work, "replay.img")
    state = os.path.join(work, "state.img")
    shutil.copyfile(base, disk)
    points, ok, writes = [], True, 0
    with open(disk, "r+b") as d:
        for i, offset, length, flags, data in entries(log):
            if data:
                d.seek(offset)
                d.write(data)
                writes += 1
            if flags & (FLUSH | FUA):
                d.flush()
                shutil.copyfile(disk, state)
                good, detail = check(state, work, edge, bundles)
                ok &= good
                points.append({"entry": i, "writes_before": writes, "ok": good, "state": detail})
    seen = sorted({json.dumps(p["state"], sort_keys=True) for p in points if p["ok"]})
    print(json.dumps({"flush_points": len(points), "writes": writes, "all_ok": ok,
                      "states_seen": [json.loads(s) for s in seen],
                      "failures": [p for p in points if not p["ok"]]}, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
