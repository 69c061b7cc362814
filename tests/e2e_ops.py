#!/usr/bin/python3
"""rankd in production, end to end from Debian's python3-grpcio (run by ctest).

Trains a 1-epoch MovieLens bundle with `rank`, starts `rankd` on loopback
ports picked free, and checks what an operator relies on:
  metrics  GET /metrics parsed by prometheus_client's text parser; every
           family named in README "Metrics" present; requests by status,
           candidates scored, histogram counts and sums against the calls
           this test sent (server total <= client wall time; stages sum to
           at most the total); queue/worker gauges; 404 elsewhere; a
           client holding many half-sent requests open does not keep the
           scrapers out past the idle timeout.
Prints one summary line. Run with /usr/bin/python3 (c-stack.md §1).

  e2e_ops.py --bin-dir BUILD/bin --source-dir SRC [--keep]
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_grpcio import e2e_args, install_client, run, train_bundle  # noqa: E402


def fail(msg):
    print("e2e_ops: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


class Rankd:
    """A rankd process on 127.0.0.1 port 0; ports parsed from its log."""

    def __init__(self, bin_dir, args, log, want_metrics=False):
        self.log = log
        with open(log, "w") as f:
            self.p = subprocess.Popen([os.path.join(bin_dir, "rankd"), "--listen", "127.0.0.1:0"] + args,
                                      stdout=f, stderr=subprocess.STDOUT)
        self.port = int(self.wait_log(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        self.metrics_port = None
        if want_metrics:
            self.metrics_port = int(self.wait_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))

    def text(self):
        with open(self.log) as g:
            return g.read()

    def wait_log(self, pattern, timeout=120):
        t0 = time.time()
        while time.time() - t0 < timeout:
            m = re.search(pattern, self.text())
            if m:
                return m
            if self.p.poll() is not None:
                fail("rankd exited %d waiting for %r (see %s)" % (self.p.returncode, pattern, self.log))
            time.sleep(0.01)
        fail("rankd: no %r within %d s (see %s)" % (pattern, timeout, self.log))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = -9
        t = self.text()
        if rc != 0 or "Sanitizer" in t or "runtime error:" in t:
            sys.stderr.write(t[-20000:])
            fail("rankd exited %d after SIGTERM (log above)" % rc)


def scrape(port, path="/metrics"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.headers.get("Content-Type"), r.read().decode()


def half_sent(port):
    """A connection to the metrics port with a request line and no more."""
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(b"GET /metrics HTTP/1.1\r\n")
    return c


def parse(text):
    """{(name, frozenset(labels)): value} through prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families
    out, fams = {}, {}
    for fam in text_string_to_metric_families(text):
        fams[fam.name] = fam.type
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out, fams


def get(samples, name, **labels):
    k = (name, frozenset(labels.items()))
    if k not in samples:
        fail("metrics: no sample %s%s" % (name, labels))
    return samples[k]


def make_request(rank_pb2, i, n):
    """User i with n candidates, by the bundle's aliases only (the other
    features are missing, i.e. empty)."""
    req = rank_pb2.RankRequest(request_id="ops-%d" % i, user=rank_pb2.User(user_id=str(1 + i % 50)))
    for k in range(n):
        req.candidates.add(ad_id=str(1 + (7 * i + k) % 500))
    return req


