#!/usr/bin/env python3
"""On-paper box latency of the MobileNetV2 student on Cortex-A72 and Cortex-A76 cores.

No such box is here (the emulated one in scripts/box.sh runs tract's real NEON kernels, but
qemu's timing says nothing about silicon), so this estimates one frame from three inputs:

1. The student's multiply-accumulates per layer, from MobileNetV2's architecture
   (torchvision's inverted-residual settings, 224x224 input, 1280-d features, cosine head).
2. tract's own published kernel timings for an in-order ARM core: `src/arm64/cortex_a53.txt`
   in the tract-linalg 0.23.9 crate (cargo's registry; one line per measured f32 matmul:
   kernel, mr, nr, m, k, n, seconds). They give the f32 MAC rate tract reaches on
   an A53 at matmul shapes like ours. Cortex-A72 and A76 are scaled from it by their NEON
   FMA width per clock (A53: one 128-bit FMLA per cycle; A72 and A76: two pipes) and clock.
3. The measured share of the run that is not a matmul (depthwise convolutions, ReLU6,
   packing, pooling) in tract's own plan: docs/benchmarks.md, "Edge speed in a release
   build", the before profile (the box runs tract's plan: linesight's own x86 kernels are
   not built for aarch64).

usage: scripts/box-estimate.py [--a53-ghz 1.4] [--registry ~/.cargo/registry/src]
Prints a markdown table. Every assumption is a flag or a named constant below.
"""
import argparse
import glob
import os
import statistics

# torchvision MobileNetV2: expansion t, channels c, repeats n, stride s.
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
CLASSES = 26
# tract's plan on x86 (release, before linesight's own ops, docs/benchmarks.md): matmuls
# (1x1 convolutions, stem, classifier) + their packing 17.28 ms of 24.31 ms summed over nodes.
MATMUL_SHARE = 17.28 / 24.31
# f32 multiply-accumulates per cycle at peak (4 lanes per 128-bit FMLA).
PEAK_MAC_PER_CYCLE = {"cortex-a53": 4, "cortex-a72": 8, "cortex-a76": 8}
# int8 matmul MACs per f32 MAC at peak in tract's arm64 kernels: without the dot-product
# extension (A53, A72: ARMv8.0) `arm64simd_mmm_i32_8x8` widens with SMLAL (8 x i16 lanes,
# 2x f32); with it (A76: ARMv8.2 dotprod) `arm64simd_mmm_i32_8x8_dot` uses SDOT (16 MACs per
# 128-bit instruction, 4x f32).
INT8_GAIN = {"cortex-a53": 2, "cortex-a72": 2, "cortex-a76": 4}
CORES = [("cortex-a72", "Cortex-A72 @ 1.5 GHz (Raspberry Pi 4)", 1.5),
         ("cortex-a72", "Cortex-A72 @ 1.8 GHz (Pi 4 rev 1.4, CM4 class)", 1.8),
         ("cortex-a76", "Cortex-A76 @ 2.4 GHz (Raspberry Pi 5)", 2.4)]


def mobilenet_v2_macs():
    """(matmul MACs, depthwise MACs) for one 224x224 image."""
    h = 112  # after the stem's stride 2
    mm = h * h * 32 * 3 * 3 * 3  # stem 3x3/2 (im2col + matmul in tract)
    dw = 0
    cin = 32
    for t, c, n, s in SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            hid = cin * t
            if t != 1:
                mm += h * h * cin * hid  # expand 1x1
            h_out = h // stride
            dw += h_out * h_out * hid * 9  # depthwise 3x3
            mm += h_out * h_out * hid * c  # project 1x1
            h, cin = h_out, c
    mm += h * h * cin * 1280  # features.18
    mm += 1280 * CLASSES  # cosine head
    return mm, dw


def a53_rate(registry):
    """Median f32 GMAC/s of tract's best kernel per shape, at shapes like MobileNetV2's."""
    files = glob.glob(os.path.join(os.path.expanduser(registry), "*", "tract-linalg-0.23.9", "src", "arm64", "cortex_a53.txt"))
    if not files:
        raise SystemExit(f"tract-linalg 0.23.9 not found under {registry}: build the edge crate once (cargo fetch)")
    best = {}
    for line in open(files[0]):
        p = line.split()
        if len(p) < 7 or "_f32_" not in p[0]:
            continue
        m, k, n = map(int, p[3:6])
        best[(m, k, n)] = min(best.get((m, k, n), 1e9), float(p[6]))
    rates = [m * k * n / t / 1e9 for (m, k, n), t in best.items() if m >= 16 and k >= 16 and n >= 40]
    return statistics.median(rates), len(rates), files[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a53-ghz", type=float, default=1.4, help="clock of the A53 tract measured on (unpublished; Pi 3B+ is 1.4)")
    ap.add_argument("--registry", default="~/.cargo/registry/src")
    a = ap.parse_args()
    mm, dw = mobilenet_v2_macs()
    rate, shapes, path = a53_rate(a.registry)
    per_cycle = rate / a.a53_ghz
    eff = per_cycle / PEAK_MAC_PER_CYCLE["cortex-a53"]
    print(f"MobileNetV2 student, one 224x224 frame: {mm / 1e6:.0f} M MACs in matmuls, {dw / 1e6:.1f} M in depthwise")
    print(f"tract on Cortex-A53 (`{path}`, {shapes} shapes): median {rate:.2f} GMAC/s f32 "
          f"= {per_cycle:.2f} MAC/cycle at {a.a53_ghz} GHz ({eff:.0%} of peak)")
    print(f"matmul share of tract's plan (x86 profile): {MATMUL_SHARE:.0%}\n")
    print("| core | f32 GMAC/s (matmuls) | matmuls ms | frame ms, 1 thread, f32 | int8 matmuls, best case | frame ms, int8 floor |")
    print("|---|---|---|---|---|---|")
    rows = [("cortex-a53", f"Cortex-A53 @ {a.a53_ghz} GHz (tract's measurement)", a.a53_ghz)] + CORES
    for core, name, ghz in rows:
        r = PEAK_MAC_PER_CYCLE[core] * eff * ghz
        t_mm = mm / (r * 1e9) * 1e3
        frame = t_mm / MATMUL_SHARE
        g = INT8_GAIN[core]
        floor = frame - t_mm + t_mm / g
        print(f"| {name} | {r:.1f} | {t_mm:.0f} | {frame:.0f} | {g}x ({'SDOT' if g == 4 else 'SMLAL'}) | {floor:.0f} |")
    print("\nint8 floor: every matmul int8 at the same share of peak, nothing else changed; the")
    print("quantise / rescale ops around each int8 matmul come on top (on x86 they cost 63 % of")
    print("the int8 matmul time, docs/benchmarks.md), so the int8 frame lies between floor and f32.")


if __name__ == "__main__":
    main()
