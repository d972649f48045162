#!/usr/bin/env bash
# The box in a box: linesight-edge for ARM64, run inside an emulated ARM64 machine.
#
#   scripts/box.sh build            cross-build linesight-edge (--features camera) and the
#                                   edge crate's test binaries for aarch64-unknown-linux-gnu
#   scripts/box.sh test [CASE...]   boot an aarch64 guest (qemu-system-aarch64 -M virt,
#                                   Cortex-A72, software emulation, Debian's arm64 kernel,
#                                   a small busybox initramfs) and run the named cases in it;
#                                   no CASE: all of them. Exit code: 0 all passed, 1 a case
#                                   failed, 2 could not run.
#   scripts/box.sh cases            list the cases
#   scripts/box.sh shell            boot the guest with an interactive busybox shell
#
# Nothing is installed on the host beyond the packages named in HOST_PACKAGES (the aarch64
# cross gcc and its libc headers, libclang for bindgen). Everything else (Debian's
# rustc-web 1.96 and its arm64 std, qemu-system-aarch64 7.2 and the libraries it needs,
# the arm64 kernel, busybox, the arm64 C library) is fetched by name with apt-get download
# into target/box/debs and unpacked (dpkg-deb -x) under target/box, never installed:
# bookworm's qemu-system-arm cannot be installed beside the host's qemu-utils 10.
#
# Facts behind the choices: ../shared/research/box-in-a-box.md. How to use a real box:
# docs/box.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TRIPLE=aarch64-unknown-linux-gnu
# Where everything of the box lives (downloads, unpacked trees, images, logs).
BOX="${LINESIGHT_BOX_DIR:-$ROOT/target/box}"
# The cross build shares the workspace target folder: Debian's rustc differs from the
# host's, so nothing is shared with the host build anyway, and the binary lands at
# target/aarch64-unknown-linux-gnu/release/linesight-edge. (LINESIGHT_BOX_TARGET_DIR
# moves it; the host's own build is always the workspace's target/.)
TARGET_DIR="${LINESIGHT_BOX_TARGET_DIR:-$ROOT/target}"
unset CARGO_TARGET_DIR
ARM_BIN="$TARGET_DIR/$TRIPLE/release/linesight-edge"
# The list of cross-built test binaries (written by `build`, read by the `arm-tests` case).
TEST_LIST="$TARGET_DIR/$TRIPLE/release/box-test-binaries.txt"

# e2fsprogs: mkfs.ext4, e2fsck and debugfs for the power-cut disk.
HOST_PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross linux-libc-dev-arm64-cross libclang-dev e2fsprogs)

say() { echo "box: $*" >&2; }
die() {
  echo "box: error: $*" >&2
  exit 2
}

# ---------------------------------------------------------------------------------------
# Packages by name, never installed: a private apt state per architecture.

apt_opts() { # ARCH
  local d="$BOX/apt-$1"
  echo -o "APT::Architecture=$1" -o "APT::Architectures::=$1" \
    -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" \
    -o "Dir::State::Status=$d/status" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root" -o "Acquire::Retries=3"
}

apt_update() { # ARCH [force]
  local d="$BOX/apt-$1"
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  touch "$d/status"
  local stamp="$d/updated"
  if [ "${2:-}" = force ] || [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440)" ]; then
    say "apt-get update ($1)"
    # shellcheck disable=SC2046
    apt-get $(apt_opts "$1") update -qq
    touch "$stamp"
  fi
}

# fetch ARCH PKG...: downloads each package not yet in target/box/debs/ARCH (the cache).
fetch() {
  local arch=$1
  shift
  local dir="$BOX/debs/$arch" need=() p
  mkdir -p "$dir"
  for p in "$@"; do
    compgen -G "$dir/${p%%=*}_*.deb" >/dev/null || need+=("$p")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  apt_update "$arch"
  say "downloading ($arch): ${need[*]}"
  # shellcheck disable=SC2046
  if ! (cd "$dir" && apt-get $(apt_opts "$arch") download -qq "${need[@]}"); then
    apt_update "$arch" force
    # shellcheck disable=SC2046
    (cd "$dir" && apt-get $(apt_opts "$arch") download -qq "${need[@]}")
  fi
}

# deb ARCH PKG: the cached .deb of PKG.
deb() {
  local f
  f=$(compgen -G "$BOX/debs/$1/${2}_*.deb" | sort -V | tail -1) || die "package $2 ($1) not downloaded"
  echo "$f"
}

# unpack DEST ARCH PKG...: dpkg-deb -x each package into DEST (once per package file).
unpack() {
  local dest=$1 arch=$2
  shift 2
  mkdir -p "$dest/.unpacked"
  local p f
  for p in "$@"; do
    f=$(deb "$arch" "$p")
    if [ ! -f "$dest/.unpacked/$(basename "$f")" ]; then
      dpkg-deb -x "$f" "$dest"
      touch "$dest/.unpacked/$(basename "$f")"
    fi
  done
}

