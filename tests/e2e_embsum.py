#!/usr/bin/python3
"""EmbSum served by rankd over real gRPC (run by ctest; issue 12).

Builds a small EmbSum bundle with `rank embsum train` (40 movies, 3 users,
the text encoder of scripts/setup-encoder.sh), then serves it two ways:
  (a) `rank embsum export`: EmbSum as a model of its own; served pCTRs must
      equal `rank embsum score` (max abs diff <= 1e-6) for a known user and
      known ads, for ads unknown to the bundle sent with content_text (CPE
      computed at request time), and for an unknown user sent with a known
      user's history as recent_item_ids (UPE computed at request time);
  (b) `rank embsum attach` into a DCNv2 bundle with a dense item input
      'embsum' trained by `rank train`: served pCTRs must equal `rank score`
      of the same rows with the column filled by `rank embsum score`.
Bad input gets INVALID_ARGUMENT naming the field (no user and no history,
an empty recent item id, content_text over the limit, an unknown ad without
text, a client-sent 'embsum' value), never a NaN; unknown users get the
default UPE; Prometheus counts the fallbacks by reason; GetMetadata
describes the EmbSum bundle. Prints one summary line.

  e2e_embsum.py --bin-dir BUILD/bin --source-dir SRC [--keep]
"""
import argparse
import csv
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_grpcio import fail, install_client, run  # noqa: E402

TOL = 1e-6
ENC = os.environ.get("RK_ENCODER_MODEL") or os.path.join(
    os.environ.get("RK_MODEL_HOME") or os.path.expanduser("~/.cache/rankd"), "models", "all-MiniLM-L6-v2")
MAX_TEXT = 8192  # RK_EMBSUM_MAX_TEXT_BYTES

SEQ = [[1, 7, 3, 5, 1, 7, 2, 3, 5, 7, 1, 3], [2, 6, 8, 4, 2, 6, 8, 4, 6, 2, 8, 6], [3, 5, 1, 2, 8, 3, 5, 7, 6, 4, 5, 3]]
MOVIES = [("Toy Story (1995)", "Animation|Children|Comedy", "pixar, fun"), ("Heat (1995)", "Action|Crime|Thriller", ""),
          ("Sense and Sensibility (1995)", "Drama|Romance", "austen"), ("Alien (1979)", "Horror|Sci-Fi", "space"),
          ("Casablanca (1942)", "Drama|Romance", "classic"), ("Die Hard (1988)", "Action|Thriller", ""),
          ("Aladdin (1992)", "Animation|Children|Musical", "disney"), ("The Matrix (1999)", "Action|Sci-Fi", "cyberpunk")]


def tiny_movielens(d):
    """The layout of `rank data movielens` (as tests/test_embsum.c's
    tiny_movielens): 40 movies, users 1..3 with 12 time-ordered ratings."""
    os.makedirs(d)
    with open(os.path.join(d, "items.csv"), "w") as f:
        f.write('"movieId","title","genres","tags"\n')
        for i, (t, g, tg) in enumerate(MOVIES):
            f.write('"%d","%s","%s","%s"\n' % (i + 1, t, g, tg))
        for i in range(9, 41):
            f.write('"%d","Film number %d (2001)","%s",""\n' % (i, i, "Drama" if i % 2 else "Comedy"))
    events = {u: [] for u in (1, 2, 3)}
    with open(os.path.join(d, "train.tsv"), "w") as f:
        f.write("label\ttimestamp\tuser_id\tmovie_id\n")
        for t in range(12):
            for u in range(3):
                f.write("%d\t%d\t%d\t%d\n" % ((t + u) % 3 != 0, 1000 + t * 3 + u, u + 1, SEQ[u][t]))
                events[u + 1].append(SEQ[u][t])
    for n in ("valid.tsv", "test.tsv"):
        with open(os.path.join(d, n), "w") as f:
            f.write("label\ttimestamp\tuser_id\tmovie_id\n")
    return events


