#!/usr/bin/env python3
"""Seeds for tests/fuzz/fuzz_payload.c: [alg][cap][pieces] + a message, alg
0/1/2 = none/deflate(zlib format)/gzip, the bound cap * 97 bytes.
Run from the repository root: python3 tests/ref/gen_payload_seeds.py"""
import gzip, os, zlib

OUT = "tests/fuzz/corpus/fuzz_payload"
os.makedirs(OUT, exist_ok=True)
text = b"rankd request " * 40  # 560 bytes
seeds = {
    "plain": bytes([0, 10, 1]) + text,
    "deflate": bytes([1, 10, 2]) + zlib.compress(text, 9),
    "gzip": bytes([2, 10, 3]) + gzip.compress(text, 9, mtime=0),
    "gzip_exact": bytes([2, 1, 0]) + gzip.compress(b"x" * 97, 9, mtime=0),
    "deflate_bomb": bytes([1, 3, 1]) + zlib.compress(b"\0" * 60000, 9),
    "gzip_padded": bytes([2, 10, 1]) + gzip.compress(text, 9, mtime=0) + b"xyz",
}
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
