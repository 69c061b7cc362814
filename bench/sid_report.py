"""bench-sid helper (bench/bench_sid.sh): A/A copies, per-run configs, report.

  prepare --out DIR --seed S     emb_all.safetensors (movies + A/A copies) and aa.tsv
  config  --out DIR --param P --seed S   configs/movielens_sid.json for one run (stdout);
                                 P = a parameterization of movie_id, or prefix_hist
                                 (prefix_ngram for movie_id and for the history)
  select  --out DIR --seeds "1 2 3" --sweep "K:L ..."   K:L of the lowest valid NE (prefix_ngram)
  report  --out DIR --seeds "1 2 3" --params "..." --sweep "K:L ..." --seconds N

Segments (papers.md §1(f)): movies sorted by training impressions (rows of
train.tsv), head = those covering the first 25% of cumulative impressions,
torso up to 75%, tail the rest (movies absent from train.tsv included);
"new" = movies whose first row is in the test split (absent from train and
valid). NE = mean BCE (p clamped to [1e-7, 1-1e-7]) / entropy of the
segment's base rate (papers.md §1(b) Eq. 1); AUC with ties = half credit.
A/A (Eq. 4 uses AAR; the issue asks mean |p(a1) - p(a2)|, reported both):
1% of the movies that occur in test.tsv, at least 1, are copied under
id + 10,000,000 with identical embeddings; aa.tsv holds each of their test
rows followed by the same row with the copy's id.
"""
import argparse
import csv
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "ref"))
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

AA_OFFSET = 10_000_000
RH_TAG, SID_TAG = "hash", "prefix_ngram"


def read_tsv(path):
    with open(path) as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[0], rows[1:]


def prepare(a):
    t, meta = read_safetensors(os.path.join(a.out, "emb.safetensors"))
    emb, ids = t["embeddings"], t["ids"]
    hdr, test = read_tsv(os.path.join(a.out, "ml", "test.tsv"))
    mi = hdr.index("movie_id")
    test_movies = sorted({int(r[mi]) for r in test})
    rng = np.random.default_rng(a.seed)
    k = max(1, round(0.01 * len(test_movies)))
    dup = sorted(rng.choice(test_movies, size=k, replace=False).tolist())
    pos = {int(x): i for i, x in enumerate(ids)}
    idx = [pos[d] for d in dup]
    all_emb = np.concatenate([emb, emb[idx]]).astype(np.float32)
    all_ids = np.concatenate([ids, np.array(dup, dtype=np.int64) + AA_OFFSET]).astype(np.int64)
    meta = {k: v for k, v in meta.items() if k not in ("rankd.data_xxh64", "rankd.xxh64")}  # the C writer's checksums of the old file
    meta["aa_copies"] = str(k)
    write_safetensors(os.path.join(a.out, "emb_all.safetensors"), {"embeddings": all_emb, "ids": all_ids}, meta)
    dset = set(dup)
    with open(os.path.join(a.out, "aa.tsv"), "w") as f:
        f.write("\t".join(hdr) + "\n")
        n = 0
        for r in test:
            if int(r[mi]) in dset:
                f.write("\t".join(r) + "\n")
                c = list(r)
                c[mi] = str(int(r[mi]) + AA_OFFSET)
                f.write("\t".join(c) + "\n")
                n += 1
    print(f"prepare: {len(ids)} movies, {k} A/A copies of test movies, {n} A/A row pairs")


