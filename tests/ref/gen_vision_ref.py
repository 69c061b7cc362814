#!/usr/bin/env python3
"""Fixtures for tests/test_vision.c: test images and their Python references.

Writes tests/fixtures/images/:
  chelsea.jpg      a photograph (a cat), 451x300, re-encoded at JPEG quality
                   90 from scikit-image's data/chelsea.png (Debian package
                   python3-skimage 0.19.3, /usr/lib/python3/dist-packages/
                   skimage/data/chelsea.png; "CC0 by the photographer (Stefan
                   van der Walt)" per skimage/data/_fetchers.py)
  coffee_prog.jpg  a photograph (a coffee cup), scikit-image's data/coffee.png
                   (same package; "CC0 by the photographer (Rachel
                   Michetti)") reduced to 300x200, saved as PROGRESSIVE JPEG q85
  grey.png, greyj.jpg, palette_trns.png, rgba.png, rgb16.png, interlaced.png,
  one_px.png, cmyk.jpg
                   generated here (seeded): grey, palette with a tRNS chunk,
                   RGBA, 16-bit RGB, Adam7-interlaced RGB (both hand-written,
                   PIL writes neither), 1x1, a CMYK JPEG (which rankd refuses)
  *_crop.png       PIL's 224x224 crop after the DINOv2 eval transform
                   (tests/ref/vision_ref.py) of each image PIL reads, lossless
and tests/fixtures/vision_ref.safetensors: "cls/NAME" [1, 384] = onnxruntime
on the ONNX model with PIL's preprocessing, for the photos; "mean/chelsea"
[1, 384] = the mean of the final LayerNorm over the patch tokens.

Run from the repo root after `scripts/setup-vision.sh --python`, with
python3-skimage's data unpacked (apt-get download python3-skimage;
dpkg-deb -x python3-skimage_*.deb DIR):
    ~/.cache/rankd/venv-vision/bin/python tests/ref/gen_vision_ref.py \
        --skimage DIR/usr/lib/python3/dist-packages/skimage/data \
        --model ~/.cache/rankd/models/dinov2-vits14/model.onnx
"""
import argparse
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from safetensors_io import write_safetensors  # noqa: E402
from vision_ref import OrtBackbone, LN_OUT, preprocess  # noqa: E402

OUT = "tests/fixtures/images"


def png_chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def write_png(path, a, bitdepth=8, interlace=False):
    """RGB PNG from a [h, w, 3] array (uint8 or uint16), optionally Adam7."""
    h, w, _ = a.shape
    dt = ">u2" if bitdepth == 16 else "u1"
    raw = b""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)] \
        if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        sub = a[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        for row in sub:
            raw += b"\x00" + row.astype(dt).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, bitdepth, 2, 0, 0, 1 if interlace else 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw, 9))
                + png_chunk(b"IEND", b""))


def scene(rng, w, h):
    """A smooth colour field with noise: not flat, so resampling matters."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 7.0), 128 + 100 * np.cos(y / 5.0), 255 * (x + y) / (w + h)], -1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skimage", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(13)
    Image.open(os.path.join(a.skimage, "chelsea.png")).convert("RGB").save(f"{OUT}/chelsea.jpg", quality=90)
    Image.open(os.path.join(a.skimage, "coffee.png")).convert("RGB").resize((300, 200), Image.BICUBIC).save(
        f"{OUT}/coffee_prog.jpg", quality=85, progressive=True)
    Image.fromarray(scene(rng, 61, 47)[:, :, 0]).save(f"{OUT}/grey.png")
    Image.fromarray(scene(rng, 80, 64)[:, :, 1]).save(f"{OUT}/greyj.jpg", quality=90)
    p = Image.fromarray(scene(rng, 50, 70)).quantize(16)
    p.save(f"{OUT}/palette_trns.png", transparency=3)
    rgba = np.concatenate([scene(rng, 90, 40), rng.integers(0, 256, (40, 90, 1), dtype=np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(f"{OUT}/rgba.png")
    write_png(f"{OUT}/rgb16.png", scene(rng, 45, 33).astype(np.uint16) * 257 + rng.integers(0, 256, (33, 45, 3)).astype(np.uint16), 16)
    write_png(f"{OUT}/interlaced.png", scene(rng, 37, 29), 8, interlace=True)
    Image.fromarray(np.array([[[200, 30, 90]]], dtype=np.uint8)).save(f"{OUT}/one_px.png")
    Image.fromarray(scene(rng, 40, 40)).convert("CMYK").save(f"{OUT}/cmyk.jpg")
    for n in ["chelsea.jpg", "coffee_prog.jpg", "grey.png", "greyj.jpg", "palette_trns.png", "rgba.png", "rgb16.png",
              "interlaced.png", "one_px.png"]:
        c, _ = preprocess(f"{OUT}/{n}")
        Image.fromarray(c).save(f"{OUT}/{n.split('.')[0]}_crop.png", optimize=True)
    ob = OrtBackbone(a.model)
    t = {}
    for n in ["chelsea.jpg", "coffee_prog.jpg"]:
        _, x = preprocess(f"{OUT}/{n}")
        t["cls/" + n.split(".")[0]] = ob.cls(x[None]).astype(np.float32)
        if n == "chelsea.jpg":
            full = ob.sess.run([LN_OUT], {"input_image": x[None]})[0]
            t["mean/chelsea"] = full[:, 1:, :].mean(axis=1).astype(np.float32)
    import PIL
    import onnxruntime
    write_safetensors("tests/fixtures/vision_ref.safetensors", t,
                      {"generator": "tests/ref/gen_vision_ref.py", "pillow": PIL.__version__,
                       "onnxruntime": onnxruntime.__version__})


if __name__ == "__main__":
    main()
