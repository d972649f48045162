#!/usr/bin/env python3
"""onnxruntime's own best int8 encoding of an f32 model, for the side-by-side benchmark.

Static post-training quantisation (onnxruntime.quantization.quantize_static), calibrated
on ~100 cub26 *train* photos preprocessed as the bundle's manifest says (the
`preprocess` object of `linesight-edge inspect --json`: shorter side resized to
resize_shorter, centre crop, mean/std, NCHW). This preprocessing only feeds calibration;
the benchmark itself feeds every runtime the input linesight's own Preprocessor made.

Tries QDQ and QOperator, per-channel weights, QInt8 weights with QUInt8 and QInt8
activations, times each candidate with onnxruntime (1 intra-op thread, median of 20 runs)
and copies the fastest to OUT_DIR/ort-int8.onnx; OUT_DIR/choice.json records every
candidate's median and the choice.

Usage: ort-quantize.py --onnx f32.onnx --inspect inspect.json --data /work/shared/data/cub26 --out-dir DIR
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image


def preprocess(path, spec):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = spec["resize_shorter"]
    if w <= h:
        nw, nh = s, max(1, round(h * s / w))
    else:
        nw, nh = max(1, round(w * s / h)), s
    filters = {"Bilinear": Image.BILINEAR, "Bicubic": Image.BICUBIC}
    if spec["filter"] not in filters:
        sys.exit(f"ort-quantize: unknown resize filter {spec['filter']!r} in the manifest")
    img = img.resize((nw, nh), filters[spec["filter"]])
    c = spec["crop"]
    left, top = (nw - c) // 2, (nh - c) // 2
    img = img.crop((left, top, left + c, top + c))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


class Reader(CalibrationDataReader):
    def __init__(self, name, arrays):
        self.name, self.it = name, iter(arrays)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {self.name: x}


def time_model(path, x, runs=20):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x})
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t), sess.run(None, {name: x})[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", required=True, help="the f32 model (inspect --extract-onnx)")
    ap.add_argument("--inspect", required=True, help="`linesight-edge inspect --json` of the f32 bundle")
    ap.add_argument("--data", required=True, help="cub26 folder (manifest.csv, images/)")
    ap.add_argument("--calibration-images", type=int, default=100)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument(
        "--candidates",
        default="qdq-u8act,qdq-s8act,qop-u8act,qop-s8act",
        help="comma-separated subset of the encodings to try",
    )
    a = ap.parse_args()

    spec = json.load(open(a.inspect))["preprocess"]
    with open(os.path.join(a.data, "manifest.csv")) as f:
        train = [r["path"] for r in csv.DictReader(f) if r["split"] == "train"]
    if not train:
        sys.exit(f"ort-quantize: no train rows in {a.data}/manifest.csv")
    step = max(1, len(train) // a.calibration_images)
    picked = sorted(train)[::step][: a.calibration_images]
    arrays = [preprocess(os.path.join(a.data, p), spec) for p in picked]
    print(f"ort-quantize: {len(arrays)} calibration images (every {step}th train photo)", file=sys.stderr)

    os.makedirs(a.out_dir, exist_ok=True)
    pre = os.path.join(a.out_dir, "f32-pre.onnx")
    quant_pre_process(a.onnx, pre, skip_symbolic_shape=True)
    name = ort.InferenceSession(pre, providers=["CPUExecutionProvider"]).get_inputs()[0].name

    x = arrays[0]
    base_ms, base_out = time_model(a.onnx, x)
    results = {"f32": {"median_ms": base_ms, "path": a.onnx}}
    candidates = [
        ("qdq-u8act", QuantFormat.QDQ, QuantType.QUInt8),
        ("qdq-s8act", QuantFormat.QDQ, QuantType.QInt8),
        ("qop-u8act", QuantFormat.QOperator, QuantType.QUInt8),
        ("qop-s8act", QuantFormat.QOperator, QuantType.QInt8),
    ]
    wanted = set(a.candidates.split(","))
    for tag, fmt, act in [c for c in candidates if c[0] in wanted]:
        out = os.path.join(a.out_dir, f"{tag}.onnx")
        try:
            quantize_static(
                pre,
                out,
                Reader(name, arrays),
                quant_format=fmt,
                activation_type=act,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
            ms, y = time_model(out, x)
        except Exception as e:  # a candidate ORT cannot build or run is reported, not fatal
            print(f"ort-quantize: {tag}: {e}", file=sys.stderr)
            results[tag] = {"error": str(e)}
            continue
        agree = int(np.argmax(y) == np.argmax(base_out))
        results[tag] = {"median_ms": ms, "path": out, "top1_matches_f32_on_first_image": agree}
        print(f"ort-quantize: {tag}: {ms:.2f} ms (f32 {base_ms:.2f} ms)", file=sys.stderr)
    ok = {k: v for k, v in results.items() if k != "f32" and "median_ms" in v}
    if not ok:
        sys.exit("ort-quantize: no int8 candidate ran")
    best = min(ok, key=lambda k: ok[k]["median_ms"])
    shutil.copyfile(ok[best]["path"], os.path.join(a.out_dir, "ort-int8.onnx"))
    results["choice"] = best
    results["onnxruntime"] = ort.__version__
    json.dump(results, open(os.path.join(a.out_dir, "choice.json"), "w"), indent=2)
    print(f"ort-quantize: fastest is {best} -> {a.out_dir}/ort-int8.onnx", file=sys.stderr)


if __name__ == "__main__":
    main()
