#!/usr/bin/env python3
"""bench/cetnet_report.py — configs and tables for bench/bench_cetnet.sh (CETNet, issue 7).

    python3 bench/cetnet_report.py derive --config ENSEMBLE.json --out DIR [--pair dnn,dcnv2]
                                          [--check NAME=SINGLE.json ...]
    python3 bench/cetnet_report.py fusecheck --ensemble-scores F --member NAME=F ... --tau T --out J
    python3 bench/cetnet_report.py report --out OUT

derive: from one ensemble config (the single source of every hyper-parameter)
writes, into DIR:
  <member>.json       each member alone: the ensemble's features and train
                      block, the member's tower (and dim), no "ensemble"
  cet_conf.json       the ensemble with confidence fusion (its own lambda)
  cet_mean.json       the same with mean fusion
  cet_nocollab.json   confidence fusion, lambda = 0 (no pull toward the fused
                      prediction; members still get their own label loss and
                      the fused loss's gradient)
  cet_indep.json      lambda = 0 and w_fused = 0: members trained independently
                      in one run (only early stopping looks at the fused AUC)
  cet_tau01.json      confidence fusion with tau = 0.1 instead of the config's
  cet2_half.json      the two --pair members, each with embedding dim d/2
  cet2_full.json      the two --pair members with dim d (reference)
  <member>_half.json  each --pair member alone with dim d/2 (reference)
--check NAME=FILE fails unless FILE (e.g. configs/movielens_dnn.json) equals the
derived NAME.json except for "name" and "train.threads", so the members-alone
runs and the ensemble runs share their hyper-parameters.

fusecheck: recomputes the confidence fusion of papers.md §6.4 in Python from
the member pCTRs (`rank score` on each member folder of an ensemble bundle)
and compares it with the ensemble's pCTR from `rank score`; writes max |diff|
and how far the fusion weights are from uniform (mean and max of the largest
weight per row) to J.

report: reads OUT/runs/<ds>/<variant>/f<fold>-s<seed>.json (metrics JSON of
`rank train`), OUT/score.tsv (variant, repeat, rows/s of `rank score`) and
OUT/configs/<ds>/*.json; prints the tables (markdown) and, last, one line
  bench-cetnet: ml_auc_best_member=X ml_auc_fused=X ml_auc_mean_fusion=X
                criteo_auc_best_member=X criteo_auc_fused=X avazu_auc_best_member=X avazu_auc_fused=X
Means and sample standard deviations are over every run of a variant (3 seeds
on MovieLens; 5 folds x 3 seeds on Criteo/Avazu). A difference is judged only
when |difference| > the larger of the two variants' std; the std of the paired
per-run difference (same fold and seed) is shown beside it.
"""
import argparse
import copy
import glob
import json
import math
import os
import statistics as st
import sys

MEMBERS = ("dnn", "dcnv2", "deepfm")


def load(path):
    with open(path) as f:
        return json.load(f)


