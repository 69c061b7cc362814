#!/usr/bin/python3
"""bench-embsum's serving step (bench/bench_embsum.sh): an EmbSum bundle
served by rankd over real gRPC.

  embsum_serve.py --bin-dir BUILD/bin --source-dir SRC --bundle ES --rows TEST_ROWS.tsv
                  --offline SCORES.tsv --items ITEMS1K --user ID --out OUT.json [--reps N]

`rank embsum export` turns the bundle into a model rankd serves; rankd
starts on 127.0.0.1:0 (--encoder: the text encoder). Then
  - every row of TEST_ROWS (impressions.tsv's test rows: user_id, movie_id),
    consecutive rows of one user in one Rank request, scored by rankd and
    compared with SCORES (`rank embsum score` of the same rows: pctr column):
    served_max_diff;
  - REPS requests of the first 1,000 ids of ITEMS1K for user ID with
    return_timing (after 5 warm-up requests): the server's own stage times
    (decode, lookup = validation + UPE/CPE from the store + matching, model =
    the calibration tower, total) and the client's round trip, p50 and p99.
Writes OUT.json and prints one summary line.
"""
import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from e2e_grpcio import fail, install_client, run  # noqa: E402

ENC = os.environ.get("RK_ENCODER_MODEL") or os.path.join(
    os.environ.get("RK_MODEL_HOME") or os.path.expanduser("~/.cache/rankd"), "models", "all-MiniLM-L6-v2")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def main():
    ap = argparse.ArgumentParser()
    for k in ("bin-dir", "source-dir", "bundle", "rows", "offline", "items", "user", "out"):
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--reps", type=int, default=50)
    a = ap.parse_args()
    import grpc
    tmp = tempfile.mkdtemp(prefix="rk_bench_embsum_")
    log = os.path.join(tmp, "prep.log")
    model = os.path.join(tmp, "model")
    run([os.path.join(a.bin_dir, "rank"), "embsum", "export", "--embsum", a.bundle, "--out", model], log)
    install_client(a.source_dir, tmp)
    from rankd_client import rank_pb2, rank_pb2_grpc
    with open(a.rows) as f:
        rows = [(r["user_id"], r["movie_id"]) for r in csv.DictReader(f, delimiter="\t")]
    with open(a.offline) as f:
        ref = [float(r["pctr"]) for r in csv.DictReader(f, delimiter="\t")]
    if len(ref) != len(rows):
        fail("%s: %d scores for %d rows" % (a.offline, len(ref), len(rows)))
    items = [l.strip() for l in open(a.items) if l.strip()][:1000]
    rlog = open(os.path.join(tmp, "rankd.log"), "w")
    p = subprocess.Popen([os.path.join(a.bin_dir, "rankd"), "--model", model, "--encoder", ENC, "--listen",
                          "127.0.0.1:0", "--max-candidates", "1000"], stdout=rlog, stderr=subprocess.STDOUT)
    port = None
    t0 = time.time()
    while port is None and time.time() - t0 < 300:
        if p.poll() is not None:
            fail("rankd exited %d at start (see %s)" % (p.returncode, rlog.name))
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", open(rlog.name).read())
        port = int(m.group(1)) if m else None
        time.sleep(0.05)
    if port is None:
        p.kill()
        fail("rankd did not start")

    def request(user, ads, timing=False):
        r = rank_pb2.RankRequest(request_id="bench", return_timing=timing)
        r.user.user_id = user
        for ad in ads:
            r.candidates.add().ad_id = ad
        return r

    try:
        stub = rank_pb2_grpc.RankerStub(grpc.insecure_channel("127.0.0.1:%d" % port,
                                                              options=[("grpc.max_receive_message_length", 64 << 20)]))
        worst, n_req, i = 0.0, 0, 0
        while i < len(rows):
            j = i + 1
            while j < len(rows) and j - i < 1000 and rows[j][0] == rows[i][0]:
                j += 1
            resp = stub.Rank(request(rows[i][0], [m for _, m in rows[i:j]]), timeout=60)
            n_req += 1
            for s, r in zip(resp.scores, ref[i:j]):
                d = abs(s.pctr - r)
                if not d <= worst:  # NaN fails below
                    worst = d
            if len(resp.scores) != j - i or worst != worst:
                fail("rows %d..%d: bad response" % (i, j - 1))
            i = j
        req = request(a.user, items, timing=True)
        for _ in range(5):
            stub.Rank(req, timeout=60)
        st = {k: [] for k in ("decode_us", "lookup_us", "model_us", "total_us", "client_us")}
        for _ in range(a.reps):
            c0 = time.perf_counter()
            resp = stub.Rank(req, timeout=60)
            st["client_us"].append((time.perf_counter() - c0) * 1e6)
            for k in ("decode_us", "lookup_us", "model_us", "total_us"):
                st[k].append(getattr(resp.timing, k))
    finally:
        p.terminate()
        p.wait(timeout=60)
    res = {"served_max_diff": worst, "rows": len(rows), "requests": n_req, "candidates": len(items), "reps": a.reps}
    for k, v in st.items():
        res[k + "_p50"], res[k + "_p99"] = pct(v, 0.5), pct(v, 0.99)
    json.dump(res, open(a.out, "w"), indent=1)
    shutil.rmtree(tmp, ignore_errors=True)
    print("[rankd gRPC] %d test rows in %d requests: served vs rank embsum score max |diff| %.3g; 1,000 candidates, %d "
          "requests: server total p50 %.0f us (decode %.0f, lookup+EmbSum %.0f, model %.0f), p99 %.0f us; client round "
          "trip p50 %.0f us" % (len(rows), n_req, worst, a.reps, res["total_us_p50"], res["decode_us_p50"],
                                res["lookup_us_p50"], res["model_us_p50"], res["total_us_p99"], res["client_us_p50"]))


if __name__ == "__main__":
    main()
