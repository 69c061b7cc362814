#!/usr/bin/env python3
"""bench-vision's Python side: the bench images, the onnxruntime reference,
and images/s of onnxruntime and PyTorch on the same DINOv2 ViT-S/14 weights.

  vision_bench.py prepare --images ROOT --model DIR --out OUT
      ROOT: Debian packages unpacked by bench/bench_vision.sh. Picks the real
      images (list in pick_images), writes OUT/list.csv ("ID,PATH" for `rank
      encode image --list`), OUT/pixels.f32 (PIL's DINOv2 preprocessing,
      [n, 3, 224, 224]; the timing input of every implementation),
      OUT/ort.npy (onnxruntime's CLS [n, 384] on those pixels: the parity
      reference) and prints the PyTorch-vs-onnxruntime parity.
  vision_bench.py speed --impl ort|torch --model DIR --pixels F --n N
                        --threads T --batch B --iters I
      One untimed warm-up batch, then I batches of B; prints
      "IMPL: threads=T batch=B ... img_per_s=R".
  vision_bench.py parity --ref OUT/ort.npy --got FILE.safetensors
      min cosine and max |diff| of rankd's `rank encode image` output.

PyTorch model: DINOv2 written here with torch.nn.functional (Debian's torch
1.13 has no Dinov2Model), reading the converted model.safetensors; the
position grid is resized with F.interpolate(mode="bicubic",
align_corners=False), the same kernel (a = -0.75, half-pixel, clamped) as
the ONNX graph's Resize.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "ref"))
from safetensors_io import read_safetensors  # noqa: E402

SKIMAGE = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
           "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
           "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png"]


def pick_images(root):
    out = [os.path.join(root, "usr/lib/python3/dist-packages/skimage/data", n) for n in SKIMAGE]
    out.append(os.path.join(root, "usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg"))
    out += [os.path.join(root, "usr/lib/python3/dist-packages/sklearn/datasets/images", n)
            for n in ("china.jpg", "flower.jpg")]
    wp = os.path.join(root, "usr/share/wallpapers")
    for d in sorted(os.listdir(wp)):
        imgs = os.path.join(wp, d, "contents", "images")
        if not os.path.isdir(imgs):
            continue
        real = sorted(f for f in os.listdir(imgs) if not os.path.islink(os.path.join(imgs, f))
                      and f.lower().endswith((".jpg", ".jpeg", ".png")))
        if real:
            out.append(os.path.join(imgs, real[0]))
    missing = [p for p in out if not os.path.exists(p)]
    if missing:
        sys.exit(f"vision_bench: missing {missing[:3]}")
    return out


def torch_model(model_dir):
    import torch
    import torch.nn.functional as F
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    t, _ = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    W = {k: torch.from_numpy(np.array(v)) for k, v in t.items()}
    H, nh, L, eps, p = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["layer_norm_eps"], cfg["patch_size"]
    g0 = cfg["image_size"] // p
    pos = W["embeddings.position_embeddings"]
    grid = pos[:, 1:].reshape(1, g0, g0, H).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(224 // p, 224 // p), mode="bicubic", align_corners=False)
    pos224 = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, H)], 1)

    def fwd(x):
        n = x.shape[0]
        e = F.conv2d(x, W["embeddings.patch_embeddings.projection.weight"],
                     W["embeddings.patch_embeddings.projection.bias"], stride=p).flatten(2).transpose(1, 2)
        h = torch.cat([W["embeddings.cls_token"].expand(n, -1, -1), e], 1) + pos224
        T = h.shape[1]
        for i in range(L):
            pre = f"encoder.layer.{i}."
            a = F.layer_norm(h, (H,), W[pre + "norm1.weight"], W[pre + "norm1.bias"], eps)
            q, k, v = (F.linear(a, W[pre + f"attention.attention.{m}.weight"], W[pre + f"attention.attention.{m}.bias"])
                       .view(n, T, nh, H // nh).transpose(1, 2) for m in ("query", "key", "value"))
            att = torch.softmax(q @ k.transpose(-1, -2) / (H // nh) ** 0.5, -1) @ v
            a = F.linear(att.transpose(1, 2).reshape(n, T, H), W[pre + "attention.output.dense.weight"],
                         W[pre + "attention.output.dense.bias"])
            h = h + W[pre + "layer_scale1.lambda1"] * a
            a = F.layer_norm(h, (H,), W[pre + "norm2.weight"], W[pre + "norm2.bias"], eps)
            a = F.linear(F.gelu(F.linear(a, W[pre + "mlp.fc1.weight"], W[pre + "mlp.fc1.bias"])),
                         W[pre + "mlp.fc2.weight"], W[pre + "mlp.fc2.bias"])
            h = h + W[pre + "layer_scale2.lambda1"] * a
        return F.layer_norm(h[:, 0], (H,), W["layernorm.weight"], W["layernorm.bias"], eps)
    return fwd


def cos_stats(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    c = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return c.min(), np.abs(a - b).max()


def prepare(a):
    from vision_ref import OrtBackbone, preprocess
    os.makedirs(a.out, exist_ok=True)
    paths = pick_images(a.images)
    xs = []
    with open(os.path.join(a.out, "list.csv"), "w") as f:
        for i, p in enumerate(paths):
            f.write(f"{i},{p}\n")
            xs.append(preprocess(p)[1])
    x = np.stack(xs).astype(np.float32)
    x.tofile(os.path.join(a.out, "pixels.f32"))
    ob = OrtBackbone(os.path.join(a.model, "model.onnx"), threads=2)
    ref = np.concatenate([ob.cls(x[i:i + 8]) for i in range(0, len(x), 8)])
    np.save(os.path.join(a.out, "ort.npy"), ref)
    import torch
    fwd = torch_model(a.model)
    with torch.no_grad():
        tv = np.concatenate([fwd(torch.from_numpy(x[i:i + 8])).numpy() for i in range(0, len(x), 8)])
    c, d = cos_stats(tv, ref)
    print(f"prepare: n={len(paths)} torch_vs_ort_min_cosine={c:.6f} torch_vs_ort_max_abs_diff={d:.3g}")


def speed(a):
    x = np.fromfile(a.pixels, dtype=np.float32).reshape(a.n, 3, 224, 224)
    if a.impl == "ort":
        from vision_ref import OrtBackbone
        ob = OrtBackbone(os.path.join(a.model, "model.onnx"), threads=a.threads)
        run = ob.cls
    else:
        import torch
        torch.set_num_threads(a.threads)
        fwd = torch_model(a.model)

        def run(b):
            with torch.no_grad():
                return fwd(torch.from_numpy(b)).numpy()
    run(x[:a.batch])
    t0 = time.perf_counter()
    for it in range(a.iters):
        f = (it * a.batch) % (a.n - a.batch + 1)
        run(x[f:f + a.batch])
    s = time.perf_counter() - t0
    print(f"{a.impl}: threads={a.threads} batch={a.batch} images={a.iters * a.batch} seconds={s:.3f} "
          f"img_per_s={a.iters * a.batch / s:.3f}")


def parity(a):
    ref = np.load(a.ref)
    t, _ = read_safetensors(a.got)
    got = t["embeddings"][np.argsort(t["ids"])]
    if got.shape != ref.shape:
        sys.exit(f"parity: {got.shape} vs {ref.shape}")
    c, d = cos_stats(got, ref)
    print(f"parity: n={len(ref)} min_cosine={c:.6f} max_abs_diff={d:.3g}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--images", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("speed")
    for k in ("impl", "model", "pixels"):
        p.add_argument("--" + k, required=True)
    for k in ("n", "threads", "batch", "iters"):
        p.add_argument("--" + k, type=int, required=True)
    p = sub.add_parser("parity")
    p.add_argument("--ref", required=True)
    p.add_argument("--got", required=True)
    a = ap.parse_args()
    {"prepare": prepare, "speed": speed, "parity": parity}[a.cmd](a)


if __name__ == "__main__":
    main()
