#!/usr/bin/env python3
"""bench/ref/prep_ctr.py — K-fold TSVs from the Criteo and Avazu samples.

    python3 bench/ref/prep_ctr.py --data ../shared/data --out out/bench-cetnet/data \
        [--datasets criteo,avazu] [--folds 5] [--seed 0]

Reads (never copies into the repository; write --out under the gitignored out/):
  criteo_kaggle/{train,dev,test}.tsv  tab-separated, no header:
                                      label, I1..I13, C1..C26; empty = missing
  avazu/{train,dev,test}.csv          comma-separated; train.csv has the header,
                                      dev.csv and test.csv do not

All rows of a data set (train, dev, test concatenated in that order) are put in
a seeded shuffle order (random.Random(seed)) and cut into K contiguous folds.
For fold k: test.tsv = fold k; the other folds, in shuffle order, give
train.tsv (first 7/8) and valid.tsv (last 1/8, for early stopping).
Writes OUT/{criteo,avazu}/fold{k}/{train,valid,test}.tsv with a header line
('label' first), the format of rank/dataset.c. Deterministic for a seed.

Criteo: I1..I13 become categorical tokens with the Kaggle-winner
discretization: v if v <= 2 (negative values, e.g. I2 = -1, are their own
token this way) else "b" + str(int(log(v) ** 2)); an empty field stays empty
(missing). C1..C26 are kept as they are. The script also writes a column "ints": the
non-empty integer tokens of the row as one multi-valued field,
"I1=<tok>|I2=<tok>|..." (configs/criteo_cetnet.json uses C1..C26 plus that
bag, 27 features, from when rank allowed at most 32 features), and D1..D13:
the raw integers with negatives clamped at 0 (empty = missing), for dense
features with "log1p" (DLRM's Criteo transform; bench/bench_criteo.sh).
Avazu: id and hour (constant 14102100 in this sample) are dropped; click
becomes label; the other 21 columns are kept as they are.
"""
import argparse
import csv
import math
import os
import random
import sys

CRITEO_INTS = ["I%d" % i for i in range(1, 14)]
CRITEO_CATS = ["C%d" % i for i in range(1, 27)]


def bucket_int(v):
    """Kaggle-winner (3 Idiots) discretization of a Criteo integer feature."""
    if v == "":
        return ""
    x = int(v)
    if x <= 2:
        return str(x)
    return "b" + str(int(math.log(x) ** 2))


def read_criteo(root):
    d = os.path.join(root, "criteo_kaggle")
    header = ["label"] + CRITEO_INTS + CRITEO_CATS + ["ints"] + ["D%d" % i for i in range(1, 14)]
    rows = []
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        path = os.path.join(d, name)
        with open(path, newline="") as f:
            for ln, line in enumerate(f, 1):
                p = line.rstrip("\r\n").split("\t")
                if len(p) != 40:
                    sys.exit("prep_ctr: %s line %d: %d fields, expected 40" % (path, ln, len(p)))
                if p[0] not in ("0", "1"):
                    sys.exit("prep_ctr: %s line %d: label %r" % (path, ln, p[0]))
                ints = [bucket_int(v) for v in p[1:14]]
                bag = "|".join("%s=%s" % (n, t) for n, t in zip(CRITEO_INTS, ints) if t != "")
                dense = [v if v == "" or int(v) >= 0 else "0" for v in p[1:14]]
                rows.append([p[0]] + ints + p[14:40] + [bag] + dense)
    return header, rows


def read_avazu(root):
    d = os.path.join(root, "avazu")
    rows, cols = [], None
    for name in ("train.csv", "dev.csv", "test.csv"):
        path = os.path.join(d, name)
        with open(path, newline="") as f:
            r = csv.reader(f)
            if name == "train.csv":
                cols = next(r)
                if cols[:3] != ["id", "click", "hour"] or len(cols) != 24:
                    sys.exit("prep_ctr: %s: unexpected header %r" % (path, cols[:4]))
            for ln, rec in enumerate(r, 1):
                if len(rec) != 24:
                    sys.exit("prep_ctr: %s record %d: %d fields, expected 24" % (path, ln, len(rec)))
                if rec[1] not in ("0", "1"):
                    sys.exit("prep_ctr: %s record %d: click %r" % (path, ln, rec[1]))
                rows.append([rec[1]] + rec[3:])
    return ["label"] + cols[3:], rows


def write_tsv(path, header, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            for v in r:
                if "\t" in v or "\n" in v:
                    sys.exit("prep_ctr: value %r has a tab or newline" % v)
            f.write("\t".join(r) + "\n")
    os.replace(tmp, path)


def make_folds(name, header, rows, out, K, seed):
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    folds = [order[k * len(order) // K:(k + 1) * len(order) // K] for k in range(K)]
    for k in range(K):
        rest = [i for j in range(K) if j != k for i in folds[j]]
        n_train = len(rest) * 7 // 8
        parts = {"train": rest[:n_train], "valid": rest[n_train:], "test": folds[k]}
        d = os.path.join(out, name, "fold%d" % k)
        os.makedirs(d, exist_ok=True)
        for part, idx in parts.items():
            write_tsv(os.path.join(d, part + ".tsv"), header, [rows[i] for i in idx])
        pos = sum(rows[i][0] == "1" for i in folds[k]) / max(1, len(folds[k]))
        print("%s fold%d: train %d / valid %d / test %d (test click rate %.4f)"
              % (name, k, len(parts["train"]), len(parts["valid"]), len(parts["test"]), pos))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the shared data folder (holds criteo_kaggle/ and avazu/)")
    ap.add_argument("--out", required=True, help="output folder (keep it under out/, which git ignores)")
    ap.add_argument("--datasets", default="criteo,avazu")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.folds < 2:
        sys.exit("prep_ctr: --folds must be >= 2")
    readers = {"criteo": read_criteo, "avazu": read_avazu}
    for name in a.datasets.split(","):
        if name not in readers:
            sys.exit("prep_ctr: unknown data set %r (criteo, avazu)" % name)
        header, rows = readers[name](a.data)
        make_folds(name, header, rows, a.out, a.folds, a.seed)


if __name__ == "__main__":
    main()
