#!/usr/bin/env python3
"""bench/ref/gen_wide.py — a wide synthetic CTR data set and its model config.

    python3 bench/ref/gen_wide.py OUT_DIR [--sparse 1000] [--dense 200]
        [--train 20000] [--valid 2000] [--test 2000] [--seed 1]

Writes OUT_DIR/data/{train,valid,test}.tsv (label, s0.., d0..) and
OUT_DIR/config.json: a DNN over every feature (sparse: table 1024, dim 8,
max_values 1; the first 30% of sparse and half of the dense features are
user-side). Users are runs of 10 rows sharing every user-side value, so a
request groups real candidates. The label follows a planted logistic model
of a few features (the same as tests/test_e2e.c's wide model) so training
has something to learn. Used by bench/bench_wide.sh (no target: a first
record of what a 1,000-feature model costs).
"""
import argparse
import json
import math
import os
import random


def write(path, n, args, seed):
    r = random.Random(seed)
    nus, nud = int(args.sparse * 0.3), args.dense // 2
    sv, dv = [0] * args.sparse, [0.0] * args.dense
    with open(path, "w") as o:
        o.write("\t".join(["label"] + [f"s{i}" for i in range(args.sparse)] + [f"d{i}" for i in range(args.dense)]) + "\n")
        for i in range(n):
            new_user = i % 10 == 0
            for f in range(args.sparse):
                if f >= nus or new_user:
                    sv[f] = r.randrange(20)
            for f in range(args.dense):
                if f >= nud or new_user:
                    dv[f] = r.gauss(0, 1)
            z = (1.5 * (1 if sv[7] % 2 else -1) + 1.5 * (1 if sv[args.sparse * 2 // 3] < 10 else -1)
                 + (1 if sv[-1] % 3 == 0 else -1) + dv[3] - dv[-1])
            y = 1 if r.random() < 1 / (1 + math.exp(-z)) else 0
            o.write("\t".join([str(y)] + [str(v) for v in sv] + [f"{v:.4f}" for v in dv]) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--sparse", type=int, default=1000)
    ap.add_argument("--dense", type=int, default=200)
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--valid", type=int, default=2000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "data"), exist_ok=True)
    for k, (name, n) in enumerate([("train", a.train), ("valid", a.valid), ("test", a.test)]):
        write(os.path.join(a.out, "data", name + ".tsv"), n, a, a.seed * 10 + k)
    nus, nud = int(a.sparse * 0.3), a.dense // 2
    feats = [{"name": f"s{i}", "side": "user" if i < nus else "item", "table_size": 1024, "dim": 8, "max_values": 1}
             for i in range(a.sparse)]
    feats += [{"name": f"d{i}", "kind": "dense", "side": "user" if i < nud else "item"} for i in range(a.dense)]
    cfg = {"name": "wide", "features": feats, "tower": {"type": "dnn", "hidden": [64, 32]},
           "train": {"seed": a.seed, "batch_size": 256, "max_epochs": 2, "patience": 1, "threads": 2,
                     "lr_dense": 0.003, "lr_embed": 0.05}}
    with open(os.path.join(a.out, "config.json"), "w") as o:
        json.dump(cfg, o)


if __name__ == "__main__":
    main()
