#!/usr/bin/env python3
"""bench/ref/set_train.py — a model config with its regularization set.

    python3 bench/ref/set_train.py IN.json OUT.json L2_EMBED L2_DENSE DROPOUT

Copies IN.json to OUT.json with train.l2_embed, train.l2_dense and
train.dropout replaced (bench/bench_criteo_reg.sh and bench_criteo_lr.sh).
"""
import json
import sys

if len(sys.argv) != 6:
    sys.exit(__doc__)
c = json.load(open(sys.argv[1]))
c.setdefault("train", {}).update(l2_embed=float(sys.argv[3]), l2_dense=float(sys.argv[4]), dropout=float(sys.argv[5]))
json.dump(c, open(sys.argv[2], "w"), indent=1)