def check_metrics(a, tmp, bundle, grpc, rank_pb2, rank_pb2_grpc, health_pb2, health_pb2_grpc):
    r = Rankd(a.bin_dir, ["--model", bundle, "--threads", "2", "--metrics-listen", "127.0.0.1:0",
                          "--ram-tables-mb", "0"], os.path.join(tmp, "rankd_metrics.log"), want_metrics=True)
    try:
        ctype, text = scrape(r.metrics_port)
        if not ctype.startswith("text/plain; version=0.0.4"):
            fail("metrics Content-Type %r" % ctype)
        s, fams = parse(text)
        want = {"rankd_requests": "counter", "rankd_candidates_scored": "counter",
                "rankd_request_duration_seconds": "histogram", "rankd_queue_depth": "gauge",
                "rankd_workers_busy": "gauge", "rankd_store_cache": "counter",
                "rankd_semantic_id_fallbacks": "counter", "rankd_updates_applied_rows": "counter",
                "rankd_reloads": "counter", "rankd_build_info": "gauge",
                "rankd_overload_rejected": "counter"}
        for n, t in want.items():
            if fams.get(n) != t:
                fail("metrics: family %s is %r, want %s" % (n, fams.get(n), t))
        import json
        with open(os.path.join(bundle, "model.json")) as f:
            mj = json.load(f)
        lab = {"model": mj["name"], "version": mj["version"]}
        if get(s, "rankd_requests_total", code="OK", **lab) != 0:
            fail("metrics: requests before any call")
        bi = [k for k in s if k[0] == "rankd_build_info"]
        if len(bi) != 1 or dict(bi[0][1]).get("version") is None:
            fail("metrics: build_info %r" % bi)

        ch = grpc.insecure_channel("127.0.0.1:%d" % r.port)
        stub = rank_pb2_grpc.RankerStub(ch)
        n_ok, cand, wall = 20, 0, 0.0
        for i in range(n_ok):
            t0 = time.time()
            resp = stub.Rank(make_request(rank_pb2, i, i + 1), timeout=30)
            wall += time.time() - t0
            cand += i + 1
            if len(resp.scores) != i + 1:
                fail("rank %d: %d scores" % (i, len(resp.scores)))
        n_bad = 3
        for i in range(n_bad):
            req = make_request(rank_pb2, i, 2)
            req.candidates[1].sparse.add(name="no_such_feature", values=["x"])
            try:
                stub.Rank(req, timeout=10)
                fail("bad request answered OK")
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    fail("bad request: %s" % e.code())
        health = health_pb2_grpc.HealthStub(ch)
        for _ in range(2):
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        try:
            ch.unary_unary("/rankd.v1.Ranker/Nope")(b"", timeout=5)
        except grpc.RpcError:
            pass
        # metadata: the model.json features, a client needs nothing else
        md = stub.GetMetadata(rank_pb2.GetMetadataRequest(), timeout=10)
        if len(md.models) != 1 or md.models[0].name != mj["name"]:
            fail("metadata: models %r" % [m.name for m in md.models])
        got = [(f.name, f.side, f.kind, f.dim) for f in md.models[0].features]
        wantf = [(f["name"], f["side"], f["kind"], f.get("dim", 1) if f["kind"] == "sparse" else 1)
                 for f in mj["features"]]
        if got != wantf:
            fail("metadata: features %r, model.json %r" % (got, wantf))
        v = md.models[0].versions
        if len(v) != 1 or v[0].version != mj["version"] or v[0].bundle_version != "%s/%s" % (mj["name"], mj["version"]):
            fail("metadata: versions %r" % v)
        al = mj["aliases"]
        if (md.models[0].user_id_feature, md.models[0].recent_item_ids_feature, md.models[0].ad_id_feature) != (
                al["user_id"], al["recent_item_ids"], al["ad_id"]):
            fail("metadata: aliases")
        det = expect_code(lambda: stub.GetMetadata(rank_pb2.GetMetadataRequest(model_name="nope"), timeout=10),
                          grpc.StatusCode.NOT_FOUND, "metadata of an unknown model")
        if det != "model_name: 'nope' is not served here":
            fail("metadata unknown model: %r" % det)
        ch.close()

        s, _ = parse(scrape(r.metrics_port)[1])
        checks = [("rankd_requests_total", dict(code="OK", **lab), n_ok),
                  ("rankd_requests_total", dict(code="INVALID_ARGUMENT", **lab), n_bad),
                  ("rankd_candidates_scored_total", lab, cand),
                  ("rankd_health_checks_total", {}, 2),
                  ("rankd_unimplemented_total", {}, 1),
                  ("rankd_queue_depth", {}, 0),
                  ("rankd_workers_busy", {}, 0),
                  ("rankd_workers", {}, 2),
                  ("rankd_overload_rejected_total", {}, 0),
                  ("rankd_metrics_scrapes_total", {}, 2),
                  ("rankd_model_serving", lab, 1)]
        for n, l, v in checks:
            got = get(s, n, **l)
            if got != v:
                fail("metrics: %s%s = %r, want %r" % (n, l, got, v))
        sums = {}
        for st in ("queue", "decode", "lookup", "model", "encode", "total"):
            c = get(s, "rankd_request_duration_seconds_count", stage=st, **lab)
            inf = get(s, "rankd_request_duration_seconds_bucket", stage=st, le="+Inf", **lab)
            if c != n_ok or inf != n_ok:
                fail("metrics: stage %s count %r / +Inf %r, want %d" % (st, c, inf, n_ok))
            prev = 0
            les = sorted((float(dict(k[1])["le"]), v) for k, v in s.items()
                         if k[0] == "rankd_request_duration_seconds_bucket" and dict(k[1]).get("stage") == st
                         and dict(k[1])["model"] == lab["model"])
            for le, v in les:
                if v < prev:
                    fail("metrics: stage %s buckets not cumulative at le=%g" % (st, le))
                prev = v
            sums[st] = get(s, "rankd_request_duration_seconds_sum", stage=st, **lab)
        parts = sum(sums[k] for k in ("queue", "decode", "lookup", "model", "encode"))
        if not (0 < parts <= sums["total"] * 1.0001 + 1e-6):
            fail("metrics: stage sums %.6f s exceed the total %.6f s" % (parts, sums["total"]))
        if not sums["total"] <= wall:
            fail("metrics: server total %.6f s > client wall time %.6f s" % (sums["total"], wall))
        hits = get(s, "rankd_store_cache_total", event="hit", **lab)
        miss = get(s, "rankd_store_cache_total", event="miss", **lab)
        code, _ = None, None
        try:
            scrape(r.metrics_port, "/nope")
        except urllib.error.HTTPError as e:
            code = e.code
        if code != 404:
            fail("metrics: /nope answered %r, want 404" % code)
        # 70 half-sent requests held open (more than the 64 connections and
        # the 8 per address rankd takes): closed as idle after 5 s, after
        # which a scrape gets through while they are still held
        held = [half_sent(r.metrics_port) for _ in range(70)]
        time.sleep(6)
        try:
            scrape(r.metrics_port)
        except OSError as e:
            fail("metrics: a scrape 6 s after 70 half-sent requests: %s" % e)
        finally:
            for c in held:
                c.close()
        return "metrics=ok requests=%d candidates=%d total_s=%.4f wall_s=%.4f cache_hits=%d cache_misses=%d" % (
            n_ok, cand, sums["total"], wall, hits, miss)
    finally:
        r.stop()


