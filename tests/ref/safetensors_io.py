"""Minimal safetensors writer for the reference-fixture generators in tests/ref/.

Format (huggingface safetensors README): u64 little-endian header length, a
JSON header (names -> dtype/shape/data_offsets, plus "__metadata__") padded
with spaces to a multiple of 8 bytes, then the raw little-endian float32 data
in the header's sorted name order. No `safetensors` package needed.
"""
import json
import struct


def write_safetensors(path, tensors, metadata):
    header, off = {"__metadata__": metadata}, 0
    names = sorted(tensors)
    for n in names:
        nb = tensors[n].size * 4
        header[n] = {"dtype": "F32", "shape": list(tensors[n].shape),
                     "data_offsets": [off, off + nb]}
        off += nb
    hj = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for n in names:
            f.write(tensors[n].astype("<f4").tobytes())
    return 8 + len(hj) + off
