"""Minimal safetensors writer for the reference-fixture generators in tests/ref/.

Format (huggingface safetensors README): u64 little-endian header length, a
JSON header (names -> dtype/shape/data_offsets, plus "__metadata__") padded
with spaces to a multiple of 8 bytes, then the raw little-endian float32 data
in the header's sorted name order. No `safetensors` package needed.
int64 arrays are written as I64; read_safetensors reads F32 and I64.
"""
import json
import struct


def write_safetensors(path, tensors, metadata):
    header, off = {"__metadata__": metadata}, 0
    names = sorted(tensors)
    for n in names:
        i64 = tensors[n].dtype.kind in "iu" and tensors[n].dtype.itemsize == 8
        nb = tensors[n].size * (8 if i64 else 4)
        header[n] = {"dtype": "I64" if i64 else "F32", "shape": list(tensors[n].shape),
                     "data_offsets": [off, off + nb]}
        off += nb
    hj = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for n in names:
            t = tensors[n]
            f.write(t.astype("<i8" if header[n]["dtype"] == "I64" else "<f4").tobytes())
    return 8 + len(hj) + off


def read_safetensors(path):
    """(tensors, metadata): F32 -> float32 arrays, I64 -> int64 arrays."""
    import numpy as np
    with open(path, "rb") as f:
        data = f.read()
    hl = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + hl])
    meta = header.pop("__metadata__", {})
    base, out = 8 + hl, {}
    for n, e in header.items():
        b, t = e["data_offsets"]
        dt = {"F32": "<f4", "I64": "<i8"}[e["dtype"]]
        out[n] = np.frombuffer(data[base + b:base + t], dtype=dt).reshape(e["shape"])
    return out, meta