def expect_code(call, code, what):
    """call() must fail with gRPC status code; returns the details."""
    import grpc
    try:
        call()
    except grpc.RpcError as e:
        if e.code() != code:
            fail("%s: %s %r, want %s" % (what, e.code(), e.details(), code))
        return e.details()
    fail("%s answered OK, want %s" % (what, code))


def rank_err(stub, req):
    """(code, details) of a Rank call expected to fail."""
    import grpc
    try:
        stub.Rank(req, timeout=30)
    except grpc.RpcError as e:
        return e.code(), e.details()
    fail("Rank answered OK, expected an error: %r" % req.model_name)


def check_repository(a, tmp, bundle, ml, grpc, rank_pb2, rank_pb2_grpc, health_pb2, health_pb2_grpc):
    """--model-repository: NOT_SERVING until a version loads, routing by
    model_name/model_version, an incompatible version refused while the old
    one serves, latest:1 retires the old version, drain on SIGTERM."""
    import json
    repo = os.path.join(tmp, "repo")
    os.makedirs(os.path.join(repo, "ml"))
    r = Rankd(a.bin_dir, ["--model-repository", repo, "--threads", "2", "--metrics-listen", "127.0.0.1:0",
                          "--drain-ms", "1500"], os.path.join(tmp, "rankd_repo.log"), want_metrics=True)
    try:
        ch = grpc.insecure_channel("127.0.0.1:%d" % r.port)
        stub = rank_pb2_grpc.RankerStub(ch)
        health = health_pb2_grpc.HealthStub(ch)
        SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING

        def hs(svc):
            return health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=10).status
        if hs("") != NOT_SERVING or hs("rankd.v1.Ranker") != NOT_SERVING:
            fail("repository: health SERVING with no model loaded")
        # Watch streams: the server's and model ml's status as they change
        import threading
        seen = {"": [], "ml": []}
        ends = {}

        def watch(svc):
            try:
                for m in health.Watch(health_pb2.HealthCheckRequest(service=svc), timeout=300):
                    seen[svc].append(m.status)
            except grpc.RpcError as e:
                ends[svc] = e.code()
        watchers = [threading.Thread(target=watch, args=(k,), daemon=True) for k in seen]
        for t in watchers:
            t.start()
        code, det = rank_err(stub, make_request(rank_pb2, 0, 2))
        if code != grpc.StatusCode.UNAVAILABLE or det != "no model is loaded yet":
            fail("repository: Rank with no model: %s %r" % (code, det))

        def hup(pattern):
            n = len(re.findall(pattern, r.text()))
            r.p.send_signal(signal.SIGHUP)
            t0 = time.time()
            while len(re.findall(pattern, r.text())) <= n:
                if time.time() - t0 > 120:
                    fail("repository: no %r after SIGHUP (see %s)" % (pattern, r.log))
                time.sleep(0.02)
        shutil.copytree(bundle, os.path.join(repo, "ml", "1"))
        hup(r"model ml version 1 loaded")
        if hs("") != SERVING or hs("ml") != SERVING:
            fail("repository: not SERVING after version 1 loaded")
        resp1 = stub.Rank(make_request(rank_pb2, 1, 3), timeout=30)
        v1 = resp1.model_version

        # a version without the 'genres' feature: requests that send it would fail
        cfg = json.load(open(os.path.join(a.source_dir, "configs", "movielens_dcnv2.json")))
        cfg["features"] = [f for f in cfg["features"] if f["name"] != "genres"]
        cpath = os.path.join(tmp, "no_genres.json")
        json.dump(cfg, open(cpath, "w"))
        run([os.path.join(a.bin_dir, "rank"), "train", "--config", cpath, "--data", ml,
             "--out", os.path.join(repo, "ml", "2"), "--epochs", "1"], os.path.join(tmp, "prep.log"))
        hup(r"model ml version 2 refused: ")
        m = re.search(r"model ml version 2 refused: (.*)", r.text())
        if "feature 'genres'" not in m.group(1):
            fail("repository: refusal does not name the feature: %r" % m.group(1))
        if stub.Rank(make_request(rank_pb2, 1, 3), timeout=30).model_version != v1:
            fail("repository: version 1 no longer serves after the refusal")

        # a second model, routed by name
        shutil.copytree(bundle, os.path.join(repo, "other", "5"))
        hup(r"model other version 5 loaded")
        req = make_request(rank_pb2, 2, 2)
        code, det = rank_err(stub, req)
        if code != grpc.StatusCode.INVALID_ARGUMENT or not det.startswith("model_name: required, 2 models"):
            fail("repository: no model_name with 2 models: %s %r" % (code, det))
        req.model_name = "nope"
        code, det = rank_err(stub, req)
        if code != grpc.StatusCode.NOT_FOUND or not det.startswith("model_name: 'nope' is not served here"):
            fail("repository: unknown model: %s %r" % (code, det))
        # a name that is not UTF-8 is refused, not echoed (the client could
        # not decode it); a long one is echoed cut at a character boundary
        raw = ch.unary_unary("/rankd.v1.Ranker/Rank")  # bytes in, bytes out
        for tag, field in ((b"\x12", "model_name"), (b"\x1a", "model_version")):
            try:
                raw(req.SerializeToString() + tag + b"\x02\xff\xfe", timeout=30)
                fail("repository: %s not UTF-8 was answered" % field)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.INVALID_ARGUMENT or e.details() != field + ": invalid UTF-8":
                    fail("repository: %s not UTF-8: %s %r" % (field, e.code(), e.details()))
        req.model_name = "n" * 63 + "\u00e9"
        code, det = rank_err(stub, req)
        if code != grpc.StatusCode.NOT_FOUND or not det.startswith("model_name: '%s' is not served here" % ("n" * 63)):
            fail("repository: a long unknown model name: %s %r" % (code, det))
        for name in ("ml", "other"):
            req.model_name = name
            if len(stub.Rank(req, timeout=30).scores) != 2:
                fail("repository: model %s" % name)
        req.model_name, req.model_version = "other", "5"
        stub.Rank(req, timeout=30)
        # the only version's directory removed: it keeps serving, and a warning says so (once)
        shutil.move(os.path.join(repo, "other", "5"), os.path.join(tmp, "other5"))
        hup(r"model other version 5: its directory is gone from the repository; still serving it")
        stub.Rank(req, timeout=30)
        hup(r"SIGHUP: repository scanned")
        if len(re.findall(r"version 5: its directory is gone", r.text())) != 1:
            fail("repository: the gone-directory warning is not once: %r" % r.text()[-800:])
        shutil.move(os.path.join(tmp, "other5"), os.path.join(repo, "other", "5"))

        # a compatible newer version replaces version 1 (latest:1); 2 stays refused
        shutil.copytree(bundle, os.path.join(repo, "ml", "3"))
        hup(r"model ml version 1 unloaded")
        if "model ml version 3 loaded" not in r.text():
            fail("repository: version 3 not loaded")
        req.model_name, req.model_version = "ml", "1"
        code, det = rank_err(stub, req)
        if code != grpc.StatusCode.NOT_FOUND or det != "model_version: '1' is not served here (serving '3')":
            fail("repository: retired version: %s %r" % (code, det))
        req.model_version = "3"
        stub.Rank(req, timeout=30)
        md = stub.GetMetadata(rank_pb2.GetMetadataRequest(), timeout=10)
        got = sorted((m.name, [v.version for v in m.versions]) for m in md.models)
        if got != [("ml", ["3"]), ("other", ["5"])]:
            fail("metadata: repository models %r" % got)
        s, _ = parse(scrape(r.metrics_port)[1])
        for (mo, ve), want in {("ml", "1"): 0, ("ml", "3"): 1, ("other", "5"): 1}.items():
            if get(s, "rankd_model_serving", model=mo, version=ve) != want:
                fail("metrics: rankd_model_serving %s/%s != %d" % (mo, ve, want))
        if get(s, "rankd_requests_total", model="ml", version="1", code="OK") != 3:
            fail("metrics: version 1 requests %r" % get(s, "rankd_requests_total", model="ml", version="1", code="OK"))
        if get(s, "rankd_reloads_total", outcome="failed") < 1:
            fail("metrics: refused version not counted")

        # drain: NOT_SERVING while calls are still answered
        r.p.send_signal(signal.SIGTERM)
        r.wait_log(r"SIGTERM: draining")
        if hs("") != NOT_SERVING or hs("ml") != NOT_SERVING:
            fail("repository: health SERVING while draining")
        stub.Rank(req, timeout=30)
        r.stop()
        for t in watchers:
            t.join(timeout=30)
        UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        if seen[""] != [NOT_SERVING, SERVING, NOT_SERVING] or seen["ml"] != [UNKNOWN, SERVING, NOT_SERVING]:
            fail("health Watch: server saw %r, ml saw %r" % (seen[""], seen["ml"]))
        if ends.get("") != grpc.StatusCode.UNAVAILABLE:
            fail("health Watch: stream ended with %r" % ends.get(""))
        ch.close()
        return "repository=ok drain=ok watch=ok"
    finally:
        r.stop()


