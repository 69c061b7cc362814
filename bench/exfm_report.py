#!/usr/bin/env python3
"""Tables of bench/bench_exfm.sh: reads RUNS/*.json of `rank distill --json`.

  exfm_report.py RUNS SUMMARY.md [--stale K] [--bias TEXT]

Per teacher setting (fresh, stale, biased, small) and student mode: NE and AUC
after the warm-up, mean over verticals, then mean ± sample std over seeds; NE
gain in % vs the student alone of the same seed and vertical (positive = lower
NE = better), averaged the same way; the teacher's own NE on the verticals.
Per-vertical NE gains for the fresh and biased teachers. Prints everything and
ends with the line
  bench-exfm: ne_student=X ne_kd=X ne_ah=X ne_ah_sa=X ne_ah_sa_stale=X ne_ah_stale=X
"""
import argparse
import glob
import json
import os
import re
import statistics as st


def ms(xs):
    m = st.mean(xs)
    return m, (st.stdev(xs) if len(xs) > 1 else 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("summary")
    ap.add_argument("--stale", default="?")
    ap.add_argument("--bias", default="?")
    a = ap.parse_args()
    runs = {}  # (setting, seed) -> json
    for p in sorted(glob.glob(os.path.join(a.runs, "*.json"))):
        m = re.match(r"(\w+)-s(\d+)\.json$", os.path.basename(p))
        runs[(m.group(1), int(m.group(2)))] = json.load(open(p))
    seeds = sorted({s for (_, s) in runs})
    # student alone: from the fresh run (it never reads the teacher)
    base = {}
    for s in seeds:
        for r in runs[("fresh", s)]["results"]:
            if r["mode"] == "none":
                base[(s, r["vertical"])] = r["ne"]
    verticals = sorted({v for (_, v) in base})
    lines = []
    out = lines.append
    out(f"seeds {seeds}; verticals {verticals}; chunks {runs[('fresh', seeds[0])]['chunks']}, "
        f"warm-up {runs[('fresh', seeds[0])]['warmup']}; stale = {a.stale} chunks; biased = {a.bias}")
    out("")
    out("| teacher | student | NE (mean ± std over seeds) | NE gain vs alone | AUC | teacher NE |")
    out("|---|---|---|---|---|---|")
    key = {}
    settings = ["fresh", "stale", "biased", "biasedsub", "small", "reimpl"]
    labels = {"fresh": "big, fresh", "stale": f"big, stale k={a.stale}", "biased": f"big, biased ({a.bias} repeated)",
              "biasedsub": f"big, biased (others 1/{a.bias.split('x')[-1]})",
              "small": "small, fresh", "reimpl": "big, fresh; w=10 beta=20"}
    for setting in settings:
        if (setting, seeds[0]) not in runs:
            continue
        modes = [r["mode"] for r in runs[(setting, seeds[0])]["results"]]
        modes = list(dict.fromkeys(modes))
        tne = [st.mean(t["ne"] for t in runs[(setting, s)]["teacher"]) for s in seeds]
        for mode in modes:
            ne_s, auc_s, gain_s = [], [], []
            for s in seeds:
                rs = [r for r in runs[(setting, s)]["results"] if r["mode"] == mode]
                ne_s.append(st.mean(r["ne"] for r in rs))
                auc_s.append(st.mean(r["auc"] for r in rs))
                gain_s.append(st.mean(100 * (base[(s, r["vertical"])] - r["ne"]) / base[(s, r["vertical"])] for r in rs))
            key[(setting, mode)] = st.mean(ne_s)
            m, sd = ms(ne_s)
            g, gsd = ms(gain_s)
            am, asd = ms(auc_s)
            tm, tsd = ms(tne)
            out(f"| {labels[setting]} | {mode} | {m:.5f} ± {sd:.5f} | {g:+.3f}% ± {gsd:.3f} | {am:.5f} ± {asd:.5f} | "
                f"{tm:.5f} |")
    out("")
    out("Per-vertical NE gain vs the student alone (mean over seeds):")
    out("")
    out("| teacher | student | " + " | ".join(verticals) + " |")
    out("|---|---|" + "---|" * len(verticals))
    for setting in settings:
        if (setting, seeds[0]) not in runs:
            continue
        modes = list(dict.fromkeys(r["mode"] for r in runs[(setting, seeds[0])]["results"]))
        for mode in modes:
            if mode == "none":
                continue
            cells = []
            for v in verticals:
                gs = [100 * (base[(s, v)] - r["ne"]) / base[(s, v)] for s in seeds
                      for r in runs[(setting, s)]["results"] if r["mode"] == mode and r["vertical"] == v]
                cells.append(f"{st.mean(gs):+.3f}%")
            out(f"| {labels[setting]} | {mode} | " + " | ".join(cells) + " |")
    out("")
    out("Teacher NE / AUC per vertical (its logged predictions after the warm-up, mean over seeds):")
    out("")
    out("| teacher | " + " | ".join(verticals) + " |")
    out("|---|" + "---|" * len(verticals))
    for setting in settings:
        if (setting, seeds[0]) not in runs:
            continue
        cells = []
        for v in verticals:
            ts = [t for s in seeds for t in runs[(setting, s)]["teacher"] if t["vertical"] == v]
            cells.append(f"{st.mean(t['ne'] for t in ts):.5f} / {st.mean(t['auc'] for t in ts):.5f}")
        out(f"| {labels[setting]} | " + " | ".join(cells) + " |")
    last = ("bench-exfm: ne_student=%.5f ne_kd=%.5f ne_ah=%.5f ne_ah_sa=%.5f ne_ah_sa_stale=%.5f ne_ah_stale=%.5f" % (
        key[("fresh", "none")], key[("fresh", "kd")], key[("fresh", "ah")], key[("fresh", "ah_sa")],
        key[("stale", "ah_sa")], key[("stale", "ah")]))
    text = "\n".join(lines)
    with open(a.summary, "w") as f:
        f.write(text + "\n\n" + last + "\n")
    print(text)
    print(last)


if __name__ == "__main__":
    main()
