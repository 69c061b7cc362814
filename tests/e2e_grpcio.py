#!/usr/bin/python3
"""End-to-end check of rankd from a Python grpcio client (run by ctest).

Prepares MovieLens data and a 1-epoch bundle with the `rank` binary, scores
the test split offline (`rank score`), starts `rankd` on 127.0.0.1:0, sends
the whole test split as Rank requests (consecutive rows sharing every
user-side value form one request, as `rank query` groups them), and checks:
  - every served pCTR equals the offline one within 1e-6,
  - Health/Check: SERVING for "" and "rankd.v1.Ranker", NOT_FOUND otherwise,
  - bad requests (unknown feature, NaN dense value, unknown method) get
    INVALID_ARGUMENT / UNIMPLEMENTED with a message naming the field,
  - responses decode in Python (protobuf-c does not check UTF-8; this does),
  - SIGTERM stops rankd with exit code 0.
The client is the repo's rankd_client package (python/), pip-installed into
a fresh venv here; examples/client.py, run by that venv's python, must give
the same pCTRs too. Prints one summary line. Needs Debian's python3-grpcio,
python3-grpc-tools, python3-venv, python3-setuptools and python3-wheel: run
with /usr/bin/python3 (c-stack.md §1).

  e2e_grpcio.py --bin-dir BUILD/bin --source-dir SRC [--keep]
"""
import argparse
import glob
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

TOL = 1e-6


