#!/usr/bin/env python3
"""bench/ref/torch_tower.py -- PyTorch's speed on the same DCNv2 tower, for
context in `make bench-roofline` (Debian's python3-torch, 1 thread).

    torch_tower.py --model BUNDLE --batch B --seconds S

The tower of bench/ref/torch_server.py (x_{l+1} = x0 * (W_l x_l + b_l) + x_l,
ReLU MLP, output layer, sigmoid) on a fixed random x0 [B, D] under
torch.inference_mode; weights from the bundle's dense.safetensors. Prints
one line: candidates per wall-second and per CPU-second of this process.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_server import read_safetensors  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = json.load(open(os.path.join(a.model, "model.json")))
    w = {k: torch.from_numpy(v) for k, v in read_safetensors(os.path.join(a.model, "dense.safetensors")).items()}
    tw = cfg["tower"]
    D = sum(f["dim"] if f["kind"] == "sparse" else 1 for f in cfg["features"])
    cross = [(w["cross.%d.weight" % l], w["cross.%d.bias" % l]) for l in range(tw["cross_layers"])]
    mlp = [(w["mlp.%d.weight" % i], w["mlp.%d.bias" % i]) for i in range(len(tw["hidden"]))]
    out = (w["out.weight"], w["out.bias"])
    x0 = torch.from_numpy(np.random.default_rng(16).uniform(-0.5, 0.5, (a.batch, D)).astype(np.float32))

    def tower():
        x = x0
        for W, b in cross:
            x = x0 * torch.addmm(b, x, W.t()) + x
        for W, b in mlp:
            x = torch.relu(torch.addmm(b, x, W.t()))
        return torch.sigmoid(torch.addmm(out[1], x, out[0].t()))

    with torch.inference_mode():
        for _ in range(3):
            tower()
        n, w0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            tower()
            n += 1
            el = time.perf_counter() - w0
            if el >= a.seconds or n >= 1000000:
                break
        cpu = time.process_time() - c0
    print("torch_tower B=%d candidates_per_s=%.1f candidates_per_cpu_s=%.1f torch=%s" %
          (a.batch, n * a.batch / el, n * a.batch / cpu if cpu > 0 else 0, torch.__version__))


if __name__ == "__main__":
    main()
