#!/usr/bin/env python3
"""Item-popularity baselines for the MovieLens CTR split (stdlib only).

    python3 bench/baselines.py --data out/bench-train/ml [--json-out FILE] [--prior 10]

Scores every example of valid.tsv and test.tsv from train.tsv alone:
  pop_count  the number of training examples of the item (movie_id);
             an item never seen in training scores 0.
  pop_ctr    the item's smoothed training positive rate,
             (positives + prior * g) / (examples + prior), g = the training
             positive rate; an unseen item scores g. prior = 10 pseudo-examples
             is fixed in advance (not chosen on the test split).
and reports AUC (ties get half credit, rank-sum formula) and, for pop_ctr,
logloss (p clamped to [1e-7, 1 - 1e-7]). pop_count is a ranking score, not a
probability, so it has no logloss. Both splits are printed; the test split is
the one bench/bench_train.sh compares against.
"""
import argparse
import csv
import json
import math
import os
import sys


def read(path, item_col="movie_id", label_col="label"):
    with open(path, newline="") as f:
        r = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(r)
        ii, li = header.index(item_col), header.index(label_col)
        out = []
        for row in r:
            if not row:
                continue
            y = row[li]
            if y not in ("0", "1", "0.0", "1.0"):
                sys.exit(f"{path}: label '{y}' is not 0 or 1")
            out.append((row[ii], 1 if y in ("1", "1.0") else 0))
        return out


def auc(scores, labels):
    """ROC AUC with average ranks for ties (Mann-Whitney U); NaN if undefined."""
    n = len(scores)
    n_pos = sum(labels)
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = sorted(range(n), key=lambda i: scores[i])
    rank_sum_pos = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        avg = (i + j + 2) / 2.0  # mean of the 1-based ranks i+1 .. j+1
        rank_sum_pos += avg * sum(labels[order[k]] for k in range(i, j + 1))
        i = j + 1
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def logloss(p, labels):
    s = 0.0
    for q, y in zip(p, labels):
        q = min(max(q, 1e-7), 1 - 1e-7)
        s -= math.log(q) if y else math.log(1 - q)
    return s / len(labels)


def main():
    ap = argparse.ArgumentParser(description="item-popularity baselines")
    ap.add_argument("--data", required=True, help="directory with train/valid/test.tsv from 'rank data'")
    ap.add_argument("--prior", type=float, default=10.0, help="pseudo-examples at the global rate (default 10)")
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()

    train = read(os.path.join(a.data, "train.tsv"))
    cnt, pos = {}, {}
    for item, y in train:
        cnt[item] = cnt.get(item, 0) + 1
        pos[item] = pos.get(item, 0) + y
    g = sum(y for _, y in train) / len(train)
    res = {"train_rows": len(train), "train_items": len(cnt), "global_rate": g, "prior": a.prior}
    for split in ("valid", "test"):
        rows = read(os.path.join(a.data, split + ".tsv"))
        labels = [y for _, y in rows]
        count = [cnt.get(it, 0) for it, _ in rows]
        ctr = [(pos.get(it, 0) + a.prior * g) / (cnt.get(it, 0) + a.prior) for it, _ in rows]
        unseen = sum(1 for it, _ in rows if it not in cnt)
        res[split] = {
            "n": len(rows), "base_rate": sum(labels) / len(labels), "rows_unseen_item": unseen,
            "pop_count": {"auc": auc(count, labels)},
            "pop_ctr": {"auc": auc(ctr, labels), "logloss": logloss(ctr, labels)},
        }
        r = res[split]
        print(f"{split}: n={r['n']} base_rate={r['base_rate']:.4f} rows_with_unseen_item={unseen} "
              f"pop_count_auc={r['pop_count']['auc']:.4f} pop_ctr_auc={r['pop_ctr']['auc']:.4f} "
              f"pop_ctr_logloss={r['pop_ctr']['logloss']:.5f}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