def make_certs(d):
    """A CA, a server certificate for localhost/127.0.0.1 and two client
    certificates (CN admin-bot, CN intruder), all by openssl."""
    def ossl(*args):
        r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, cwd=d)
        if r.returncode:
            fail("openssl %s: %s" % (" ".join(args), r.stderr))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=rankd-test-ca")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn, ext in (("srv", "localhost", True), ("bot", "admin-bot", False), ("bad", "intruder", False)):
        ossl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
        ossl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", name + ".pem", "-days", "2", *(["-extfile", "san.ext"] if ext else []))
    return {k: open(os.path.join(d, k), "rb").read() for k in
            ("ca.pem", "srv.pem", "srv.key", "bot.pem", "bot.key", "bad.pem", "bad.key")}


def check_security(a, tmp, bundle, grpc, rank_pb2, rank_pb2_grpc, health_pb2, health_pb2_grpc):
    """TLS, mutual TLS, Admin disabled / token / client-certificate identity."""
    import json
    d = os.path.join(tmp, "pki")
    os.makedirs(d)
    pem = make_certs(d)
    tok = os.path.join(d, "admin.token")
    with open(tok, "w", encoding="utf-8-sig") as f:  # a byte-order mark (Windows editors) is not part of the token
        f.write("s3cret-token-0123456789\n")
    with open(os.path.join(bundle, "model.json")) as f:
        mj = json.load(f)
    dim = [f["dim"] for f in mj["features"] if f["name"] == "genres"][0]
    upd = rank_pb2.ApplyUpdatesRequest(table="genres", rows=[3, 4], values=[0.25] * (2 * dim))
    opts = [("grpc.ssl_target_name_override", "localhost")]
    out = []

    # --updates off loopback without authentication: refused at start
    bad = subprocess.run([os.path.join(a.bin_dir, "rankd"), "--model", bundle, "--listen", "0.0.0.0:0",
                          "--updates"], capture_output=True, text=True, timeout=120)
    if bad.returncode != 1 or "needs authentication (--admin-token-file" not in bad.stderr:
        fail("security: --updates on 0.0.0.0 without auth: rc %d %r" % (bad.returncode, bad.stderr[-300:]))

    # a NUL in the token file: refused (the token was cut short at it)
    nul_tok = os.path.join(d, "nul.token")
    with open(nul_tok, "wb") as f:
        f.write(b"0123456789abcdef\x00tail\n")
    nt = subprocess.run([os.path.join(a.bin_dir, "rankd"), "--model", bundle, "--listen", "127.0.0.1:0", "--updates",
                         "--admin-token-file", nul_tok], capture_output=True, text=True, timeout=120)
    if nt.returncode != 1 or "admin token file: %s: row 1, column 1 (byte 17 of the row): a NUL byte" % nul_tok not in nt.stderr:
        fail("security: token file with a NUL: rc %d %r" % (nt.returncode, nt.stderr[-300:]))

    # a key that is not the certificate's: named as a TLS error, not "address in use"
    mis = subprocess.run([os.path.join(a.bin_dir, "rankd"), "--model", bundle, "--listen", "127.0.0.1:0",
                          "--tls-cert", os.path.join(d, "srv.pem"), "--tls-key", os.path.join(d, "bot.key")],
                         capture_output=True, text=True, timeout=120)
    if mis.returncode != 1 or "rankd: tls: gRPC refused --tls-cert %s / --tls-key %s (a key that does not match" % (
            os.path.join(d, "srv.pem"), os.path.join(d, "bot.key")) not in mis.stderr:
        fail("security: mismatched TLS key: rc %d %r" % (mis.returncode, mis.stderr[-400:]))

    # an expired server certificate (valid for 0 days): rankd starts, and says so
    subprocess.run(["openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                    "-out", "expired.pem", "-days", "0"], capture_output=True, cwd=d, check=True)
    time.sleep(1.1)
    r = Rankd(a.bin_dir, ["--model", bundle, "--tls-cert", os.path.join(d, "expired.pem"), "--tls-key",
                          os.path.join(d, "srv.key")], os.path.join(tmp, "rankd_expired.log"))
    try:
        if not re.search(r"tls certificate \S*expired\.pem expired on 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC: clients will "
                         r"refuse the TLS handshake", r.text()):
            fail("security: no warning about an expired certificate: %r" % r.text()[-600:])
    finally:
        r.stop()

    # Admin disabled unless enabled
    r = Rankd(a.bin_dir, ["--model", bundle], os.path.join(tmp, "rankd_noadmin.log"))
    try:
        ch = grpc.insecure_channel("127.0.0.1:%d" % r.port)
        expect_code(lambda: rank_pb2_grpc.AdminStub(ch).ApplyUpdates(upd, timeout=10),
                    grpc.StatusCode.FAILED_PRECONDITION, "security: Admin without --updates")
        ch.close()
    finally:
        r.stop()

    # TLS + bearer token
    b2 = os.path.join(tmp, "bundle_tls")
    shutil.copytree(bundle, b2)
    r = Rankd(a.bin_dir, ["--model", b2, "--updates", "--metrics-listen", "127.0.0.1:0",
                          "--tls-cert", os.path.join(d, "srv.pem"), "--tls-key", os.path.join(d, "srv.key"),
                          "--admin-token-file", tok], os.path.join(tmp, "rankd_tls.log"), want_metrics=True)
    try:
        if not re.search(r"tls certificate \S*srv\.pem expires on 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in 1 days", r.text()):
            fail("security: a certificate valid 2 days is not warned about: %r" % r.text()[-600:])
        ch = grpc.secure_channel("127.0.0.1:%d" % r.port, grpc.ssl_channel_credentials(pem["ca.pem"]), opts)
        if len(rank_pb2_grpc.RankerStub(ch).Rank(make_request(rank_pb2, 0, 3), timeout=30).scores) != 3:
            fail("security: Rank over TLS")
        plain = grpc.insecure_channel("127.0.0.1:%d" % r.port)
        expect_code(lambda: rank_pb2_grpc.RankerStub(plain).Rank(make_request(rank_pb2, 0, 3), timeout=5),
                    grpc.StatusCode.UNAVAILABLE, "security: plaintext call to a TLS port")
        plain.close()
        admin = rank_pb2_grpc.AdminStub(ch)
        right = ("authorization", "Bearer s3cret-token-0123456789")
        for md in ([], [("authorization", "Bearer wrong-token-0123456789")],
                   [("authorization", "Bearer wrong-token-0123456789"), right]):  # ambiguous: refused
            expect_code(lambda: admin.ApplyUpdates(upd, metadata=md, timeout=10),
                        grpc.StatusCode.UNAUTHENTICATED, "security: Admin without the token")
        res = admin.ApplyUpdates(upd, metadata=[("authorization", "Bearer s3cret-token-0123456789")], timeout=30)
        if res.applied != 2:
            fail("security: applied %d rows" % res.applied)
        if not re.search(r"admin: update by token \(peer .*\): model %s .* table 'genres' rows 2: applied" % re.escape(mj["name"]), r.text()):
            fail("security: no update log line (see %s)" % r.log)
        s, _ = parse(scrape(r.metrics_port)[1])
        lab = {"model": mj["name"], "version": mj["version"]}
        if get(s, "rankd_admin_denied_total") != 3 or get(s, "rankd_updates_applied_rows_total", **lab) != 2:
            fail("security: metrics denied=%r rows=%r" % (get(s, "rankd_admin_denied_total"),
                                                        get(s, "rankd_updates_applied_rows_total", **lab)))
        ch.close()
        out.append("tls=ok token=ok")
    finally:
        r.stop()

    # mutual TLS: the client certificate's CN is the Admin identity
    r = Rankd(a.bin_dir, ["--model", b2, "--updates",
                          "--tls-cert", os.path.join(d, "srv.pem"), "--tls-key", os.path.join(d, "srv.key"),
                          "--tls-client-ca", os.path.join(d, "ca.pem"), "--admin-allow-cn", "ops,admin-bot"],
              os.path.join(tmp, "rankd_mtls.log"))
    try:
        def chan(who):
            cred = grpc.ssl_channel_credentials(pem["ca.pem"], pem[who + ".key"] if who else None,
                                                pem[who + ".pem"] if who else None)
            return grpc.secure_channel("127.0.0.1:%d" % r.port, cred, opts)
        ch = chan("bot")
        rank_pb2_grpc.RankerStub(ch).Rank(make_request(rank_pb2, 0, 2), timeout=30)
        if rank_pb2_grpc.AdminStub(ch).ApplyUpdates(upd, timeout=30).applied != 2:
            fail("security: mTLS admin-bot update")
        if "admin: update by cn:admin-bot" not in r.text():
            fail("security: mTLS update not logged with the CN")
        ch.close()
        ch = chan("bad")
        rank_pb2_grpc.RankerStub(ch).Rank(make_request(rank_pb2, 0, 2), timeout=30)
        expect_code(lambda: rank_pb2_grpc.AdminStub(ch).ApplyUpdates(upd, timeout=30),
                    grpc.StatusCode.UNAUTHENTICATED, "security: CN intruder updating")
        ch.close()
        ch = chan(None)
        expect_code(lambda: rank_pb2_grpc.RankerStub(ch).Rank(make_request(rank_pb2, 0, 2), timeout=5),
                    grpc.StatusCode.UNAVAILABLE, "security: mTLS call without a client certificate")
        ch.close()
        out.append("mtls=ok")
    finally:
        r.stop()
    return " ".join(out)


def check_logs(a, tmp, bundle, grpc, rank_pb2, rank_pb2_grpc, health_pb2, health_pb2_grpc):
    """--config (flags win), JSON log lines, sampled access log, errors with
    their request id rate-limited, one warning per overload episode; and
    --version on every tool."""
    import json
    for tool in (os.path.join(a.bin_dir, "rank"), os.path.join(a.bin_dir, "rankd"),
                 os.path.join(os.path.dirname(os.path.abspath(a.bin_dir)), "rank-bench")):
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0 or not re.fullmatch(r"(rank|rankd|rank-bench) \d+\.\d+\.\d+\n", out.stdout):
            fail("%s --version: rc %d %r" % (tool, out.returncode, out.stdout))
    two = subprocess.run([os.path.join(a.bin_dir, "rankd"), "--model", bundle, "--model", bundle + "x",
                          "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    if two.returncode != 2 or "--model given twice" not in two.stderr:
        fail("a second --model: rc %d %r" % (two.returncode, two.stderr))
    cfg = os.path.join(tmp, "rankd.json")
    with open(cfg, "w") as f:  # valid JSON, not an object: no bogus "line -1"
        f.write("[1, 2]\n")
    arr = subprocess.run([os.path.join(a.bin_dir, "rankd"), "--config", cfg], capture_output=True, text=True, timeout=60)
    if arr.returncode != 2 or arr.stderr != "rankd: --config %s: not a JSON object\n" % cfg:
        fail("--config with a JSON array: rc %d %r" % (arr.returncode, arr.stderr))
    rankd = os.path.join(a.bin_dir, "rankd")
    for text, want in ((b'{"threads": 2}\x00{"bogus": 1}', "a NUL byte at byte 15"),
                       (b'{"threads": 2, "threads": 3}', "duplicate object key"),
                       (b'{"listen": ["x"]}', "'listen' must be a string or an integer")):  # even when --listen wins
        with open(cfg, "wb") as f:
            f.write(text)
        bad = subprocess.run([rankd, "--config", cfg, "--model", bundle, "--listen", "127.0.0.1:0"],
                             capture_output=True, text=True, timeout=60)
        if bad.returncode != 2 or "rankd: --config %s: " % cfg not in bad.stderr or want not in bad.stderr:
            fail("--config %r: rc %d %r" % (text, bad.returncode, bad.stderr[-300:]))
    with open(cfg, "w") as f:
        json.dump({"model": bundle, "threads": 2, "log-json": True, "access-log-sample": 5,
                   "queue-depth": 1, "metrics-listen": "127.0.0.1:0"}, f)
    r = Rankd(a.bin_dir, ["--config", cfg, "--threads", "1"], os.path.join(tmp, "rankd_logs.log"), want_metrics=True)
    try:
        ch = grpc.insecure_channel("127.0.0.1:%d" % r.port)
        stub = rank_pb2_grpc.RankerStub(ch)
        for i in range(10):
            stub.Rank(make_request(rank_pb2, i, 4), timeout=30)
        for i in range(3):
            req = make_request(rank_pb2, i, 2)
            req.request_id = "bad-%d" % i
            req.candidates[0].sparse.add(name="nope", values=["x"])
            rank_err(stub, req)
        time.sleep(1.1)
        req.request_id = "bad-last"
        rank_err(stub, req)
        # an overload episode: one worker, a queue of 1, a burst of big calls;
        # the requests are built before the burst (building one in Python
        # took longer than rankd took to score it, so a burst could arrive
        # slower than it was served), and a burst is repeated, at most 5
        # times, until one is rejected
        burst = [make_request(rank_pb2, i, 1000) for i in range(60)]
        rejected = sent = 0
        for _ in range(5):
            futs = [stub.Rank.future(q, timeout=60) for q in burst]
            sent += len(futs)
            rejected = sum(1 for f in futs if f.exception(timeout=120) is not None
                           and f.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED)
            if rejected:
                break
        if not rejected:
            fail("overload: 5 bursts of %d calls into a queue of 1, none rejected" % len(burst))
        time.sleep(1.2)
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)  # ends the episode
        r.wait_log(r"overload over: \d+ calls rejected")
        for _ in range(3):  # libmicrohttpd's complaint is a rankd log line, not raw stderr
            half_sent(r.metrics_port).close()
        s, _ = parse(scrape(r.metrics_port)[1])
        ch.close()
    finally:
        r.stop()
    lines = [json.loads(l) for l in r.text().splitlines() if l.strip()]  # every line is one JSON object
    msgs = [l["msg"] for l in lines]
    if not any("listening on" in m and "threads=1 " in m for m in msgs):
        fail("logs: --threads on the command line did not win over the config file")
    access = [m for m in msgs if m.startswith("access: ")]
    worked = 10 + 4 + sent - rejected  # calls a worker answered, in order; the 4 errors are calls 11-14
    if len(access) != worked // 5:
        fail("logs: %d access lines for %d calls, sample 1/5" % (len(access), worked))
    errs = [m for m in msgs if m.startswith("rank error: ")]
    if len(errs) != 2 or "request_id='bad-0'" not in errs[0] or "request_id='bad-last'" not in errs[1] \
            or "(2 earlier errors not logged)" not in errs[1] or "unknown feature 'nope'" not in errs[0]:
        fail("logs: error lines %r" % errs)
    if rejected == 0:
        fail("logs: the burst was not rejected at all (queue-depth 1)")
    over = [m for m in msgs if m.startswith("overload")]
    if len(over) != 2 or not over[0].startswith("overload: Rank queue full (1)") \
            or not over[1].startswith("overload over: %d calls rejected in " % rejected):
        fail("logs: overload lines %r (rejected %d)" % (over, rejected))
    if get(s, "rankd_overload_rejected_total") != rejected:
        fail("metrics: overload_rejected %r, client saw %d" % (get(s, "rankd_overload_rejected_total"), rejected))
    if any(l["level"] not in ("debug", "info", "warn", "error") for l in lines):
        fail("logs: bad level")
    return "logs=ok config=ok version=ok overload_rejected=%d" % rejected


def main():
    a = e2e_args()
    import grpc  # Debian's python3-grpcio

    tmp = tempfile.mkdtemp(prefix="rk_e2e_ops_")
    log = os.path.join(tmp, "prep.log")
    rank = os.path.join(a.bin_dir, "rank")
    train_bundle(rank, a.source_dir, tmp, log)
    bundle = os.path.join(tmp, "bundle")
    install_client(a.source_dir, tmp)  # the repo's rankd_client package: stubs of proto/
    from rankd_client import health_pb2, health_pb2_grpc, rank_pb2, rank_pb2_grpc
    mods = (grpc, rank_pb2, rank_pb2_grpc, health_pb2, health_pb2_grpc)
    lines = [check_metrics(a, tmp, bundle, *mods),
             check_repository(a, tmp, bundle, os.path.join(tmp, "ml"), *mods),
             check_security(a, tmp, bundle, *mods),
             check_logs(a, tmp, bundle, *mods)]
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print("e2e_ops: " + " ".join(lines))


if __name__ == "__main__":
    main()