def write_pairs(path, pairs):
    with open(path, "w") as f:
        f.write("user_id\tmovie_id\n")
        for u, i in pairs:
            f.write("%s\t%s\n" % (u, i))


def read_cols(path):
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def start_rankd(bin_dir, model, log):
    f = open(log, "w")
    p = subprocess.Popen([os.path.join(bin_dir, "rankd"), "--model", model, "--encoder", ENC, "--listen",
                          "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"], stdout=f, stderr=subprocess.STDOUT)
    t0 = time.time()
    port = mport = None
    while time.time() - t0 < 120:
        if p.poll() is not None:
            fail("rankd exited %d at start (see %s)" % (p.returncode, log))
        txt = open(log).read()
        m1 = re.search(r"listening on 127\.0\.0\.1:(\d+)", txt)
        m2 = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", txt)
        if m1 and m2:
            port, mport = int(m1.group(1)), int(m2.group(1))
            break
        time.sleep(0.02)
    if port is None:
        p.kill()
        fail("rankd did not start within 120 s (see %s)" % log)
    return p, port, mport


def stop(p, log):
    p.terminate()
    rc = p.wait(timeout=60)
    if rc != 0:
        print(open(log).read()[-3000:], file=sys.stderr)
        fail("rankd exited %d after SIGTERM" % rc)


def max_diff(resp, ref, what):
    if len(resp.scores) != len(ref):
        fail("%s: %d scores for %d candidates" % (what, len(resp.scores), len(ref)))
    worst = 0.0
    for s, r in zip(resp.scores, ref):
        if math.isnan(s.pctr):
            fail("%s: a NaN pCTR" % what)
        worst = max(worst, abs(s.pctr - r))
    if worst > TOL:
        fail("%s: served vs offline max abs diff %.3g > %g" % (what, worst, TOL))
    return worst