def config(a):
    here = os.path.join(os.path.dirname(__file__), "..")
    with open(os.path.join(here, "configs", "movielens_sid.json")) as f:
        cfg = json.load(f)
    n_records = len(read_safetensors(os.path.join(a.out, "emb_all.safetensors"))[0]["ids"])
    n_movies = len(read_safetensors(os.path.join(a.out, "emb.safetensors"))[0]["ids"])
    item_param = "prefix_ngram" if a.param == "prefix_hist" else a.param
    for ft in cfg["features"]:
        if ft["name"] == "history" and a.param == "prefix_hist":
            # the user history through the history items' semantic IDs (papers.md §1(g) Table 6)
            ft["param"] = "prefix_ngram"
            ft["sid"] = os.path.join(a.out, "items.sid")
        if ft["name"] != "movie_id":
            continue
        ft["param"] = item_param
        ft["sid"] = a.sid or os.path.join(a.out, "items.sid")
        if item_param == "individual":
            ft["table_size"] = n_records + 1
        else:
            ft["table_size"] = max(1, n_movies // 3)  # collision factor 3 (papers.md §1(c))
        if item_param == "hash":
            del ft["param"]
            del ft["sid"]
    cfg["train"]["seed"] = a.seed
    cfg["name"] = f"movielens-sid-{a.param}"
    json.dump(cfg, sys.stdout, indent=1)


def metrics(p, y):
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    y = y.astype(np.float64)
    n = len(y)
    if n == 0:
        return float("nan"), float("nan"), 0
    ll = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    br = y.mean()
    ne = ll / (-(br * math.log(br) + (1 - br) * math.log(1 - br))) if 0 < br < 1 else float("nan")
    npos = y.sum()
    if npos == 0 or npos == n:
        return ne, float("nan"), n
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    ranks = np.empty(n)
    i = 0
    while i < n:  # average ranks over ties
        j = i
        while j + 1 < n and ps[j + 1] == ps[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    auc = (ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * (n - npos))
    return ne, auc, n


def segments(out):
    hdr, train = read_tsv(os.path.join(out, "ml", "train.tsv"))
    mi = hdr.index("movie_id")
    _, valid = read_tsv(os.path.join(out, "ml", "valid.tsv"))
    cnt = {}
    for r in train:
        cnt[r[mi]] = cnt.get(r[mi], 0) + 1
    seen = set(cnt) | {r[mi] for r in valid}
    items = sorted(cnt.items(), key=lambda kv: (-kv[1], int(kv[0])))
    total = sum(cnt.values())
    seg, cum = {}, 0
    for m, c in items:
        share_before = cum / total
        seg[m] = "head" if share_before < 0.25 else "torso" if share_before < 0.75 else "tail"
        cum += c
    return seg, seen, mi


def neighbour_check(out, groups, y, movie):
    """How much a test row's label is predicted by the training positive rate
    of the movies that share its first j codes (smoothed toward the global
    rate with 5 pseudo-rows), per segment: the signal a semantic-ID
    parameterization can transfer to tail and new movies. Training rows only."""
    t, _ = read_safetensors(os.path.join(out, "items.sid"))
    code = {str(int(i)): tuple(int(x) for x in c) for i, c in zip(t["ids"], t["codes"])}
    L = t["codes"].shape[1]
    hdr, train = read_tsv(os.path.join(out, "ml", "train.tsv"))
    mi, li = hdr.index("movie_id"), hdr.index("label")
    base = np.mean([float(r[li]) for r in train])
    rows = ["| prefix length j | " + " | ".join(f"{g}: corr / NE" for g in ("all", "tail", "new")) + " |",
            "| --- | --- | --- | --- |"]
    for j in range(1, L + 1):
        agg = {}
        for r in train:
            k = code[r[mi]][:j]
            s = agg.setdefault(k, [0.0, 0])
            s[0] += float(r[li])
            s[1] += 1
        pred = np.array([(agg[k][0] + 5 * base) / (agg[k][1] + 5) if (k := code[m][:j]) in agg else base
                         for m in movie])
        cells = []
        for g in ("all", "tail", "new"):
            mask = groups[g]
            ne, _, _ = metrics(pred[mask], y[mask])
            cells.append(f"{np.corrcoef(pred[mask], y[mask])[0, 1]:+.3f} / {ne:.4f}")
        rows.append(f"| {j} | " + " | ".join(cells) + " |")
    return ["Content-neighbour signal (train positive rate of the movies sharing the first j codes "
            "as the prediction):", ""] + rows


def valid_ne(a, name, seeds):
    hdr, valid = read_tsv(os.path.join(a.out, "ml", "valid.tsv"))
    y = np.array([float(r[hdr.index("label")]) for r in valid])
    v = []
    for s in seeds:
        path = os.path.join(a.out, "runs", f"{name}_s{s}.valid.tsv")
        if os.path.exists(path):
            v.append(metrics(np.loadtxt(path, skiprows=1, ndmin=1), y)[0])
    return (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) if v else (float("nan"),) * 2


def select(a):
    """Print K:L of the prefix_ngram run with the lowest mean valid NE."""
    best = None
    for kl in a.sweep.split():
        k, l = kl.split(":")
        name = "prefix_ngram" if not os.path.exists(
            os.path.join(a.out, "runs", f"sweep_prefix_ngram_K{k}_L{l}_s{a.seeds.split()[0]}.valid.tsv")) \
            else f"sweep_prefix_ngram_K{k}_L{l}"
        ne = valid_ne(a, name, a.seeds.split())[0]
        if not math.isnan(ne) and (best is None or ne < best[0]):
            best = (ne, kl)
    print(best[1])


def sweep_table(a, params, seeds):
    """Valid-split NE of prefix_ngram (and fourgram / all_bigrams at 32:4) by
    codebook size K and depth L, against hash and the main K = 32, L = 3 runs."""
    def ne_of(name):
        return valid_ne(a, name, seeds)

    base = ne_of("hash")[0]
    rows = ["Codebook size and depth (papers.md Table 2), NE on the VALID split (mean ± std over seeds):", "",
            "| param | K | L | G | valid NE | gain vs hash |", "| --- | --- | --- | --- | --- | --- |"]
    cells = [("hash", "-", "-", 1, "hash")]
    for p in ("all_bigrams", "trigram", "prefix_ngram"):
        if p in params:
            cells.append((p, 32, 3, {"all_bigrams": 2, "trigram": 1, "prefix_ngram": 3}[p], p))
    for kl in a.sweep.split():
        k, l = (int(x) for x in kl.split(":"))
        ps = ["prefix_ngram"] + (["fourgram", "all_bigrams"] if (k, l) == (32, 4) else [])
        for p in ps:
            g = {"prefix_ngram": l, "fourgram": 1, "all_bigrams": l - 1}[p]
            cells.append((p, k, l, g, f"sweep_{p}_K{k}_L{l}"))
    for p, k, l, g, name in cells:
        m, sd = ne_of(name)
        rows.append(f"| {p} | {k} | {l} | {g} | {m:.5f} ± {sd:.5f} | {100 * (m - base) / base:+.2f}% |")
    return rows


def report(a):
    seg, seen, mi = segments(a.out)
    hdr, test = read_tsv(os.path.join(a.out, "ml", "test.tsv"))
    y = np.array([float(r[hdr.index("label")]) for r in test])
    movie = [r[mi] for r in test]
    groups = {"all": np.ones(len(test), bool)}
    for g in ("head", "torso", "tail"):
        groups[g] = np.array([seg.get(m, "tail") == g for m in movie])
    groups["new"] = np.array([m not in seen for m in movie])
    params = a.params.split()
    seeds = a.seeds.split()
    res = {}
    aa = {}
    for p in params:
        for s in seeds:
            pr = np.loadtxt(os.path.join(a.out, "runs", f"{p}_s{s}.test.tsv"), skiprows=1, ndmin=1)
            for g, mask in groups.items():
                ne, auc, n = metrics(pr[mask], y[mask])
                res.setdefault((p, g), []).append((ne, auc, n))
            q = np.loadtxt(os.path.join(a.out, "runs", f"{p}_s{s}.aa.tsv"), skiprows=1, ndmin=1)
            p1, p2 = q[0::2], q[1::2]
            aar = np.mean(2 * np.abs(p1 - p2) / (p1 + p2 + 1e-12))
            aa.setdefault(p, []).append((float(np.mean(np.abs(p1 - p2))), float(aar), len(p1)))

    def ms(v):
        v = [x for x in v if not math.isnan(x)]
        if not v:
            return float("nan"), float("nan")
        return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

    lines = []
    lines.append(f"Rows per segment (test.tsv): " + ", ".join(
        f"{g} {int(m.sum())}" for g, m in groups.items()))
    lines.append("")
    lines.append("| param | segment | NE (mean ± std) | NE gain vs hash | AUC (mean ± std) |")
    lines.append("| --- | --- | --- | --- | --- |")
    summary = {}
    for g in groups:
        base = ms([r[0] for r in res[(RH_TAG, g)]])[0] if RH_TAG in params else float("nan")
        for p in params:
            ne_m, ne_s = ms([r[0] for r in res[(p, g)]])
            au_m, au_s = ms([r[1] for r in res[(p, g)]])
            gain = 100 * (ne_m - base) / base if base == base else float("nan")
            summary[(p, g)] = (ne_m, au_m)
            lines.append(f"| {p} | {g} | {ne_m:.5f} ± {ne_s:.5f} | {gain:+.2f}% | {au_m:.4f} ± {au_s:.4f} |")
    lines.append("")
    lines.append("| param | A/A mean abs diff | A/A AAR (Eq. 4) | pairs |")
    lines.append("| --- | --- | --- | --- |")
    for p in params:
        d = ms([x[0] for x in aa[p]])
        r = ms([x[1] for x in aa[p]])
        lines.append(f"| {p} | {d[0]:.3g} ± {d[1]:.2g} | {r[0]:.3g} | {aa[p][0][2]} |")
    lines.append("")
    lines += neighbour_check(a.out, groups, y, movie)
    if a.sweep:
        lines.append("")
        lines += sweep_table(a, params, seeds)
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write(text + "\n")

    def g(p, seg_, k):
        return summary.get((p, seg_), (float("nan"),) * 2)[k]

    aa_sid = ms([x[0] for x in aa.get(SID_TAG, [(float("nan"),)])])[0]
    aa_rh = ms([x[0] for x in aa.get(RH_TAG, [(float("nan"),)])])[0]
    print(f"bench-sid: ne_all_rh={g(RH_TAG, 'all', 0):.5f} ne_all_prefix={g(SID_TAG, 'all', 0):.5f} "
          f"ne_new_rh={g(RH_TAG, 'new', 0):.5f} ne_new_prefix={g(SID_TAG, 'new', 0):.5f} "
          f"auc_new_rh={g(RH_TAG, 'new', 1):.4f} auc_new_prefix={g(SID_TAG, 'new', 1):.4f} "
          f"aa_diff_sid={aa_sid:.3g} aa_diff_rh={aa_rh:.3g}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["prepare", "config", "report", "select"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--param", default="hash")
    ap.add_argument("--seeds", default="1 2 3")
    ap.add_argument("--params", default="")
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("--sid", default="")
    ap.add_argument("--sweep", default="")
    a = ap.parse_args()
    {"prepare": prepare, "config": config, "report": report, "select": select}[a.cmd](a)
    if a.cmd == "report" and a.seconds:
        print(f"(bench-sid took {a.seconds} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