# The real kernel package behind the metapackage (linux-image-arm64 depends on it).
kernel_package() {
  # shellcheck disable=SC2046
  apt-cache $(apt_opts arm64) depends linux-image-arm64 |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# ---------------------------------------------------------------------------------------
# The toolchain: Debian's rustc-web (amd64) with its std for amd64 (build scripts, proc
# macros) and arm64 (the target), driven by the host's cargo.

RUST_PACKAGES=(rustc-web libstd-rust-web-dev libstd-rust-web-1.96 libllvm22)
RUST="$BOX/rust"

host_packages() {
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "apt-get install ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    die "missing host packages: ${missing[*]} (apt-get install them)"
  fi
}

toolchain() {
  host_packages
  fetch amd64 "${RUST_PACKAGES[@]}"
  fetch arm64 libstd-rust-web-dev
  local v64 v86
  v86=$(basename "$(deb amd64 libstd-rust-web-dev)" | cut -d_ -f2)
  v64=$(basename "$(deb arm64 libstd-rust-web-dev)" | cut -d_ -f2)
  [ "$v86" = "$v64" ] || die "rustc-web std versions differ: amd64 $v86, arm64 $v64 (rm -r $BOX/debs and retry)"
  unpack "$RUST" amd64 "${RUST_PACKAGES[@]}"
  unpack "$RUST" arm64 libstd-rust-web-dev
  # Debian's rustc finds its sysroot next to itself (usr/lib/rustlib/<triple>); only its
  # shared libraries (libLLVM, its own std .so) need a path (cross_env). Not a shell
  # wrapper: dash drops variables whose names are not identifiers, such as cargo's
  # CARGO_BIN_EXE_linesight-edge.
  LD_LIBRARY_PATH="$RUST/usr/lib/x86_64-linux-gnu" "$RUST/usr/bin/rustc" -V >/dev/null ||
    die "Debian's rustc does not run (missing libraries? try: ldd $RUST/usr/bin/rustc)"
}

# Every variable that reaches the aarch64 build: keep them identical from build to build,
# or cargo rebuilds tract.
cross_env() {
  export RUSTC="$RUST/usr/bin/rustc"
  export LD_LIBRARY_PATH="$RUST/usr/lib/x86_64-linux-gnu"
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
  export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
  export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--target=aarch64-linux-gnu --sysroot=/usr/aarch64-linux-gnu"
  unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
}

cmd_build() {
  local t0
  t0=$(date +%s)
  toolchain
  cross_env
  say "$("$RUSTC" -V), cargo $(cargo -V | cut -d' ' -f2); building for $TRIPLE (log: $BOX/build.log)"
  mkdir -p "$BOX" "$(dirname "$TEST_LIST")"
  # One cargo invocation, one profile: the test binaries and the binary they drive
  # (CARGO_BIN_EXE_linesight-edge) are built together, tract once. No debug line tables:
  # the binary that ships is stripped anyway, and leaving them out shortens the cold build.
  local json="$BOX/build.json"
  if ! CARGO_PROFILE_RELEASE_DEBUG=false cargo test --release --no-run --locked --target "$TRIPLE" -p linesight-edge --features camera \
    --target-dir "$TARGET_DIR" --message-format json-render-diagnostics >"$json" 2>"$BOX/build.log"; then
    tail -40 "$BOX/build.log" >&2
    die "cross-build failed (log: $BOX/build.log)"
  fi
  python3 - "$json" "$TEST_LIST" <<'PY'
import json, sys
exes = []
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        exes.append(f'{m["target"]["name"]} {m["executable"]}')
open(sys.argv[2], "w").write("\n".join(exes) + "\n")
PY
  [ -x "$ARM_BIN" ] || die "no binary at $ARM_BIN after the build"
  aarch64-linux-gnu-strip -o "$ARM_BIN.stripped" "$ARM_BIN"
  say "built in $(($(date +%s) - t0)) s: $ARM_BIN ($(stat -c %s "$ARM_BIN.stripped") bytes stripped)"
  say "test binaries: $(cut -d' ' -f1 "$TEST_LIST" | tr '\n' ' ')"
}

# ---------------------------------------------------------------------------------------
# The guest: qemu-system-aarch64 7.2 (unpacked), Debian's arm64 kernel, a busybox
# initramfs with the modules the cases need, the arm64 C library for v4l2-ctl and the
# dynamically linked linesight-edge.

QEMU_PACKAGES=(qemu-system-arm cpio libfdt1 libibverbs1 libpmem1 librdmacm1 libslirp0 libvdeplug2
  libnl-3-200 libnl-route-3-200 libndctl6 libdaxctl1 libcapstone4)
GUEST_PACKAGES=(busybox-static libc6 libgcc-s1 libstdc++6 v4l-utils libv4l-0 libv4lconvert0 libjpeg62-turbo)
# Loaded at boot, in dependency order (computed from the modules' own `depends=`).
BOOT_MODULES=(virtio_pci virtio_blk crc32c_generic ext4)
# Loaded by the camera cases with their parameters.
CASE_MODULES=(vivid)
# The shared libraries the guest's programs need (linesight-edge: libc, libm, libgcc_s;
# v4l2-ctl: libv4l2 and what it links).
GUEST_LIBS=(libc.so.6 libm.so.6 libgcc_s.so.1 libstdc++.so.6 libv4l2.so.0 libv4lconvert.so.0 libjpeg.so.62)
QEMU="$BOX/qemu"
GUEST="$BOX/guest"

qemu_env() {
  QEMU_LD=$(find "$QEMU" -name '*.so*' -printf '%h\n' | sort -u | tr '\n' ':')
}

guest_prepare() {
  qemu_env
  fetch amd64 "${QEMU_PACKAGES[@]}"
  unpack "$QEMU" amd64 "${QEMU_PACKAGES[@]}"
  qemu_env
  local kpkg
  apt_update arm64
  kpkg=$(kernel_package)
  [ -n "$kpkg" ] || die "cannot find the kernel package behind linux-image-arm64"
  fetch arm64 "$kpkg" "${GUEST_PACKAGES[@]}"
  # The base initramfs is rebuilt when its inputs change.
  local key
  key=$( (basename -a "$(deb arm64 "$kpkg")" $(for p in "${GUEST_PACKAGES[@]}"; do deb arm64 "$p"; done)
    echo "${BOOT_MODULES[*]} ${CASE_MODULES[*]} ${GUEST_LIBS[*]}"
    cat scripts/box/init) | sha256sum | cut -c1-16)
  BASE="$GUEST/base-$key.cpio"
  KERNEL="$GUEST/vmlinuz-$key"
  [ -f "$BASE" ] && [ -f "$KERNEL" ] && return 0
  say "building the guest's base initramfs ($kpkg)"
  local pk="$GUEST/pkgs" r="$GUEST/root"
  rm -rf "$pk" "$r" "$GUEST"/base-*.cpio "$GUEST"/vmlinuz-*
  mkdir -p "$pk" "$r"/{bin,sbin,usr/bin,lib/modules,proc,sys,dev,tmp,box,etc}
  unpack "$pk" arm64 "$kpkg" "${GUEST_PACKAGES[@]}"
  cp "$pk"/boot/vmlinuz-* "$KERNEL"
  cp "$pk/bin/busybox" "$r/bin/busybox"
  cp scripts/box/init "$r/init"
  chmod +x "$r/init"
  cp "$pk/usr/bin/v4l2-ctl" "$r/usr/bin/"
  # The dynamic loader is an absolute symlink in the package: copy the real file.
  cp -L "$pk/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1" "$r/lib/ld-linux-aarch64.so.1"
  local l f
  for l in "${GUEST_LIBS[@]}"; do
    f=$(find "$pk/lib" "$pk/usr/lib" -name "$l" | head -1)
    [ -n "$f" ] || die "guest library $l not found in the arm64 packages"
    cp -L "$f" "$r/lib/$l"
  done
  python3 - "$pk" "$r/lib/modules" "${BOOT_MODULES[*]}" "${CASE_MODULES[*]}" <<'PY'
# Copies the modules and their dependencies (from each .ko's `.modinfo depends=`; the
# package has no modules.dep) and writes the boot modules' load order.
import glob, os, shutil, sys
pk, dest, boot, case = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
kos = {os.path.basename(p)[:-3].replace("-", "_"): p
       for p in glob.glob(f"{pk}/lib/modules/*/kernel/**/*.ko", recursive=True)}
def depends(name):
    if name not in kos:
        sys.exit(f"box: kernel module {name} not in the kernel package")
    d = open(kos[name], "rb").read()
    i = d.find(b"\0depends=")
    if i < 0:
        return []
    return [x.replace("-", "_") for x in d[i + 9:d.index(b"\0", i + 1)].decode().split(",") if x]
def closure(names, out):
    for n in names:
        if n not in out:
            closure(depends(n), out)
            out.append(n)
    return out
at_boot = closure(boot, [])
for n in closure(case, list(at_boot)):
    shutil.copy(kos[n], f"{dest}/{n}.ko")
# The case modules' own dependencies are loaded at boot too (insmod cannot resolve them).
deps = closure([d for c in case for d in depends(c)], list(at_boot))
open(f"{dest}/load-order", "w").write("\n".join(deps) + "\n")
PY
  (cd "$r" && find . | LD_LIBRARY_PATH="$QEMU_LD" "$QEMU/bin/cpio" -o -H newc -R 0:0 --quiet >"$BASE.tmp")
  mv "$BASE.tmp" "$BASE"
}

# boot NAME LOG [qemu args...]: boots the guest with the initramfs $INITRD, running case
# NAME; its console goes to LOG (and, with BOX_VERBOSE=1, to stderr). Returns the case's
# BOX-RESULT, or 2 when the guest printed none (crash, timeout).
# qemu_argv NAME [qemu args...]: QARGV = the guest's command line, running case NAME
# (extra kernel command-line words: $BOX_ARGS, which /init sees as variables).
qemu_argv() {
  local name=$1
  shift
  QARGV=("$QEMU/usr/bin/qemu-system-aarch64"
    -M virt -cpu cortex-a72 -accel tcg -smp 2 -m "${BOX_MEM:-2048}"
    -nographic -no-reboot -nic none -monitor none -serial stdio
    -kernel "$KERNEL" -initrd "$INITRD"
    -append "console=ttyAMA0 panic=-1 quiet loglevel=4 boxcase=$name ${BOX_ARGS:-}"
    "$@")
}

boot() {
  local name=$1 log=$2
  shift 2
  qemu_argv "$name" "$@"
  (LD_LIBRARY_PATH="$QEMU_LD" timeout "${BOX_TIMEOUT:-900}" "${QARGV[@]}" </dev/null 2>&1 || true) |
    if [ "${BOX_VERBOSE:-0}" = 1 ]; then tee "$log" >&2; else cat >"$log"; fi
  local r
  r=$(grep -a -o 'BOX-RESULT=[0-9]*' "$log" | tail -1 | cut -d= -f2)
  if [ -z "$r" ]; then
    return 2
  fi
  return "$r"
}

# stage_new CASE: a fresh folder for one case's run ($RUN), with $STAGE laid out as the
# guest's /box (the binary, the guest scripts); the case adds its files to $STAGE.
stage_new() {
  RUN="$BOX/runs/$1"
  rm -rf "$RUN"
  STAGE="$RUN/stage/box"
  mkdir -p "$STAGE/bin" "$RUN/out"
  cp "$ARM_BIN.stripped" "$STAGE/bin/linesight-edge"
  cp -r scripts/box/cases scripts/box/lib.sh "$STAGE/"
}

# stage_pack: $INITRD = the base initramfs with $STAGE appended (the kernel unpacks both).
stage_pack() {
  INITRD="$RUN/initrd"
  cp "$BASE" "$INITRD"
  (cd "$RUN/stage" && find . | LD_LIBRARY_PATH="$QEMU_LD" "$QEMU/bin/cpio" -o -H newc -R 0:0 --quiet >>"$INITRD")
}

# stage_boot CASE [qemu args...]: packs $STAGE after the base initramfs and boots it with a
# results disk; the guest's /out lands in $RUN/out. Returns the case's result.
stage_boot() {
  local name=$1
  shift
  stage_pack
  truncate -s 0 "$RUN/out.img"
  truncate -s "${BOX_OUT_MB:-64}M" "$RUN/out.img"
  local rc=0
  boot "$name" "$RUN/console.log" \
    -drive "if=none,id=out,file=$RUN/out.img,format=raw" -device virtio-blk-pci,drive=out,serial=out "$@" || rc=$?
  tar -C "$RUN/out" -xf "$RUN/out.img" 2>/dev/null || true
  return $rc
}

# ---------------------------------------------------------------------------------------
# The cases. Each case_NAME prepares its stage, boots, and checks what came back; the
# guest side is scripts/box/cases/NAME.sh.

CASES=(smoke same-answers camera replug powercut arm-tests)

case_smoke() {
  stage_new smoke
  stage_boot smoke
}

# The host's x86 binaries (built by scripts/test.sh's cargo test or `cargo build --bins`).
HOST_BIN_DIR="${LINESIGHT_HOST_BIN_DIR:-$ROOT/target/debug}"
host_bins_edge() {
  HOST_EDGE="$HOST_BIN_DIR/linesight-edge"
  [ -x "$HOST_EDGE" ] || die "no x86 linesight-edge in $HOST_BIN_DIR (cargo build --bins --features linesight-edge/camera)"
}
host_bins() {
  HOST_EDGE="$HOST_BIN_DIR/linesight-edge"
  HOST_TRAIN="$HOST_BIN_DIR/linesight-train"
  [ -x "$HOST_EDGE" ] && [ -x "$HOST_TRAIN" ] ||
    die "no x86 linesight-edge / linesight-train in $HOST_BIN_DIR (cargo build --bins --features linesight-edge/camera)"
}

# The x86-built MobileNetV2 bundles the cases use: class prototypes of the demo's 30 train
# photos (real ImageNet weights), f32 and its static int8 quantisation (calibrated on the
# same photos; every layer the rules allow is int8, `--keep-slow-layers`, whatever the x86
# host measures: the box runs tract's ARM int8 kernels). Rebuilt when the trainer binary or
# the photos change.
bundles() {
  host_bins
  local key
  key=$(cat "$HOST_TRAIN" models/demo/manifest.csv | sha256sum | cut -c1-16)
  BUNDLES="$BOX/bundles/$key"
  if [ ! -f "$BUNDLES/int8.lsb" ]; then
    rm -rf "$BOX/bundles"
    mkdir -p "$BUNDLES"
    say "building the x86 bundles (f32 and int8 MobileNetV2 prototypes of models/demo)"
    LINESIGHT_NO_PROGRESS=1 "$HOST_TRAIN" --log warn prototypes --manifest models/demo/manifest.csv --split train \
      --model-id box-demo --out "$BUNDLES/int8.lsb" --int8 --calibration models/demo/manifest.csv \
      --calibration-split train --allow-parity-drop --keep-slow-layers >"$BUNDLES/prototypes.log" 2>&1 ||
      { tail -20 "$BUNDLES/prototypes.log" >&2; die "linesight-train prototypes failed"; }
    mv "$BUNDLES/int8.f32.lsb" "$BUNDLES/f32.lsb"
  fi
}

# The tiny bundles of the camera, replug and power-cut cases (edge-runtime/examples/
# tiny_bundles.rs says why not MobileNetV2 there), built by the host.
# The example comes from the workspace's own test build (`cargo test --features
# linesight-edge/camera` builds every example; a no-op when scripts/test.sh just ran it):
# `cargo run --example` would select the edge crate alone, whose feature resolution differs
# from the workspace's and rebuilds bindgen, tract and friends for the host a second time.
tiny_bundles() {
  TINY="$BOX/tiny"
  rm -rf "$TINY"
  cargo test --quiet --features linesight-edge/camera --no-run >/dev/null 2>&1 ||
    die "cannot build the workspace's tests and examples (cargo test --features linesight-edge/camera --no-run)"
  "$ROOT/target/debug/examples/tiny_bundles" "$TINY" >/dev/null ||
    die "cannot write the tiny bundles (target/debug/examples/tiny_bundles)"
}

# The photos of same-answers: the 45 demo photos and the 10 fixtures of models/box.
stage_photos() {
  mkdir -p "$STAGE/data/photos/demo" "$STAGE/data/photos/box"
  cp -r models/demo/images/. "$STAGE/data/photos/demo/"
  cp -r models/box/images/. "$STAGE/data/photos/box/"
}

case_same_answers() {
  bundles
  stage_new same-answers
  mkdir -p "$STAGE/data"
  cp "$BUNDLES/f32.lsb" "$BUNDLES/int8.lsb" "$STAGE/data/"
  stage_photos
  local b
  for b in f32 int8; do
    "$HOST_EDGE" classify --bundle "$STAGE/data/$b.lsb" --json --logits --threads 1 "$STAGE/data/photos" \
      >"$RUN/x86-$b.jsonl" 2>"$RUN/x86-$b.log" || die "x86 classify $b failed ($RUN/x86-$b.log)"
  done
  local guest=0
  stage_boot same-answers || guest=$?
  [ -f "$RUN/out/arm-int8.jsonl" ] || return "$((guest > 0 ? guest : 1))"
  python3 - "$RUN" "$STAGE/data/photos" <<'PY'
# ARM vs x86: the same photos through the same bundles; max |logit difference| against
# the bundle's self-test tolerance, top-1 agreement (a disagreement is allowed only where
# x86's two best logits are closer than the largest difference seen).
import json, re, sys
run, photos = sys.argv[1], sys.argv[2]
def load(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if r.get("error"):
            sys.exit(f"box: {path}: {r['path']}: {r['error']}")
        out[r["path"].split("/photos/", 1)[1]] = r["logits"]
    return out
report, ok = {}, True
for b in ("f32", "int8"):
    x86, arm = load(f"{run}/x86-{b}.jsonl"), load(f"{run}/out/arm-{b}.jsonl")
    if sorted(x86) != sorted(arm) or len(x86) < 50:
        sys.exit(f"box: {b}: x86 classified {len(x86)} photos, ARM {len(arm)}")
    tol = [float(t) for t in re.findall(r"tolerance[^0-9]*([0-9.eE+-]+)", open(f"{run}/out/inspect-{b}.txt").read())]
    if not tol:
        sys.exit(f"box: {b}: no self-test tolerance in inspect's output")
    try:
        install = json.load(open(f"{run}/out/install-{b}.json"))
    except ValueError:
        install = "refused: " + open(f"{run}/out/install-{b}.log").read().strip().splitlines()[-1][-300:]
    diff, agree, close = 0.0, 0, 0
    for k in x86:
        a, x = arm[k], x86[k]
        d = max(abs(p - q) for p, q in zip(a, x))
        diff = max(diff, d)
        top = lambda v: max(range(len(v)), key=v.__getitem__)
        if top(a) == top(x):
            agree += 1
        else:
            s = sorted(x, reverse=True)
            close += s[0] - s[1] <= 2 * d
    n = len(x86)
    report[b] = {"photos": n, "max_abs_logit_diff": diff, "top1_agreement": agree / n,
                 "self_test_tolerance": max(tol), "arm_self_test": install}
    good = diff <= max(tol) and agree + close == n
    ok &= good
    print(f"box: same-answers {b:>4}: {n} photos, max |logit diff| ARM vs x86 {diff:.3e} "
          f"(self-test tolerance {max(tol):.0e}), top-1 agreement {agree}/{n}"
          + ("" if good else "  <- FAIL"), file=sys.stderr)
json.dump(report, open(f"{run}/same-answers.json", "w"), indent=1)
sys.exit(0 if ok else 1)
PY
  return "$guest"
}

case_camera() {
  tiny_bundles
  stage_new camera
  mkdir -p "$STAGE/data"
  cp "$TINY/tiny-a.lsb" "$STAGE/data/"
  mkdir -p "$STAGE/tests"
  test_binary it "$STAGE/tests/it"
  # BOX_FRAMES: fewer frames per format for a quick local look (CI: 100).
  local frames="${BOX_FRAMES:-100}"
  BOX_ARGS="boxframes=$frames" stage_boot camera || return $?
  python3 - "$RUN/out" "$frames" <<'PY'
import json, sys
out, want = sys.argv[1], int(sys.argv[2])
ok = True
for f in ("YUYV", "NV12", "NM12"):
    lines = [json.loads(l) for l in open(f"{out}/decisions-{f}.jsonl")]
    frames = {l.get("frame", l.get("seq")) for l in lines}
    rep = json.load(open(f"{out}/run-{f}.json"))
    good = len(frames) >= want
    ok &= good
    print(f"box: camera {f} 640x480: {len(frames)} frames decided ({len(lines)} decision lines); run report: "
          + json.dumps({k: rep[k] for k in rep if isinstance(rep[k], (int, float))}), file=sys.stderr)
for api in ("single", "multi"):
    for line in open(f"{out}/colour-{api}.txt"):
        if line.startswith("vivid "):
            print("box: colour " + line.strip(), file=sys.stderr)
sys.exit(0 if ok else 1)
PY
}

case_replug() {
  tiny_bundles
  stage_new replug
  mkdir -p "$STAGE/data"
  cp "$TINY/tiny-a.lsb" "$STAGE/data/"
  stage_boot replug || return $?
  say "replug: $(tr -d '\n' <"$RUN/out/replug.json")"
}

# test_binary NAME DEST: the cross-built test binary NAME, stripped, at DEST.
test_binary() {
  local exe
  exe=$(awk -v n="$1" '$1 == n { print $2 }' "$TEST_LIST" | head -1)
  [ -n "$exe" ] || die "no test binary $1 in $TEST_LIST (scripts/box.sh build)"
  aarch64-linux-gnu-strip -o "$2" "$exe"
}

# Tests left out in the box, with why:
# - deps:: runs `cargo tree`, a property of the build on the host (no cargo in the box).
# - swap::a_new_current_takes_over_between_frames_without_a_gap: its run lasts 3 s of
#   frames at a fixed rate and the swap's self-test (20,002 vectors) must finish inside
#   it; emulated, the self-test alone takes longer (the swap itself is checked by the
#   other swap tests, which pass in the box).
ARM_TEST_SKIPS="deps::,swap::a_new_current_takes_over_between_frames_without_a_gap"

case_arm_tests() {
  stage_new arm-tests
  [ -f "$TEST_LIST" ] || die "no $TEST_LIST: run scripts/box.sh build"
  # The tests find the repository's files and the binary under test by the absolute paths
  # compiled into them: lay those out in the guest.
  local mirror="$RUN/stage$ROOT"
  mkdir -p "$mirror/edge-runtime" "$mirror/models/demo" "$STAGE/tests" "$(dirname "$RUN/stage$ARM_BIN")"
  cp -r edge-runtime/examples "$mirror/edge-runtime/"
  cp -r models/demo/images "$mirror/models/demo/"
  # tests/fixtures/tiny.lsb: `tiny::the_committed_tiny_fixture_is_this_bundle` checks it.
  mkdir -p "$mirror/tests"
  cp -r tests/fixtures "$mirror/tests/"
  cp "$ARM_BIN.stripped" "$RUN/stage$ARM_BIN"
  local name exe
  : >"$STAGE/tests/list"
  while read -r name exe; do
    aarch64-linux-gnu-strip -o "$STAGE/tests/$name" "$exe"
    echo "$name /box/tests/$name $ROOT/edge-runtime $ARM_TEST_SKIPS" >>"$STAGE/tests/list"
  done <"$TEST_LIST"
  BOX_MEM=3072 stage_boot arm-tests || return $?
  grep -h "test result" "$RUN"/out/test-*.txt >&2
}

# Power cuts on a real filesystem: the model root on an ext4 virtio disk; boot after boot,
# the guest checks what the previous cut left and starts the next install, and the host
# SIGKILLs qemu at a moment spread over the install's duration.
case_powercut() {
  tiny_bundles
  host_bins_edge
  stage_new powercut
  mkdir -p "$STAGE/data"
  cp "$TINY/tiny-a.lsb" "$TINY/tiny-b.lsb" "$STAGE/data/"
  stage_pack
  local img="$RUN/models.img" cuts="${BOX_CUTS:-30}"
  truncate -s 64M "$img"
  mkfs.ext4 -q -F -L models "$img"
  local disk=(-drive "if=none,id=models,file=$img,format=raw" -device virtio-blk-pci,drive=models,serial=models)
  # The first install (no cut), timed: the whole install, and its writing part (from its
  # first step that writes, `slot:write-model`, to its end).
  BOX_ARGS="boxcheck=0 boxinstall=tiny-a" boot powercut "$RUN/boot-000.log" "${disk[@]}" ||
    { tail -20 "$RUN/boot-000.log" >&2; return 1; }
  local whole writing
  read -r whole writing < <(python3 - "$RUN/boot-000.log" <<'PY'
import re, sys
log = open(sys.argv[1], errors="replace").read()
start = float(re.search(r"BOX-INSTALL-START ([0-9.]+)", log).group(1))
end = float(re.search(r"BOX-INSTALL-DONE ([0-9.]+)", log).group(1))
w = float(re.search(r'([0-9.]+) .*install step.*step="slot:write-model"', log).group(1))
print(f"{end - start:.3f} {end - w:.3f}")
PY
)
  say "powercut: an install takes $whole s in the box, $writing s of it from its first write; $cuts cuts"
  # Each boot installs the bundle that is not current (boxinstall=other), so every cut
  # interrupts a change of model. Cut i of n: every fourth one at a moment spread over the
  # whole install (most of it is
  # verification: reading, hashing, loading, self-testing); the others spread over its
  # writing part, timed from the console line of its first write step.
  local i log pid delay marker t
  for ((i = 1; i <= cuts + 1; i++)); do
    log=$(printf '%s/boot-%03d.log' "$RUN" "$i")
    if ((i > cuts)); then
      # The last boot: check the last cut, then an install that must succeed.
      BOX_ARGS="boxinstall=other" boot powercut "$log" "${disk[@]}" || { tail -30 "$log" >&2; return 1; }
      break
    fi
    if ((i % 4 == 0)); then
      marker=BOX-INSTALL-START
      delay=$(awk -v i="$((i / 4))" -v n="$((cuts / 4))" -v d="$whole" 'BEGIN { printf "%.3f", d * (i - 0.5) / n }')
    else
      marker='step="slot:write-model"'
      delay=$(awk -v i="$((i - i / 4))" -v n="$((cuts - cuts / 4))" -v d="$writing" 'BEGIN { printf "%.3f", d * 1.1 * (i - 0.5) / n }')
    fi
    : >"$log"
    BOX_ARGS="boxinstall=other" qemu_argv powercut "${disk[@]}"
    LD_LIBRARY_PATH="$QEMU_LD" "${QARGV[@]}" </dev/null >"$log" 2>&1 &
    pid=$!
    t=0
    until grep -q -s -a -F -e "$marker" -e BOX-RESULT "$log"; do
      sleep 0.01
      t=$((t + 1))
      if ((t > 30000)) || ! kill -0 $pid 2>/dev/null; then
        break
      fi
    done
    if ! grep -q -a -F "$marker" "$log"; then
      kill -9 $pid 2>/dev/null || true
      wait $pid 2>/dev/null || true
      tail -30 "$log" >&2
      say "powercut: boot $i did not get to its install (the check of cut $((i - 1)) failed?)"
      return 1
    fi
    sleep "$delay"
    kill -9 $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
  done
  # A disk that loses its write cache: one more boot (check, then a whole install) with
  # every write and flush of the disk logged by qemu's blklogwrites driver, then the disk
  # is rebuilt on the host at each flush point and checked there (scripts/box/log_writes.py).
  cp "$img" "$RUN/logged-base.img"
  : >"$RUN/writes.log"
  BOX_ARGS="boxinstall=other" boot powercut "$RUN/boot-logged.log" \
    -blockdev "driver=file,filename=$img,node-name=models-file" \
    -blockdev "driver=file,filename=$RUN/writes.log,node-name=models-log" \
    -blockdev "driver=blklogwrites,node-name=models-logged,file=models-file,log=models-log,log-sector-size=512" \
    -device virtio-blk-pci,drive=models-logged,serial=models || { tail -30 "$RUN/boot-logged.log" >&2; return 1; }
  local replay_rc=0
  python3 scripts/box/log_writes.py "$RUN/logged-base.img" "$RUN/writes.log" "$RUN/replay" "$HOST_EDGE" \
    "$TINY/tiny-a.lsb" "$TINY/tiny-b.lsb" >"$RUN/replay.json" || replay_rc=$?
  python3 - "$RUN/replay.json" <<'PY' || replay_rc=1
import json, sys
r = json.load(open(sys.argv[1]))
print(f"box: powercut: blklogwrites replay: {r['writes']} writes, {r['flush_points']} flush points, "
      f"every state {'clean and with a complete current' if r['all_ok'] else 'NOT ok'}; states: "
      + ", ".join(json.dumps(s) for s in r["states_seen"]), file=sys.stderr)
for f in r["failures"][:5]:
    print(f"box: powercut: replay FAILED at entry {f['entry']}: {f['state']}", file=sys.stderr)
sys.exit(0 if r["all_ok"] and r["flush_points"] > 0 else 1)
PY
  python3 - "$RUN" "$cuts" "$TINY" <<'PY' || return 1
# Per cut: where the install was (its last logged step), and what the next boot found.
import hashlib, json, re, sys
from collections import Counter
run, cuts, tiny = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sha = {hashlib.sha256(open(f"{tiny}/{b}.lsb", "rb").read()).hexdigest(): b for b in ("tiny-a", "tiny-b")}
def log(i):
    return open(f"{run}/boot-{i:03d}.log", errors="replace").read()
rows, ok, installed = [], True, "tiny-a"  # boot 0 installed tiny-a
for i in range(1, cuts + 1):
    cut = log(i)
    target = re.search(r"BOX-INSTALLING (\S+)", cut).group(1)
    if "BOX-INSTALL-DONE" in cut:
        where = "after the install (completed)"
    else:
        steps = re.findall(r'install step.*step="([a-z:-]+)"', cut)
        where = steps[-1] if steps else "verifying (before the first write)"
    nxt = log(i + 1)
    st, rn = re.search(r"BOX-STATUS (.*)", nxt), re.search(r"BOX-RUN (.*)", nxt)
    status = json.loads(st.group(1)) if st else {}
    cur = [s for s in status.get("slots", []) if s.get("current")]
    # `record` (the slot's install.json) is in the report only when it describes the
    # bundle beside it: its sha256 is the bundle's.
    model = sha.get((cur[0].get("record") or {}).get("bundle_sha256")) if cur else None
    good = bool(st and rn and model in (installed, target))
    ok &= good
    rows.append({"cut": i, "installing": target, "landed": where, "next_boot_current": model,
                 "status_ok": bool(st), "run_5_frames_ok": bool(rn), "ok": good})
    if model:
        installed = model
last_ok = "BOX-INSTALL-DONE" in log(cuts + 1)
ok &= last_ok
json.dump(rows, open(f"{run}/powercut.json", "w"), indent=1)
landed = Counter(r["landed"] for r in rows)
print(f"box: powercut: {cuts} cuts landed at: " + ", ".join(f"{k} x{v}" for k, v in sorted(landed.items())), file=sys.stderr)
print(f"box: powercut: {sum(r['ok'] for r in rows)}/{cuts} following boots found a current that loads, passes its "
      f"self-test and is the old or the new model; the install after the last cut {'succeeded' if last_ok else 'FAILED'}",
      file=sys.stderr)
sys.exit(0 if ok else 1)
PY
  return $replay_rc
}

# CPU seconds (user + system) used by the processes this shell waited for, from the
# output of `times` in file $1 (`times` must run in this shell, not in a $(...) subshell).
children_cpu() {
  awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$1"
}

cmd_test() {
  local want=("$@") c
  [ ${#want[@]} -gt 0 ] || want=("${CASES[@]}")
  for c in "${want[@]}"; do
    [[ " ${CASES[*]} " == *" $c "* ]] || die "no case \`$c\` (cases: ${CASES[*]})"
  done
  [ -x "$ARM_BIN.stripped" ] || die "no aarch64 binary at $ARM_BIN: run scripts/box.sh build first"
  local t0 t
  t0=$(date +%s)
  host_packages
  guest_prepare
  say "guest ready in $(($(date +%s) - t0)) s"
  local passed=0 failed=0 rc summary=() cpu
  for c in "${want[@]}"; do
    t=$(date +%s)
    times >"$BOX/times-before"
    rc=0
    "case_${c//-/_}" || rc=$?
    # Wall time, and the CPU time of everything the case ran (qemu's above all): on a
    # shared machine the wall time says more about the neighbours than about the case.
    times >"$BOX/times-after"
    cpu=$(awk -v a="$(children_cpu "$BOX/times-before")" -v b="$(children_cpu "$BOX/times-after")" \
      'BEGIN { printf "%.0f", b - a }')
    if [ $rc = 0 ]; then
      passed=$((passed + 1))
      summary+=("  $c: ok ($(($(date +%s) - t)) s, cpu $cpu s)")
    else
      failed=$((failed + 1))
      summary+=("  $c: FAILED ($(($(date +%s) - t)) s, cpu $cpu s, exit $rc; console: $BOX/runs/$c/console.log)")
      tail -30 "$BOX/runs/$c/console.log" >&2 || true
    fi
  done
  printf '%s\n' "${summary[@]}" >&2
  say "suite wall time $(($(date +%s) - t0)) s"
  echo "box: $passed passed, $failed failed"
  [ $failed = 0 ]
}

case "${1:-}" in
build) cmd_build ;;
test)
  shift
  cmd_test "$@" || exit 1
  ;;
cases) echo "${CASES[@]}" ;;
*)
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
