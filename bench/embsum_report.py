#!/usr/bin/env python3
"""bench/embsum_report.py — helpers of bench/bench_embsum.sh (numpy only).

  summaries ML_DIR OUT.tsv
      stand-in user summaries (NOT written by an LLM): from each user's first 40% of events (the
      training history), the 3 most frequent genres and up to 5 most frequent tags, as
      "Stand-in summary from rated genres and tags: likes Drama, Comedy and Romance; tags: ...".
  dcn-data ML_DIR IMPRESSIONS.tsv OUT_DIR SEED [PAIRS_SCORES.tsv]
      TSVs for the ID DCNv2 of the demo (configs/movielens_dcnv2.json) on EmbSum's examples:
      train = each user's positives of the training period [40%, 80%) with its own row's context
      (hour, weekday, history) + 4 negatives sampled among items the user never rated (seed SEED),
      sharing that context; valid/test = the impression rows of `rank embsum train --impressions`,
      with the context of the user's first event of the period. Writes OUT_DIR/{train,valid,test}.tsv
      and OUT_DIR/pairs.tsv (split, user_id, movie_id) for `rank embsum pairs`; given that output
      (PAIRS_SCORES.tsv), adds the dense column "embsum" (run (e)).
  dcn-metrics DIR SCORES.tsv OUT.json
      MIND metrics of `rank score`'s pCTRs on DIR/test.tsv (and valid), per impression; new-item AUC.
  report OUT_DIR
      the table and the last line of bench-embsum from the runs' JSON files.
"""
import csv
import glob
import json
import os
import re
import sys
from collections import Counter, defaultdict

import numpy as np

