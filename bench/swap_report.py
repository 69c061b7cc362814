#!/usr/bin/python3
"""bench-swap's report: p99 of the calls around version swaps vs the others.

  swap_report.py --latency FILE --swaps FILE --rankd-log FILE --window S
                 --max-qps X --rate X --loadavg "a b c"

latency: "intended_unix_s latency_ms grpc_code" per call (rank-bench
--latency-log); swaps: "unix_s version" per SIGHUP. A swap's window runs
from its SIGHUP t to t + window, or to 1 s after rankd logged the old
version unloaded if that is later (a load at background priority can take
longer than the window: its switch and the old version's close stay
inside). A call is "swap" when its intended send time is in a swap's
window, "steady" when it is outside every window widened by 0.5 s on both
sides (calls in the margins count in neither). swaps = versions rankd logged as loaded after start-up;
failed = calls answered with any status but OK. Prints a few figures and,
last, the bench-swap line.
"""
import argparse
import calendar
import re
import time


def p99(xs):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", required=True)
    ap.add_argument("--swaps", required=True)
    ap.add_argument("--rankd-log", required=True)
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--max-qps", type=float, default=0)
    ap.add_argument("--rate", type=float, default=0)
    ap.add_argument("--loadavg", default="")
    a = ap.parse_args()
    calls = []
    with open(a.latency) as f:
        for line in f:
            t, ms, code = line.split()
            calls.append((float(t), float(ms), int(code)))
    with open(a.rankd_log) as f:
        log = f.read()
    # when each version's predecessor was unloaded: the swap's end
    unloaded = {}
    for ts, ms, ver in re.findall(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z model ml version (\d+) unloaded", log):
        unloaded[int(ver) + 1] = calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000.0
    swaps, switch_s = [], []
    with open(a.swaps) as f:
        for line in f:
            t, ver = float(line.split()[0]), int(line.split()[1])
            end = t + a.window
            if ver in unloaded:
                switch_s.append(unloaded[ver] - t)
                end = max(end, unloaded[ver] + 1.0)
            swaps.append((t, end))
    loaded = re.findall(r"model ml version (\d+) loaded from .* in (\d+) ms", log)
    refused = len(re.findall(r"refused:", log))
    swapped = [v for v in loaded if v[0] != "1"]
    steady, around, failed = [], [], 0
    for t, ms, code in calls:
        if code != 0:
            failed += 1
            continue
        if any(s <= t < e for s, e in swaps):
            around.append(ms)
        elif all(not (s - 0.5 <= t < e + 0.5) for s, e in swaps):
            steady.append(ms)
    ps, pw = p99(steady), p99(around)
    load_ms = sorted(int(v[1]) for v in swapped)
    switch_s.sort()
    print("bench-swap: calls=%d steady=%d swap=%d refused=%d load_ms_median=%s switch_s_median=%s switch_s_max=%s "
          "max_qps=%.0f rate=%.0f loadavg=%s" % (len(calls), len(steady), len(around), refused,
                          load_ms[len(load_ms) // 2] if load_ms else "nan",
                          "%.2f" % switch_s[len(switch_s) // 2] if switch_s else "nan",
                          "%.2f" % switch_s[-1] if switch_s else "nan", a.max_qps, a.rate, a.loadavg))
    print("bench-swap: swaps=%d failed=%d p99_steady_ms=%.3f p99_swap_ms=%.3f ratio=%.2f"
          % (len(swapped), failed, ps, pw, pw / ps if ps > 0 else float("nan")))


if __name__ == "__main__":
    main()