def fail(msg):
    print("e2e_grpcio: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def run(cmd, log):
    with open(log, "a") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    if r.returncode != 0:
        fail("%s exited %d (see %s)" % (" ".join(cmd), r.returncode, log))


def install_client(src, tmp):
    """The rankd_client package (python/) pip-installed from a copy of the
    repo's python/, proto/ and include/rank.h into a fresh venv (Debian's
    grpcio via --system-site-packages, nothing downloaded); the venv's
    site-packages joins sys.path. Returns the venv's python."""
    tree = os.path.join(tmp, "client-src")
    shutil.copytree(os.path.join(src, "python"), os.path.join(tree, "python"),
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    shutil.copytree(os.path.join(src, "proto"), os.path.join(tree, "proto"))
    os.makedirs(os.path.join(tree, "include"))
    shutil.copy(os.path.join(src, "include", "rank.h"), os.path.join(tree, "include"))
    venv = os.path.join(tmp, "venv")
    for cmd in ([sys.executable, "-m", "venv", "--system-site-packages", venv],
                [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "--no-build-isolation",
                 "--no-index", os.path.join(tree, "python")]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            fail("%s: %s%s" % (" ".join(cmd), r.stdout[-2000:], r.stderr[-2000:]))
    site = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))
    if len(site) != 1 or not os.path.isdir(os.path.join(site[0], "rankd_client")):
        fail("rankd_client is not in the venv's site-packages")
    sys.path.insert(0, site[0])
    return os.path.join(venv, "bin", "python")


def train_bundle(rank, source_dir, tmp, log):
    """tmp/ml (the MovieLens split) and tmp/bundle (DCNv2, 1 epoch)."""
    run([rank, "data", "movielens", "--input", os.path.join(source_dir, "data", "movielens"),
         "--out", os.path.join(tmp, "ml")], log)
    run([rank, "train", "--config", os.path.join(source_dir, "configs", "movielens_dcnv2.json"),
         "--data", os.path.join(tmp, "ml"), "--out", os.path.join(tmp, "bundle"), "--epochs", "1"], log)


def read_tsv(path):
    with open(path) as f:
        lines = f.read().split("\n")
    hdr = lines[0].split("\t")
    rows = [l.split("\t") for l in lines[1:] if l]
    return hdr, rows


def read_scores(path):
    with open(path) as f:
        lines = f.read().split("\n")
    if lines[0] != "pctr":
        fail("%s: header %r, want 'pctr'" % (path, lines[0]))
    return [float(x) for x in lines[1:] if x]


def start_rankd(bin_dir, bundle, log):
    f = open(log, "w")
    p = subprocess.Popen([os.path.join(bin_dir, "rankd"), "--model", bundle,
                          "--listen", "127.0.0.1:0"], stdout=f, stderr=subprocess.STDOUT)
    t0 = time.time()
    while time.time() - t0 < 120:
        if p.poll() is not None:
            fail("rankd exited %d at start (see %s)" % (p.returncode, log))
        with open(log) as g:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", g.read())
        if m:
            return p, int(m.group(1))
        time.sleep(0.01)
    p.kill()
    fail("rankd did not print 'listening on' within 120 s")


def e2e_args():
    """--bin-dir, --source-dir and --keep: the arguments of every e2e script."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    return ap.parse_args()


def main():
    a = e2e_args()
    import grpc  # Debian's python3-grpcio

    tmp = tempfile.mkdtemp(prefix="rk_e2e_py_")
    log = os.path.join(tmp, "prep.log")
    rank = os.path.join(a.bin_dir, "rank")
    t0 = time.time()
    train_bundle(rank, a.source_dir, tmp, log)
    test_tsv = os.path.join(tmp, "ml", "test.tsv")
    run([rank, "score", "--model", os.path.join(tmp, "bundle"), "--input", test_tsv,
         "--output", os.path.join(tmp, "scores.tsv")], log)
    t_prep = time.time() - t0
    venv_python = install_client(a.source_dir, tmp)
    from rankd_client import build_request, health_pb2, health_pb2_grpc, rank_pb2_grpc
    # bad arguments: TypeError / ValueError naming the argument, before
    # anything is sent (a NUL would be cut by the server, not refused)
    for bad, exc, msg in (
            (lambda: build_request({"hour": True}, [{}]), TypeError, "user.hour: True is neither"),
            (lambda: build_request({}, [{"genres": [1]}]), TypeError, "candidates[0].genres: sparse values"),
            (lambda: build_request({}, [{}, {}], ad_ids=["1"]), ValueError, "ad_ids: 1 values for 2"),
            (lambda: build_request({}, {"genres": "x"}), TypeError, "candidates: want a list of dicts"),
            (lambda: build_request({}, ["genres"]), TypeError, "candidates[0]: want a dict"),
            (lambda: build_request(["hour"], [{}]), TypeError, "user: want a dict"),
            (lambda: build_request({"hour\0x": "1"}, [{}]), ValueError, "user: feature name: 'hour\\x00x' contains NUL"),
            (lambda: build_request({}, [{}, {"genres": ["a", "b\0"]}]), ValueError, "candidates[1].genres: 'b\\x00' contains NUL"),
            (lambda: build_request({}, [{"genres": "\ud800"}]), ValueError, "candidates[0].genres: '\\ud800' is not valid UTF-8"),
            (lambda: build_request({}, [{"year": 10 ** 400}]), ValueError, "candidates[0].year: 1000"),
            (lambda: build_request({}, [{}], ad_ids=[5]), TypeError, "ad_ids[0]: 5 is not a str"),
            (lambda: build_request({}, [{}], user_id="1\0"), ValueError, "user_id: '1\\x00' contains NUL"),
            (lambda: build_request({}, [{}], content_texts=[5]), TypeError, "content_texts[0]: 5 is neither")):
        try:
            bad()
            fail("build_request accepted a bad argument (want %s %r)" % (exc.__name__, msg))
        except exc as e:
            if not str(e).startswith(msg):
                fail("build_request: %s %r, want one starting %r" % (exc.__name__, str(e), msg))
    try:
        import numpy
        r = build_request({}, [{"year": numpy.float32(1995.5)}, {"year": numpy.int64(1990)}])
        if [c.dense[0].value for c in r.candidates] != [1995.5, 1990.0]:
            fail("build_request: numpy dense values %s" % r)
    except ImportError:
        pass

    with open(os.path.join(tmp, "bundle", "model.json")) as f:
        mj = json.load(f)
    cfg = mj.get("config", mj)
    feats = cfg["features"]
    aliases = cfg.get("aliases", {})
    hdr, rows = read_tsv(test_tsv)
    ref = read_scores(os.path.join(tmp, "scores.tsv"))
    if len(ref) != len(rows):
        fail("%d offline scores for %d rows" % (len(ref), len(rows)))
    col = {ft["name"]: hdr.index(ft["column"]) for ft in feats}
    user_feats = [ft for ft in feats if ft["side"] == "user"]
    item_feats = [ft for ft in feats if ft["side"] == "item"]

    def build(r0, r1):
        u = rows[r0]
        user, kw = {}, {}
        for ft in user_feats:
            v = u[col[ft["name"]]]
            if ft["kind"] == "dense":
                if v:
                    user[ft["name"]] = float(v)
            elif ft["name"] == aliases.get("user_id"):
                kw["user_id"] = v
            elif ft["name"] == aliases.get("recent_item_ids"):
                kw["recent_item_ids"] = v.split("|")
            else:
                user[ft["name"]] = v.split("|")
        cands, ads = [], []
        for r in range(r0, r1):
            c, ad = {}, None
            for ft in item_feats:
                v = rows[r][col[ft["name"]]]
                if ft["kind"] == "dense":
                    if v:
                        c[ft["name"]] = float(v)
                elif ft["name"] == aliases.get("ad_id"):
                    ad = v
                else:
                    c[ft["name"]] = v.split("|")
            cands.append(c)
            ads.append(ad)
        return build_request(user, cands, request_id="py-%d" % r0, ad_ids=ads, **kw)

    srv, port = start_rankd(a.bin_dir, os.path.join(tmp, "bundle"), os.path.join(tmp, "rankd.log"))
    try:
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        stub = rank_pb2_grpc.RankerStub(ch)
        health = health_pb2_grpc.HealthStub(ch)

        # the whole test split, grouped like `rank query`
        max_k = 100
        n_req, maxdiff, worst = 0, 0.0, -1
        t1 = time.time()
        r0 = 0
        uidx = [col[ft["name"]] for ft in user_feats]
        while r0 < len(rows):
            r1 = r0 + 1
            while (r1 < len(rows) and r1 - r0 < max_k
                   and all(rows[r1][i] == rows[r0][i] for i in uidx)):
                r1 += 1
            resp = stub.Rank(build(r0, r1), timeout=30)
            n_req += 1
            if len(resp.scores) != r1 - r0:
                fail("rows %d..%d: %d scores" % (r0, r1 - 1, len(resp.scores)))
            if resp.request_id != "py-%d" % r0:
                fail("request_id echo %r" % resp.request_id)
            for i, s in enumerate(resp.scores):
                d = abs(s.pctr - ref[r0 + i])
                if not d <= maxdiff:
                    maxdiff, worst = d, r0 + i
                    if math.isnan(d):
                        fail("row %d: pCTR is NaN" % (r0 + i))
            r0 = r1
        el = time.time() - t1
        if maxdiff > TOL:
            fail("served vs offline: max abs diff %.3g at row %d (served/offline differ)" % (maxdiff, worst))

        # examples/client.py, run by the venv's python, gives the same pCTRs
        n_ex = 300
        r = subprocess.run([venv_python, os.path.join(a.source_dir, "examples", "client.py"), "--addr",
                            "127.0.0.1:%d" % port, "--input", test_tsv, "--rows", str(n_ex)],
                           capture_output=True, text=True, timeout=300)
        ex = r.stdout.split("\n")
        if r.returncode != 0 or ex[0] != "pctr" or len([x for x in ex[1:] if x]) != n_ex:
            fail("examples/client.py exited %d: %s%s" % (r.returncode, r.stdout[-500:], r.stderr[-2000:]))
        ex_diff = max(abs(float(x) - ref[i]) for i, x in enumerate(ex[1:n_ex + 1]))
        if not ex_diff <= TOL:
            fail("examples/client.py vs offline: max abs diff %.3g" % ex_diff)

        # health
        st = health_pb2.HealthCheckResponse.SERVING
        for svc in ("", "rankd.v1.Ranker"):
            if health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=10).status != st:
                fail("health %r is not SERVING" % svc)
        try:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
            fail("health of an unknown service answered OK")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                fail("health unknown service: %s" % e.code())

        # bad requests, each followed by a good one
        def expect_error(req, code, msg):
            try:
                stub.Rank(req, timeout=10)
                fail("bad request answered OK (want %s %r)" % (code, msg))
            except grpc.RpcError as e:
                if e.code() != code or e.details() != msg:
                    fail("got %s %r, want %s %r" % (e.code(), e.details(), code, msg))
            stub.Rank(build(0, 1), timeout=10)

        req = build(0, 3)
        req.candidates[2].sparse[0].name = "foo"
        expect_error(req, grpc.StatusCode.INVALID_ARGUMENT,
                     "candidates[2].sparse[0].name: unknown feature 'foo'")
        req = build(0, 2)
        dense = [i for i, d in enumerate(req.candidates[1].dense)]
        if not dense:
            req.candidates[1].dense.add(name=[ft["name"] for ft in item_feats if ft["kind"] == "dense"][0])
            dense = [0]
        req.candidates[1].dense[dense[0]].value = float("nan")
        expect_error(req, grpc.StatusCode.INVALID_ARGUMENT,
                     "candidates[1].dense[%d].value: not finite (NaN)" % dense[0])
        t2 = time.time()
        try:
            ch.unary_unary("/rankd.v1.Ranker/Nope")(b"", timeout=5)
            fail("unknown method answered OK")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                fail("unknown method: %s %r" % (e.code(), e.details()))
        if time.time() - t2 > 1.0:
            fail("UNIMPLEMENTED took %.2fs" % (time.time() - t2))
        ch.close()
    finally:
        if srv.poll() is None:
            srv.send_signal(signal.SIGTERM)
        try:
            rc = srv.wait(timeout=60)
        except subprocess.TimeoutExpired:
            srv.kill()
            rc = -9
    with open(os.path.join(tmp, "rankd.log")) as f:
        rlog = f.read()
    if rc != 0 or "Sanitizer" in rlog or "runtime error:" in rlog:
        sys.stderr.write(rlog[-20000:])  # so ctest sees sanitizer reports too
        fail("rankd exited %d after SIGTERM (log above)" % rc)
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print("e2e_grpcio: rows=%d requests=%d requests_per_s=%.0f max_abs_diff_vs_offline=%.3g "
          "health=SERVING bad_requests=ok unimplemented=ok client_example_max_abs_diff=%.3g prep_s=%.1f"
          % (len(rows), n_req, n_req / el if el > 0 else 0, maxdiff, ex_diff, t_prep))


if __name__ == "__main__":
    main()