def dump(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def sparse_dim(cfg):
    dims = {f["dim"] for f in cfg["features"] if f.get("kind") == "sparse"}
    if len(dims) != 1:
        sys.exit("cetnet_report: the sparse features have dims %s; expected one" % sorted(dims))
    return dims.pop()


def single(ens, member, dim=None):
    c = copy.deepcopy(ens)
    e = c.pop("ensemble")
    m = next((m for m in e["members"] if m["name"] == member), None)
    if m is None:
        sys.exit("cetnet_report: no member %r in the ensemble" % member)
    c["tower"] = copy.deepcopy(m["tower"])
    d = dim or m.get("dim")
    if d:
        for f in c["features"]:
            if f.get("kind") == "sparse":
                f["dim"] = d
    c["name"] = "%s-%s%s" % (ens.get("name", "model"), member, "-d%d" % d if d else "")
    return c


def cmd_derive(a):
    ens = load(a.config)
    if "ensemble" not in ens:
        sys.exit("cetnet_report: %s has no ensemble block" % a.config)
    os.makedirs(a.out, exist_ok=True)
    d = sparse_dim(ens)
    names = [m["name"] for m in ens["ensemble"]["members"]]
    for n in names:
        dump(single(ens, n), os.path.join(a.out, n + ".json"))
    variants = {"cet_conf": {"fusion": "confidence"}, "cet_mean": {"fusion": "mean"},
                "cet_nocollab": {"fusion": "confidence", "lambda": 0.0},
                "cet_indep": {"fusion": "confidence", "lambda": 0.0, "w_fused": 0.0},
                "cet_tau01": {"fusion": "confidence", "tau": 0.1}}
    for v, upd in variants.items():
        c = copy.deepcopy(ens)
        c["ensemble"].update(upd)
        c["name"] = "%s-%s" % (ens.get("name", "model"), v)
        dump(c, os.path.join(a.out, v + ".json"))
    if a.pair:
        pair = a.pair.split(",")
        if d % 2:
            sys.exit("cetnet_report: dim %d is odd; cannot halve it" % d)
        for tag, dim in (("half", d // 2), ("full", d)):
            c = copy.deepcopy(ens)
            ms = []
            for p in pair:
                m = copy.deepcopy(next((m for m in ens["ensemble"]["members"] if m["name"] == p), None))
                if m is None:
                    sys.exit("cetnet_report: --pair: no member %r" % p)
                m["dim"] = dim
                ms.append(m)
            c["ensemble"]["members"] = ms
            c["name"] = "%s-cet2-d%d" % (ens.get("name", "model"), dim)
            dump(c, os.path.join(a.out, "cet2_%s.json" % tag))
        for p in pair:
            dump(single(ens, p, d // 2), os.path.join(a.out, p + "_half.json"))
    for chk in a.check or []:
        n, path = chk.split("=", 1)
        want, got = load(os.path.join(a.out, n + ".json")), load(path)
        for c in (want, got):
            c.pop("name", None)
            c.get("train", {}).pop("threads", None)
        if want != got:
            sys.exit("cetnet_report: %s differs from the member %r of %s (hyper-parameters must match)"
                     % (path, n, a.config))
    print("derived %s from %s (dim %d)" % (", ".join(sorted(os.listdir(a.out))), a.config, d))


def read_scores(path):
    with open(path) as f:
        head = f.readline().strip()
        if head != "pctr":
            sys.exit("cetnet_report: %s: expected the header 'pctr', got %r" % (path, head))
        return [float(x) for x in f.read().split()]


def fuse(ps, tau):
    q = [min(max(p, 1e-7), 1 - 1e-7) for p in ps]
    c = [(x * math.log(x) + (1 - x) * math.log(1 - x)) / tau for x in q]
    m = max(c)
    e = [math.exp(a - m) for a in c]
    z = sum(e)
    w = [a / z for a in e]
    return sum(wi * x for wi, x in zip(w, q)), w


def cmd_fusecheck(a):
    ens = read_scores(a.ensemble_scores)
    mem = {}
    for spec in a.member:
        n, path = spec.split("=", 1)
        mem[n] = read_scores(path)
    if any(len(v) != len(ens) for v in mem.values()):
        sys.exit("cetnet_report: fusecheck: row counts differ")
    cols = list(mem.values())
    maxdiff, wmax = 0.0, []
    for i, pe in enumerate(ens):
        p, w = fuse([c[i] for c in cols], a.tau)
        maxdiff = max(maxdiff, abs(p - pe))
        wmax.append(max(w))
    r = {"rows": len(ens), "members": list(mem), "tau": a.tau, "max_abs_diff": maxdiff,
         "mean_max_weight": st.mean(wmax), "max_max_weight": max(wmax), "uniform_weight": 1 / len(cols),
         "member_pearson": {"%s-%s" % (x, y): st.correlation(mem[x], mem[y])
                            for i, x in enumerate(mem) for y in list(mem)[i + 1:]}}
    dump(r, a.out)
    print("fusion check: %d rows, max |rank score - papers.md §6.4 in Python| = %.2e; largest weight per row: "
          "mean %.3f, max %.3f (uniform %.3f)" % (len(ens), maxdiff, r["mean_max_weight"], r["max_max_weight"],
                                                  r["uniform_weight"]))
    if maxdiff > 1e-5:
        sys.exit("cetnet_report: fusecheck: the ensemble's pCTR differs from the fusion of its members' pCTRs")


# ---------------------------------------------------------------- report

def ms(xs):
    return (st.mean(xs), st.stdev(xs) if len(xs) > 1 else 0.0)


def fmt_ms(m, s, d=4):
    return "%.*f ± %.*f" % (d, m, d, s)


class DS:
    def __init__(self, out, name):
        self.name = name
        self.runs = {}  # variant -> {(fold, seed): json}
        for p in sorted(glob.glob(os.path.join(out, "runs", name, "*", "f*-s*.json"))):
            v = os.path.basename(os.path.dirname(p))
            f, s = os.path.basename(p)[:-5].split("-")
            self.runs.setdefault(v, {})[(int(f[1:]), int(s[1:]))] = load(p)
        self.cfgdir = os.path.join(out, "configs", name)

    def has(self, v):
        return bool(self.runs.get(v))

    def vals(self, v, key="auc", member=None, part="test"):
        r = self.runs.get(v, {})
        return {k: (x["members"][member][part][key] if member else x[part][key]) for k, x in r.items()}

    def auc(self, v, member=None):
        x = list(self.vals(v, member=member).values())
        return ms(x) if x else None

    def n_runs(self, v):
        return len(self.runs.get(v, {}))

    def emb_params(self, v):
        p = os.path.join(self.cfgdir, v + ".json")
        if not os.path.exists(p):
            return None
        c = load(p)
        sp = [f for f in c["features"] if f.get("kind") == "sparse"]
        if "ensemble" not in c:
            return sum(f["table_size"] * f["dim"] for f in sp)
        return sum(sum(f["table_size"] * (m.get("dim") or f["dim"]) for f in sp) for m in c["ensemble"]["members"])


def compare(ds, a, b, a_member=None, b_member=None):
    """a - b on test AUC: (diff, threshold, paired mean, paired std, n, verdict)."""
    va, vb = ds.vals(a, member=a_member), ds.vals(b, member=b_member)
    keys = sorted(set(va) & set(vb))
    if not keys:
        return None
    ma, sa = ms([va[k] for k in keys])
    mb, sb = ms([vb[k] for k in keys])
    diff, thr = ma - mb, max(sa, sb)
    pd = [va[k] - vb[k] for k in keys]
    pm, psd = ms(pd)
    wins = sum(x > 0 for x in pd)
    if abs(diff) <= thr:
        verdict = "within std (no call)"
    else:
        verdict = "higher" if diff > 0 else "lower"
    return diff, thr, pm, psd, len(keys), wins, verdict


def cmp_row(label, c):
    if c is None:
        return "| %s | – | – | – | – | – |" % label
    diff, thr, pm, psd, n, wins, verdict = c
    return "| %s | %+.4f | %.4f | %+.4f ± %.4f | %d/%d | %s |" % (label, diff, thr, pm, psd, wins, n, verdict)


CMP_HEAD = ("| comparison (test AUC) | Δ of means | larger std | paired Δ mean ± std | paired runs with Δ > 0 | verdict |\n"
            "|---|---:|---:|---:|---:|---|")


def best_member(ds):
    c = [(ds.auc(m)[0], m) for m in MEMBERS if ds.has(m)]
    return max(c)[1] if c else None


def variant_table(ds, variants, title):
    lines = ["### %s" % title, "",
             "| variant | runs | test AUC | test logloss | best epochs | train ex/s | emb. params |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for v, label in variants:
        if not ds.has(v):
            continue
        r = ds.runs[v]
        a = ds.auc(v)
        ll = ms(list(ds.vals(v, "logloss").values()))
        ep = sorted(x["best_epoch"] for x in r.values())
        eps = st.median(x["train_examples_per_s"] for x in r.values())
        hist = ",".join("%d×%d" % (ep.count(e), e) for e in sorted(set(ep)))
        p = ds.emb_params(v)
        lines.append("| %s | %d | %s | %s | %s | %.0f | %s |" % (label, len(r), fmt_ms(*a), fmt_ms(*ll, d=5), hist, eps,
                                                               "%.2fM" % (p / 1e6) if p else "–"))
    return lines


def inside_table(ds, ens_variants):
    lines = ["| ensemble | " + " | ".join("member %s (inside)" % m for m in MEMBERS) + " | fused | tau |",
             "|---|" + "---:|" * (len(MEMBERS) + 2)]
    for v, label in ens_variants:
        if not ds.has(v):
            continue
        r = ds.runs[v]
        cells = []
        for m in MEMBERS:
            if all(m in x.get("members", {}) for x in r.values()):
                cells.append(fmt_ms(*ds.auc(v, member=m)))
            else:
                cells.append("–")
        tau = st.mean(x.get("tau", 0) for x in r.values())
        lines.append("| %s | %s | %s | %.3f |" % (label, " | ".join(cells), fmt_ms(*ds.auc(v)), tau))
    return lines


def serving_table(out):
    """rows/s of `rank score` per bundle: best of the repeats (least disturbed by
    other load on a shared machine; the ratios use it) and median."""
    p = os.path.join(out, "score.tsv")
    if not os.path.exists(p):
        return [], None
    rps = {}
    with open(p) as f:
        for line in f:
            v, _, r = line.split()
            rps.setdefault(v, []).append(float(r))
    best = {v: max(x) for v, x in rps.items()}
    med = {v: st.median(x) for v, x in rps.items()}
    n = max(len(x) for x in rps.values())
    lines = ["| bundle | rows/s, best of %d | rows/s, median | µs per row (best) | ensemble cost ÷ this bundle's cost |" % n,
             "|---|---:|---:|---:|---:|"]
    ens = best.get("cet_conf")
    for v in ("dnn", "dcnv2", "deepfm", "cet_conf"):
        if v in best:
            lines.append("| %s | %.0f | %.0f | %.1f | %s |" % (v, best[v], med[v], 1e6 / best[v],
                                                              "%.2f" % (best[v] / ens) if ens else "–"))
    summary = None
    if ens and all(m in best for m in MEMBERS):
        sum_rate = 1 / sum(1 / best[m] for m in MEMBERS)
        bm = best_member(DS(out, "ml"))
        summary = {"ensemble": ens, "sum_of_members": sum_rate, "best_member": bm, "best_member_rps": best.get(bm)}
        lines.append("")
        lines.append("Ensemble %.0f rows/s; the three members one after another would give 1 / Σ 1/r_i = %.0f rows/s; "
                     "the best member alone (%s) %.0f rows/s, so the ensemble costs %.2fx it per candidate "
                     "(%.2fx the mean single member)."
                     % (ens, sum_rate, bm, best[bm], best[bm] / ens, st.mean(best[m] for m in MEMBERS) / ens))
    return lines, summary


def cmd_report(a):
    out = a.out
    res = {}
    lines = []
    ml = DS(out, "ml")
    if ml.runs:
        lines += ["## MovieLens (time-ordered split, %s seeds)" % len({s for r in ml.runs.values() for _, s in r}), ""]
        lines += variant_table(ml, [("dnn", "dnn alone (d=16)"), ("dcnv2", "dcnv2 alone (d=16)"),
                                    ("deepfm", "deepfm alone (d=16)"),
                                    ("cet_conf", "CETNet 3 members, confidence, λ=0.5"),
                                    ("cet_mean", "CETNet 3 members, mean fusion, λ=0.5"),
                                    ("cet_nocollab", "CETNet 3 members, confidence, λ=0"),
                                    ("cet_indep", "CETNet 3 members, independent (λ=0, w_fused=0)"),
                                    ("cet_tau01", "CETNet 3 members, confidence τ=0.1, λ=0.5"),
                                    ("cet2_half", "CETNet dnn+dcnv2, d=8 each"),
                                    ("cet2_full", "CETNet dnn+dcnv2, d=16 each"),
                                    ("dnn_half", "dnn alone (d=8)"), ("dcnv2_half", "dcnv2 alone (d=8)")],
                               "Test AUC per variant")
        lines += ["", "Members inside each ensemble (test AUC of each member's own pCTR, same runs):", ""]
        lines += inside_table(ml, [("cet_conf", "confidence λ=0.5"), ("cet_mean", "mean λ=0.5"),
                                   ("cet_nocollab", "confidence λ=0"), ("cet_indep", "independent"),
                                   ("cet_tau01", "confidence τ=0.1")])
        bm = best_member(ml)
        lines += ["", "### Claims (MovieLens)", "", CMP_HEAD]
        if bm:
            lines.append(cmp_row("1. fused (confidence) − best member alone (%s)" % bm, compare(ml, "cet_conf", bm)))
            lines.append(cmp_row("1b. fused (mean) − best member alone (%s)" % bm, compare(ml, "cet_mean", bm)))
            lines.append(cmp_row("1c. fused (confidence) − best member inside it (%s)" % bm,
                                 compare(ml, "cet_conf", "cet_conf", b_member=bm)))
        lines.append(cmp_row("2a. confidence − mean fusion", compare(ml, "cet_conf", "cet_mean")))
        lines.append(cmp_row("2b. confidence λ=0.5 − λ=0 (no collaboration)", compare(ml, "cet_conf", "cet_nocollab")))
        lines.append(cmp_row("2c. confidence λ=0.5 − independent members", compare(ml, "cet_conf", "cet_indep")))
        lines.append(cmp_row("2d. confidence τ=0.1 − mean fusion", compare(ml, "cet_tau01", "cet_mean")))
        lines.append(cmp_row("3. dnn+dcnv2 at d=8 − dcnv2 alone at d=16", compare(ml, "cet2_half", "dcnv2")))
        lines.append(cmp_row("3b. dnn+dcnv2 at d=8 − dnn alone at d=16", compare(ml, "cet2_half", "dnn")))
        lines.append(cmp_row("3c. dnn+dcnv2 at d=8 − dnn+dcnv2 at d=16", compare(ml, "cet2_half", "cet2_full")))
        fc = os.path.join(out, "fusecheck.json")
        if os.path.exists(fc):
            f = load(fc)
            lines += ["", "Fusion check (seed-%s cet_conf bundle, test split): `rank score` of the ensemble vs papers.md §6.4 "
                      "recomputed in Python from its members' pCTRs: max |diff| %.1e over %d rows. Largest fusion weight "
                      "per row: mean %.3f, max %.3f (uniform = %.3f). Pearson correlation of member pCTRs: %s."
                      % (a.serve_seed, f["max_abs_diff"], f["rows"], f["mean_max_weight"], f["max_max_weight"],
                         f["uniform_weight"], ", ".join("%s %.3f" % kv for kv in f["member_pearson"].items()))]
        sv, summ = serving_table(out)
        if sv:
            lines += ["", "### Serving cost (`rank score` on the MovieLens test split, %s)" % "same machine, same run", ""]
            lines += sv
        res["ml_auc_best_member"] = ml.auc(bm)[0] if bm else None
        res["ml_auc_fused"] = ml.auc("cet_conf")[0] if ml.has("cet_conf") else None
        res["ml_auc_mean_fusion"] = ml.auc("cet_mean")[0] if ml.has("cet_mean") else None
    for name, title in (("criteo", "Criteo sample"), ("avazu", "Avazu sample")):
        ds = DS(out, name)
        res["%s_auc_best_member" % name] = res["%s_auc_fused" % name] = None
        if not ds.runs:
            lines += ["", "## %s: skipped (no runs)" % title]
            continue
        folds = len({f for r in ds.runs.values() for f, _ in r})
        seeds = len({s for r in ds.runs.values() for _, s in r})
        lines += ["", "## %s (%d-fold CV × %d seeds)" % (title, folds, seeds), ""]
        lines += variant_table(ds, [("dnn", "dnn alone"), ("dcnv2", "dcnv2 alone"), ("deepfm", "deepfm alone"),
                                    ("cet_conf", "CETNet confidence, λ=0.5"), ("cet_mean", "CETNet mean fusion, λ=0.5"),
                                    ("cet_nocollab", "CETNet confidence, λ=0")], "Test AUC per variant")
        lines += ["", "Members inside each ensemble:", ""]
        lines += inside_table(ds, [("cet_conf", "confidence λ=0.5"), ("cet_mean", "mean λ=0.5"),
                                   ("cet_nocollab", "confidence λ=0")])
        bm = best_member(ds)
        lines += ["", "### Claims (%s)" % title, "", CMP_HEAD]
        if bm:
            lines.append(cmp_row("1. fused (confidence) − best member alone (%s)" % bm, compare(ds, "cet_conf", bm)))
            lines.append(cmp_row("1b. fused (mean) − best member alone (%s)" % bm, compare(ds, "cet_mean", bm)))
            bi = max((ds.auc("cet_conf", member=m)[0], m) for m in MEMBERS)[1] if ds.has("cet_conf") else bm
            lines.append(cmp_row("1c. fused (confidence) − best member inside it (%s)" % bi,
                                 compare(ds, "cet_conf", "cet_conf", b_member=bi)))
        lines.append(cmp_row("2a. confidence − mean fusion", compare(ds, "cet_conf", "cet_mean")))
        lines.append(cmp_row("2b. confidence λ=0.5 − λ=0", compare(ds, "cet_conf", "cet_nocollab")))
        res["%s_auc_best_member" % name] = ds.auc(bm)[0] if bm else None
        res["%s_auc_fused" % name] = ds.auc("cet_conf")[0] if ds.has("cet_conf") else None
    lines += ["", "(mean ± sample std over runs; 'best member' = the member alone with the highest mean test AUC, "
              "which favours the baseline; verdicts call a difference only when |Δ of means| > the larger std)"]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    print(text)
    f4 = lambda x: "skipped" if x is None else "%.4f" % x
    keys = ("ml_auc_best_member", "ml_auc_fused", "ml_auc_mean_fusion", "criteo_auc_best_member", "criteo_auc_fused",
            "avazu_auc_best_member", "avazu_auc_fused")
    print("bench-cetnet: " + " ".join("%s=%s" % (k, f4(res.get(k))) for k in keys))


def main():
    ap = argparse.ArgumentParser(description="CETNet bench: configs and tables")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("derive")
    d.add_argument("--config", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--pair", default=None, help="two members for the embedding-size comparison, e.g. dnn,dcnv2")
    d.add_argument("--check", action="append", help="NAME=FILE: FILE must equal the derived NAME.json")
    fc = sub.add_parser("fusecheck")
    fc.add_argument("--ensemble-scores", required=True)
    fc.add_argument("--member", action="append", required=True)
    fc.add_argument("--tau", type=float, default=1.0)
    fc.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("--out", required=True)
    r.add_argument("--serve-seed", default="1", help="the seed of the bundles used for the serving and fusion checks")
    a = ap.parse_args()
    {"derive": cmd_derive, "fusecheck": cmd_fusecheck, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
