#!/usr/bin/python3
"""bench-embsum's MIND run (issue 12): the EmbSum pipeline on MIND's own
format, read from ../shared/data/mind_small_sample (never copied into the
repository).

  embsum_mind.py --rank BUILD/bin/rank --mind DIR --encoder DIR --out DIR [--seeds "1 2 3"]

Reads MIND's behaviors.tsv (impression id, user, time, clicked history,
impressions "N123-1 N456-0") and news.tsv (id, category, subcategory, title,
abstract, ...; every news file of DIR: the sample ships news_train_small.tsv
and kim_docs.tsv), and writes the layout `rank embsum train` reads
(rank/embsum.h): items.csv (id = the news number, title, genres =
category|subcategory, tags = the abstract) and train.tsv (label, timestamp,
user_id, movie_id). Only news with text can be encoded, so history items and
candidates without a news row are dropped (their counts are reported). Each
user's events are their history clicks (label 1, in history order, before
the impression) then the impression's candidates (their labels) at its time.
The protocol is then rank/embsum_data.c's: per-user time fractions (train
targets [40%, 80%), valid [80%, 90%), test the rest), evaluation impressions
= a user's test positives + 4 sampled unseen news each (not MIND's own shown
negatives). Runs (a) m = k = 4, (b) m = k = 1 for each seed and reports (c)
the untrained mean-pool baseline; writes OUT/mind.json and prints a table.
"""
import argparse
import datetime
import glob
import json
import os
import subprocess
import sys


def read_news(d):
    news = {}
    for p in sorted(glob.glob(os.path.join(d, "*.tsv"))):
        with open(p, encoding="utf-8") as f:
            first = f.readline().split("\t")
            if len(first) < 5 or not first[0].startswith("N") or first[0][1:].isdigit() is False:
                continue  # not a news file (behaviors have an impression number first)
            f.seek(0)
            for line in f:
                c = line.rstrip("\n").split("\t")
                if len(c) >= 5 and c[0][1:].isdigit():
                    news.setdefault(int(c[0][1:]), (c[3], c[1] + "|" + c[2], c[4]))
    return news


def q(s):
    return '"' + s.replace('"', "'") + '"'


def convert(mind, out):
    news = read_news(mind)
    events, stats = {}, {"impressions": 0, "hist": 0, "hist_kept": 0, "cand": 0, "cand_kept": 0, "pos_kept": 0}
    with open(os.path.join(mind, "behaviors_train_small.tsv"), encoding="utf-8") as f:
        for line in f:
            c = line.rstrip("\n").split("\t")
            if len(c) < 5:
                continue
            stats["impressions"] += 1
            user = int(c[1][1:])
            t = int(datetime.datetime.strptime(c[2], "%m/%d/%Y %I:%M:%S %p").timestamp())
            hist = [int(x[1:]) for x in c[3].split()]
            cands = [(int(x.split("-")[0][1:]), int(x.split("-")[1])) for x in c[4].split()]
            ev = events.setdefault(user, [])
            stats["hist"] += len(hist)
            stats["cand"] += len(cands)
            seen = {i for _, i, _ in ev}
            for k, i in enumerate(hist):  # the history: clicks before the impression, oldest first
                if i in news and i not in seen:
                    ev.append((t - len(hist) + k, i, 1))
                    seen.add(i)
                    stats["hist_kept"] += 1
            for i, lab in cands:
                if i in news:
                    ev.append((t, i, lab))
                    stats["cand_kept"] += 1
                    stats["pos_kept"] += lab
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "items.csv"), "w", encoding="utf-8") as f:
        f.write('"movieId","title","genres","tags"\n')
        for i in sorted(news):
            t, g, a = news[i]
            f.write("%s,%s,%s,%s\n" % (q(str(i)), q(t), q(g), q(a)))
    with open(os.path.join(out, "train.tsv"), "w") as f:
        f.write("label\ttimestamp\tuser_id\tmovie_id\n")
        for u in sorted(events):
            for t, i, lab in events[u]:
                f.write("%d\t%d\t%d\t%d\n" % (lab, t, u, i))
    for n in ("valid.tsv", "test.tsv"):
        with open(os.path.join(out, n), "w") as f:
            f.write("label\ttimestamp\tuser_id\tmovie_id\n")
    stats["news_with_text"] = len(news)
    stats["users"] = len(events)
    stats["users_3plus_events"] = sum(len(e) >= 3 for e in events.values())
    return stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", required=True)
    ap.add_argument("--mind", required=True)
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="1 2 3")
    a = ap.parse_args()
    stats = convert(a.mind, os.path.join(a.out, "data"))
    print("[mind] %(impressions)d impressions, %(users)d users, %(news_with_text)d news with text; history clicks kept "
          "%(hist_kept)d of %(hist)d, candidates kept %(cand_kept)d of %(cand)d (%(pos_kept)d clicked); users with >= 3 "
          "events: %(users_3plus_events)d" % stats)
    res = {"stats": stats, "runs": {}}
    for s in a.seeds.split():
        for name, extra in (("a", []), ("b", ["--m", "1", "--k", "1"])):
            rep = os.path.join(a.out, "%s_seed%s.json" % (name, s))
            cmd = [a.rank, "embsum", "train", "--data", os.path.join(a.out, "data"), "--encoder", a.encoder,
                   "--cache", os.path.join(a.out, "cache"), "--out", os.path.join(a.out, "%s%s" % (name, s)),
                   "--seed", s, "--force", "--quiet", "--report", rep] + extra
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                print("[mind] %s seed %s: rank embsum train failed: %s" % (name, s, (r.stderr or r.stdout)[-600:]))
                res["runs"].setdefault(name, []).append({"error": (r.stderr or r.stdout)[-600:]})
                continue
            res["runs"].setdefault(name, []).append(json.load(open(rep)))
    keys = ("auc", "mrr", "ndcg5", "ndcg10")

    def mean(rows, k, part="test"):
        v = [r[part][k] for r in rows if part in r and r[part].get(k) == r[part].get(k)]
        return sum(v) / len(v) if v else float("nan")
    table = {}
    for name, label in (("a", "(a) EmbSum m = k = 4"), ("b", "(b) EmbSum m = k = 1")):
        rows = [r for r in res["runs"].get(name, []) if "test" in r]
        table[name] = {k: mean(rows, k) for k in keys}
        n_imp = rows[0]["test"].get("impressions", 0) if rows else 0
        print("[mind] %s: test impressions %d, AUC %.4f MRR %.4f nDCG@5 %.4f nDCG@10 %.4f (mean of %d seeds)" % (
            label, n_imp, *[table[name][k] for k in keys], len(rows)))
    rows = [r for r in res["runs"].get("a", []) if "meanpool_test" in r][:1]
    table["c"] = {k: mean(rows, k, "meanpool_test") for k in keys}
    print("[mind] (c) untrained mean-pool: AUC %.4f MRR %.4f nDCG@5 %.4f nDCG@10 %.4f" % tuple(table["c"][k] for k in keys))
    res["table"] = table
    json.dump(res, open(os.path.join(a.out, "mind.json"), "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