PERIOD = {"train": (0.4, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}


def read_events(ml):
    ev = defaultdict(list)
    for name in ("train.tsv", "valid.tsv", "test.tsv"):
        with open(os.path.join(ml, name)) as f:
            r = csv.DictReader(f, delimiter="\t")
            for row in r:
                ev[int(row["user_id"])].append(row)
    return ev


def read_items(ml):
    items = {}
    with open(os.path.join(ml, "items.csv"), newline="") as f:
        for row in csv.DictReader(f):
            m = re.findall(r"\((\d{4})\)", row["title"])
            items[int(row["movieId"])] = {"genres": row["genres"], "year": m[-1] if m else "",
                                          "tags": [t.strip() for t in row["tags"].split(",") if t.strip()]}
    return items


def period(n, split):
    a, b = PERIOD[split]
    return int(a * n), (n if split == "test" else int(b * n))


def cmd_summaries(ml, out):
    ev, items = read_events(ml), read_items(ml)
    with open(out, "w") as f:
        for u in sorted(ev):
            cut = int(0.4 * len(ev[u]))
            if cut == 0:
                continue
            g, t = Counter(), Counter()
            for row in ev[u][:cut]:
                it = items[int(row["movie_id"])]
                g.update(x for x in it["genres"].split("|") if x and x != "(no genres listed)")
                t.update(it["tags"])
            top = [x for x, _ in g.most_common(3)]
            if not top:
                continue
            likes = top[0] if len(top) == 1 else ", ".join(top[:-1]) + " and " + top[-1]
            tags = ", ".join(x for x, _ in t.most_common(5))
            text = "Stand-in summary from rated genres and tags: likes %s%s" % (likes, "; tags: " + tags if tags else "")
            f.write("%d\t%s\n" % (u, text.replace("\t", " ")))


COLS = ["label", "timestamp", "user_id", "movie_id", "genres", "year", "hour", "weekday", "history", "impression"]


def cmd_dcn_data(ml, imp, out, seed, pair_scores=None):
    ev, items = read_events(ml), read_items(ml)
    all_items = np.array(sorted(items))
    rated = {u: set(int(r["movie_id"]) for r in rows) for u, rows in ev.items()}
    rng = np.random.default_rng(int(seed))
    os.makedirs(out, exist_ok=True)
    rows = {"train": [], "valid": [], "test": []}

    def row(ctx, mid, label, imp_id):
        it = items[mid]
        return {"label": str(label), "timestamp": ctx["timestamp"], "user_id": ctx["user_id"], "movie_id": str(mid),
                "genres": "" if it["genres"] == "(no genres listed)" else it["genres"], "year": it["year"],
                "hour": ctx["hour"], "weekday": ctx["weekday"], "history": ctx["history"], "impression": imp_id}

    for u in sorted(ev):
        n = len(ev[u])
        a, b = period(n, "train")
        if a == 0:
            continue
        for r in ev[u][a:b]:
            if r["label"] != "1":
                continue
            rows["train"].append(row(r, int(r["movie_id"]), 1, "-1"))
            taken = {int(r["movie_id"])}
            for _ in range(4):
                while True:
                    c = int(all_items[rng.integers(len(all_items))])
                    if c not in rated[u] and c not in taken:
                        break
                taken.add(c)
                rows["train"].append(row(r, c, 0, "-1"))
    with open(imp) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            u = int(r["user_id"])
            a, _ = period(len(ev[u]), r["split"])
            ctx = ev[u][a]
            rows[r["split"]].append(row(ctx, int(r["movie_id"]), int(r["label"]), r["impression"]))
    if pair_scores:
        with open(pair_scores) as f:
            sc = [line.strip() for line in f][1:]
        k = 0
        for split in ("train", "valid", "test"):
            for r in rows[split]:
                r["embsum"] = sc[k]
                k += 1
        assert k == len(sc), (k, len(sc))
    cols = COLS + (["embsum"] if pair_scores else [])
    for split, rs in rows.items():
        with open(os.path.join(out, split + ".tsv"), "w") as f:
            f.write("\t".join(cols) + "\n")
            for r in rs:
                f.write("\t".join(r[c] for c in cols) + "\n")
    with open(os.path.join(out, "pairs.tsv"), "w") as f:
        f.write("split\tuser_id\tmovie_id\n")
        for split in ("train", "valid", "test"):
            for r in rows[split]:
                f.write("%s\t%s\t%s\n" % (split, r["user_id"], r["movie_id"]))
    # schema.json beside the TSVs: copy rank data movielens' (it marks "rating" label-derived)
    with open(os.path.join(ml, "schema.json")) as f:
        schema = f.read()
    with open(os.path.join(out, "schema.json"), "w") as f:
        f.write(schema)


def mind(y, lab):
    y, lab = np.asarray(y, float), np.asarray(lab, int)
    np_, nn_ = lab.sum(), len(lab) - lab.sum()
    yp, yn = y[lab == 1][:, None], y[lab == 0][None, :]
    auc = ((yp > yn).sum() + 0.5 * (yp == yn).sum()) / (np_ * nn_) if np_ and nn_ else 0.5
    order = np.argsort(-y, kind="stable")
    ls = lab[order]
    ranks = np.arange(1, len(y) + 1)
    mrr = (ls / ranks).sum() / max(np_, 1)
    nd = []
    for k in (5, 10):
        disc = 1 / np.log2(ranks[:k] + 1)
        idcg = disc[:min(np_, k)].sum()
        nd.append((ls[:k] * disc).sum() / idcg if idcg > 0 else 0)
    return auc, mrr, nd[0], nd[1]


def pooled_auc(y, lab):
    y, lab = np.asarray(y, float), np.asarray(lab, int)
    order = np.argsort(y, kind="mergesort")
    ys = y[order]
    ranks = np.empty(len(y))
    i = 0
    while i < len(y):
        j = i
        while j + 1 < len(y) and ys[j + 1] == ys[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    npos = lab.sum()
    return (ranks[lab == 1].sum() - npos * (npos + 1) / 2) / (npos * (len(y) - npos))


def cmd_dcn_metrics(d, scores, out):
    with open(os.path.join(d, "test.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    with open(scores) as f:
        p = [float(line.split("\t")[0]) for line in f.read().split("\n")[1:] if line]
    assert len(p) == len(rows)
    with open(os.path.join(d, "train.tsv")) as f:
        seen = {r["movie_id"] for r in csv.DictReader(f, delimiter="\t") if r["label"] == "1"}
    imp = defaultdict(list)
    for r, y in zip(rows, p):
        imp[r["impression"]].append((y, int(r["label"]), r["movie_id"] not in seen))
    res = np.array([mind([a for a, _, _ in v], [b for _, b, _ in v]) for v in imp.values()])
    new = [(y, lab) for v in imp.values() for y, lab, nw in v if nw]
    out_j = {"impressions": len(imp), "auc": res[:, 0].mean(), "mrr": res[:, 1].mean(), "ndcg5": res[:, 2].mean(),
             "ndcg10": res[:, 3].mean(), "pooled_auc": pooled_auc(p, [int(r["label"]) for r in rows]),
             "new_item_rows": len(new),
             "new_item_auc": pooled_auc([a for a, _ in new], [b for _, b in new]) if new else None}
    with open(out, "w") as f:
        json.dump(out_j, f, indent=1)


def mean_sd(v):
    v = [x for x in v if x is not None]
    return (float(np.mean(v)), float(np.std(v))) if v else (float("nan"), 0.0)


def cmd_report(out):
    def load(pat):
        return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, pat)))]
    runs = {"a": load("a_seed*.json"), "b": load("b_seed*.json"), "sum": load("sum_seed*.json"),
            "f": load("f_seed*.json"), "d": load("d_seed*.json"), "e": load("e_seed*.json")}
    t = lambda r: r["test"]  # noqa: E731
    lines = []

    def line(name, vals, key):
        m, s = mean_sd(vals)
        lines.append("| %s | %s | %.4f ± %.4f |" % (name, key, m, s))
        return m

    res = {}
    for key in ("auc", "mrr", "ndcg5", "ndcg10"):
        res["a_" + key] = line("(a) EmbSum m,k>1", [t(r)[key] for r in runs["a"]], key)
        res["b_" + key] = line("(b) EmbSum m=k=1", [t(r)[key] for r in runs["b"]], key)
        res["c_" + key] = line("(c) mean-pooled history · item", [r["meanpool_test"][key] for r in runs["a"][:1]], key)
        res["d_" + key] = line("(d) ID DCNv2", [r[key] for r in runs["d"]], key)
        res["e_" + key] = line("(e) DCNv2 + EmbSum score", [r[key] for r in runs["e"]], key)
        res["f_" + key] = line("(f) PyTorch EmbSum", [t(r)[key] for r in runs["f"]], key)
        if runs["sum"]:
            res["s_" + key] = line("(a) + stand-in summary loss", [t(r)[key] for r in runs["sum"]], key)
    for tag in ("a", "b"):
        line("(%s) multi-genre users" % tag, [t(r)["auc_multi"] for r in runs[tag]], "auc")
        line("(%s) other users" % tag, [t(r)["auc_single_genre"] for r in runs[tag]], "auc")
    line("(c) multi-genre users", [runs["a"][0]["meanpool_test"]["auc_multi"]] if runs["a"] else [], "auc")
    line("(d) new items (pooled)", [r["new_item_auc"] for r in runs["d"]], "auc")
    line("(e) new items (pooled)", [r["new_item_auc"] for r in runs["e"]], "auc")
    line("(d) pooled", [r["pooled_auc"] for r in runs["d"]], "auc")
    line("(e) pooled", [r["pooled_auc"] for r in runs["e"]], "auc")
    print("\n".join(lines))
    n_multi = runs["a"][0]["test"]["multi_genre"] if runs["a"] else 0
    print("test impressions: %d (multi-genre users: %d)" % (runs["a"][0]["test"]["impressions"] if runs["a"] else 0,
                                                           n_multi))
    diffs = [abs(t(a)["auc"] - t(f)["auc"]) for a, f in zip(runs["a"], runs["f"])]
    res["torch_auc_diff"] = abs(res["a_auc"] - res["f_auc"]) if runs["f"] else float("nan")
    print("per-seed |C - torch| test AUC: %s" % ", ".join("%.4f" % x for x in diffs))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"summaries": cmd_summaries, "dcn-data": cmd_dcn_data, "dcn-metrics": cmd_dcn_metrics,
     "report": cmd_report}[cmd](*args)
