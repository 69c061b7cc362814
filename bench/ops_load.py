#!/usr/bin/python3
"""bench-ops' side loads against a running rankd (Debian's python3-grpcio).

  ops_load.py scrape  --metrics-port P --seconds S --out FILE ...
      GET /metrics once a second (--interval; parsed by prometheus_client,
      as a Prometheus server would) for S seconds or --count scrapes.
  ops_load.py updates --addr HOST:PORT --bundle DIR --source-dir SRC --seconds S --out FILE
      Admin/ApplyUpdates back to back for S seconds: 64 random rows of the
      'genres' table per call (values in [-0.05, 0.05]).
Writes {"calls", "calls_per_s", "scrapes", "errors"} to FILE.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["scrape", "updates"])
    ap.add_argument("--addr")
    ap.add_argument("--metrics-port", type=int)
    ap.add_argument("--bundle")
    ap.add_argument("--source-dir")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=1.0, help="scrape: seconds between scrapes")
    ap.add_argument("--count", type=int, default=0, help="scrape: stop after N scrapes (0: --seconds)")
    a = ap.parse_args()
    res = {"calls": 0, "scrapes": 0, "errors": 0}
    t0 = time.time()
    if a.kind == "scrape":
        from prometheus_client.parser import text_string_to_metric_families
        while time.time() - t0 < a.seconds and not (a.count and res["scrapes"] >= a.count):
            t = time.time()
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % a.metrics_port, timeout=10) as r:
                list(text_string_to_metric_families(r.read().decode()))
            res["scrapes"] += 1
            time.sleep(max(0.0, a.interval - (time.time() - t)))
    else:
        import grpc
        tmp = tempfile.mkdtemp(prefix="rk_ops_load_")
        shutil.copy(os.path.join(a.source_dir, "proto", "rank.proto"), tmp)
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", tmp, "--python_out", tmp,
                        "--grpc_python_out", tmp, "rank.proto"], check=True)
        sys.path.insert(0, tmp)
        import rank_pb2
        import rank_pb2_grpc
        mj = json.load(open(os.path.join(a.bundle, "model.json")))
        ft = [f for f in mj["features"] if f["name"] == "genres"][0]
        rnd = random.Random(1)
        stub = rank_pb2_grpc.AdminStub(grpc.insecure_channel(a.addr))
        reqs = []
        for _ in range(16):
            rows = rnd.sample(range(ft["table_size"]), 64)
            reqs.append(rank_pb2.ApplyUpdatesRequest(
                table="genres", rows=rows, values=[rnd.uniform(-0.05, 0.05) for _ in range(64 * ft["dim"])]))
        t0 = time.time()
        while time.time() - t0 < a.seconds:
            try:
                stub.ApplyUpdates(reqs[res["calls"] % len(reqs)], timeout=10)
            except grpc.RpcError:
                res["errors"] += 1
            res["calls"] += 1
        shutil.rmtree(tmp, ignore_errors=True)
    res["calls_per_s"] = res["calls"] / max(1e-9, time.time() - t0)
    with open(a.out, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
