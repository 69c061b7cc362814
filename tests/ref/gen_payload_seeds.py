#!/usr/bin/env python3
"""Seeds for tests/fuzz/fuzz_payload.c: [alg][cap lo][cap hi][cuts] + a
message; alg 0/1/2 = none/deflate(zlib format)/gzip, the bound cap bytes,
cuts the seed of the slice cut points (1 + cuts % 6 slices).
Run from the repository root: python3 tests/ref/gen_payload_seeds.py"""
import gzip, os, zlib

OUT = "tests/fuzz/corpus/fuzz_payload"
os.makedirs(OUT, exist_ok=True)
for f in os.listdir(OUT):
    os.unlink(os.path.join(OUT, f))
text = b"rankd request " * 40  # 560 bytes


def head(alg, cap, cuts):
    return bytes([alg, cap & 255, cap >> 8, cuts])


seeds = {
    "plain": head(0, 1000, 1) + text,
    "deflate": head(1, 1000, 2) + zlib.compress(text, 9),
    "gzip": head(2, 1000, 3) + gzip.compress(text, 9, mtime=0),
    "gzip_exact": head(2, 560, 5) + gzip.compress(text, 9, mtime=0),
    "deflate_one_under": head(1, 559, 4) + zlib.compress(text, 9),
    "deflate_bomb": head(1, 3000, 1) + zlib.compress(b"\0" * 60000, 9),
    "gzip_padded": head(2, 1000, 0) + gzip.compress(text, 9, mtime=0) + b"xyz",
    "gzip_empty": head(2, 10, 0),
}
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