def expect_invalid(stub, req, want, grpc):
    try:
        stub.Rank(req, timeout=30)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT or want not in e.details():
            fail("want INVALID_ARGUMENT with %r, got %s %r" % (want, e.code(), e.details()))
        return
    fail("a bad request was answered OK (want INVALID_ARGUMENT with %r)" % want)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    import grpc
    if not os.path.isdir(ENC):
        fail("no text encoder at %s (run scripts/setup-encoder.sh)" % ENC)
    tmp = tempfile.mkdtemp(prefix="rk_e2e_embsum_")
    log = os.path.join(tmp, "prep.log")
    rank = os.path.join(a.bin_dir, "rank")
    events = tiny_movielens(os.path.join(tmp, "ml"))
    es = os.path.join(tmp, "es")
    run([rank, "embsum", "train", "--data", os.path.join(tmp, "ml"), "--encoder", ENC, "--out", es, "--g", "2",
         "--p", "2", "--epochs", "1", "--item-tokens", "16", "--quiet"], log)
    run([rank, "embsum", "export", "--embsum", es, "--out", os.path.join(tmp, "model")], log)
    items = list(range(1, 41))
    # offline: `rank embsum score` of users 1..3 x every item
    pairs = [(u, i) for u in (1, 2, 3) for i in items]
    write_pairs(os.path.join(tmp, "pairs.tsv"), pairs)
    run([rank, "embsum", "score", "--model", es, "--input", os.path.join(tmp, "pairs.tsv"), "--output",
         os.path.join(tmp, "pairs_scores.tsv")], log)
    off = {p: (float(r["pctr"]), float(r["score"]))
           for p, r in zip(pairs, read_cols(os.path.join(tmp, "pairs_scores.tsv")))}
    # the exported model offline: `rank score` of the raw scores gives `rank embsum score`'s pCTR
    # (a model of one dense input and no embedding table scores at all)
    with open(os.path.join(tmp, "raw.tsv"), "w") as f:
        f.write("embsum\n" + "".join("%.9g\n" % off[p][1] for p in pairs))
    run([rank, "score", "--model", os.path.join(tmp, "model"), "--input", os.path.join(tmp, "raw.tsv"), "--output",
         os.path.join(tmp, "raw_scores.tsv")], log)
    got = [float(x) for x in open(os.path.join(tmp, "raw_scores.tsv")).read().split("\n")[1:] if x]
    worst = max(abs(g - off[p][0]) for g, p in zip(got, pairs))
    if len(got) != len(pairs) or not worst <= TOL:
        fail("rank score of the exported model vs rank embsum score: max abs diff %.3g" % worst)
    texts = {}
    with open(os.path.join(es, "items.tsv")) as f:  # id, session text, content text (the CPE's)
        for line in f.read().split("\n"):
            if line:
                i, _, t = line.split("\t")
                texts[int(i)] = t

    # (b) DCNv2 with the EmbSum score as a dense input, trained by `rank train`
    dcn = os.path.join(tmp, "dcn_data")
    os.makedirs(dcn)
    import random
    rnd = random.Random(1)
    rows = {"train.tsv": [], "valid.tsv": [], "test.tsv": []}
    for u in (1, 2, 3):
        for i in items:
            split = "test.tsv" if i % 5 == 0 else "valid.tsv" if i % 5 == 1 else "train.tsv"
            lab = 1 if i in SEQ[u - 1] else int(rnd.random() < 0.1)
            rows[split].append((lab, u, i, off[(u, i)][1]))
    for n, rr in rows.items():
        with open(os.path.join(dcn, n), "w") as f:
            f.write("label\tuser_id\tmovie_id\tembsum\n")
            for r in rr:
                f.write("%d\t%d\t%d\t%.9g\n" % r)
    cfg = os.path.join(tmp, "dcn.json")
    with open(cfg, "w") as f:
        f.write('{"name": "tiny-dcnv2-embsum", "label_column": "label", "features": ['
                '{"name": "user_id", "kind": "sparse", "side": "user", "table_size": 64, "dim": 8},'
                '{"name": "movie_id", "kind": "sparse", "side": "item", "table_size": 256, "dim": 8},'
                '{"name": "embsum", "kind": "dense", "side": "item"}],'
                '"tower": {"type": "dcnv2", "cross_layers": 1, "hidden": [16]},'
                '"train": {"seed": 1, "batch_size": 16, "max_epochs": 2, "threads": 1},'
                '"aliases": {"user_id": "user_id", "ad_id": "movie_id"}}')
    run([rank, "train", "--config", cfg, "--data", dcn, "--out", os.path.join(tmp, "dcn")], log)
    run([rank, "embsum", "attach", "--embsum", es, "--model", os.path.join(tmp, "dcn")], log)
    run([rank, "score", "--model", os.path.join(tmp, "dcn"), "--input", os.path.join(dcn, "test.tsv"), "--output",
         os.path.join(tmp, "dcn_scores.tsv")], log)
    dcn_ref = [float(x) for x in open(os.path.join(tmp, "dcn_scores.tsv")).read().split("\n")[1:] if x]

    install_client(a.source_dir, tmp)
    from rankd_client import rank_pb2, rank_pb2_grpc

    def request(user_id, ads, recent=(), texts_=None):
        r = rank_pb2.RankRequest(request_id="e2e")
        r.user.user_id = user_id
        r.user.recent_item_ids.extend(recent)
        for j, ad in enumerate(ads):
            c = r.candidates.add()
            c.ad_id = ad
            if texts_ and texts_[j] is not None:
                c.content_text = texts_[j].encode()
        return r

    diffs = {}
    srv, port, mport = start_rankd(a.bin_dir, os.path.join(tmp, "model"), os.path.join(tmp, "rankd.log"))
    try:
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        stub = rank_pb2_grpc.RankerStub(ch)
        ids = [str(i) for i in items]
        for u in (1, 2, 3):  # known users, known ads
            diffs["known u%d" % u] = max_diff(stub.Rank(request(str(u), ids), timeout=30),
                                             [off[(u, i)][0] for i in items], "known user %d" % u)
        # ads unknown to the bundle, sent with their text: CPE at request time
        unk = ["new-%d" % i for i in items[:10]]
        diffs["text"] = max_diff(stub.Rank(request("2", unk, texts_=[texts[i] for i in items[:10]]), timeout=60),
                                 [off[(2, i)][0] for i in items[:10]], "request-time CPE")
        # an unknown user with user 2's history (test period: the g*p = 4 events before 90%), most recent first
        ev = events[2]
        cut = int(0.9 * len(ev))
        hist = [str(i) for i in reversed(ev[cut - 4:cut])]
        diffs["recent"] = max_diff(stub.Rank(request("777", ids, recent=hist), timeout=60),
                                   [off[(2, i)][0] for i in items], "unknown user with recent_item_ids")
        # unknown user, no history: the default UPE (finite pCTRs)
        resp = stub.Rank(request("888", ids), timeout=30)
        if not all(0 < s.pctr < 1 for s in resp.scores):
            fail("default UPE: pCTRs %s" % [s.pctr for s in resp.scores][:5])
        # bad input names the field
        expect_invalid(stub, request("", ids), "user: no user_id and no recent_item_ids", grpc)
        expect_invalid(stub, request("777", ids, recent=["1", ""]), "user.recent_item_ids[1]: empty", grpc)
        expect_invalid(stub, request("2", ["1", "new"], texts_=[None, "a" * (MAX_TEXT + 1)]),
                       "candidates[1].content_text: 8193 bytes, at most 8192", grpc)
        expect_invalid(stub, request("2", ["1", "new"]), "candidates[1].ad_id: 'new' is not in the bundle", grpc)
        bad = request("2", ["1"])
        d = bad.candidates[0].dense.add()
        d.name, d.value = "embsum", 0.5
        expect_invalid(stub, bad, "candidates[0].dense[0]: 'embsum' is computed by rankd", grpc)
        md = stub.GetMetadata(rank_pb2.GetMetadataRequest(), timeout=10)
        e = md.models[0].embsum
        if (e.feature, e.m, e.k, e.dim, e.pool, e.codec) != ("embsum", 4, 4, 384, "softmax", "fp32") or not e.version:
            fail("GetMetadata embsum: %s" % e)
        page = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10).read().decode()
        want = {"upe_recent": 1, "upe_default": 1, "cpe_from_text": 10}
        for reason, n in want.items():
            m = re.search(r'rankd_embsum_fallbacks_total\{[^}]*reason="%s"\} (\d+)' % reason, page)
            if not m or int(m.group(1)) != n:
                fail("metrics: rankd_embsum_fallbacks_total{reason=%s} = %s, want %d" % (reason, m and m.group(1), n))
    finally:
        stop(srv, os.path.join(tmp, "rankd.log"))

    srv, port, _ = start_rankd(a.bin_dir, os.path.join(tmp, "dcn"), os.path.join(tmp, "rankd_dcn.log"))
    try:
        stub = rank_pb2_grpc.RankerStub(grpc.insecure_channel("127.0.0.1:%d" % port))
        test = rows["test.tsv"]
        served = []
        for u in (1, 2, 3):
            rr = [r for r in test if r[1] == u]
            served += list(stub.Rank(request(str(u), [str(r[2]) for r in rr]), timeout=30).scores)
        if len(served) != len(dcn_ref):
            fail("dcn: %d served for %d offline" % (len(served), len(dcn_ref)))
        worst = max(abs(s.pctr - r) for s, r in zip(served, dcn_ref))
        if not worst <= TOL:
            fail("DCNv2 + EmbSum: served vs rank score max abs diff %.3g" % worst)
        diffs["dcnv2"] = worst
    finally:
        stop(srv, os.path.join(tmp, "rankd_dcn.log"))
    print("e2e_embsum: OK max_abs_diff %s" % " ".join("%s=%.3g" % kv for kv in diffs.items()))
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("kept %s" % tmp)


if __name__ == "__main__":
    main()
