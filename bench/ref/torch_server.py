#!/usr/bin/env python3
"""bench/ref/torch_server.py -- the server a user would write instead of rankd:
Python grpcio serving rankd.v1.Ranker/Rank with the same DCNv2 in PyTorch.

    torch_server.py --model BUNDLE --tables TABLES.safetensors --listen 127.0.0.1:PORT
    torch_server.py --compare RANKD_ADDR TORCH_ADDR --model BUNDLE --data test.tsv

Weights: the bundle's dense.safetensors (cross.L.weight/bias, mlp.I.weight/bias,
out.weight/bias, torch [out, in] layout); embedding rows: TABLES.safetensors,
written by build/bench/dump_tables from the bundle's RocksDB tables (the store
has no Python reader). Features follow model.json exactly as rankd does:
row = xxh64(name + 0x1f + value) mod table_size, empty values skipped, at most
max_values values kept, sum/mean pooling (torch embedding_bag), dense
x' = (x - mean) / std (log1p first when set), missing dense -> 0, aliases
user.user_id / user.recent_item_ids / candidates[i].ad_id. Tower: x_{l+1} =
x0 * (W_l x_l + b_l) + x_l, then the ReLU MLP, the output layer, sigmoid.

What it does NOT do that a careful Python server might: batch requests across
calls, cache hashes, or run several processes. It does hash each user-side
value once per request (as rankd does) and pools item-side bags with one
embedding_bag call per feature over the whole request. torch uses one intra-op
thread (the bench pins the server to one core). --compare sends the same
requests to both servers and prints the largest pCTR difference.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from concurrent import futures

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (path, k, v["dtype"])
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype="<f4").reshape(v["shape"]).copy()
    return out


def gen_stubs():
    here = os.path.dirname(os.path.abspath(__file__))
    proto_dir = os.path.join(here, "..", "..", "proto")
    out = tempfile.mkdtemp(prefix="rk_torch_stubs_")
    r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir,
                        "--python_out=" + out, os.path.join(proto_dir, "rank.proto")],
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit("grpc_tools.protoc: " + r.stderr)
    sys.path.insert(0, out)
    import rank_pb2  # noqa: E402
    return rank_pb2


class Model:
    def __init__(self, bundle, tables_path):
        import torch
        import xxhash
        self.torch, self.xxh = torch, xxhash.xxh64_intdigest
        cfg = json.load(open(os.path.join(bundle, "model.json")))
        self.version = "%s/%s" % (cfg["name"], cfg["version"])
        self.feats = cfg["features"]
        al = cfg.get("aliases", {})
        self.alias = {al.get("user_id"): "user_id", al.get("recent_item_ids"): "recent_item_ids",
                      al.get("ad_id"): "ad_id"}
        self.alias.pop(None, None)
        self.alias.pop("", None)
        dense = {k: torch.from_numpy(v) for k, v in read_safetensors(os.path.join(bundle, "dense.safetensors")).items()}
        tw = cfg["tower"]
        assert tw["type"] == "dcnv2", "this reference implements the DCNv2 tower"
        self.cross = [(dense["cross.%d.weight" % l], dense["cross.%d.bias" % l]) for l in range(tw["cross_layers"])]
        self.mlp = [(dense["mlp.%d.weight" % i], dense["mlp.%d.bias" % i]) for i in range(len(tw["hidden"]))]
        self.out = (dense["out.weight"], dense["out.bias"])
        tabs = read_safetensors(tables_path)
        self.col, c = {}, 0
        for f in self.feats:
            self.col[f["name"]] = c
            c += f["dim"] if f["kind"] == "sparse" else 1
            if f["kind"] == "sparse":
                f["_table"] = torch.from_numpy(tabs["emb." + f["name"]])
                f["_prefix"] = f["name"].encode() + b"\x1f"
        self.D = c

    def _rows(self, f, values):
        keep, out = f.get("max_values", 0), []
        for v in values:
            if not v:
                continue
            if keep and len(out) >= keep:
                break
            out.append(self.xxh(f["_prefix"] + v.encode()) % f["table_size"])
        return out

    def _dense(self, f, x):
        if f.get("log1p"):
            x = float(np.log1p(x))
        return (x - f["mean"]) / f["std"]

    def score(self, req):
        torch, F = self.torch, self.torch.nn.functional
        n = len(req.candidates)
        x0 = torch.zeros((n, self.D))
        u = req.user
        usp = {s.name: list(s.values) for s in u.sparse}
        uds = {d.name: d.value for d in u.dense}
        for f in self.feats:
            if f["side"] != "user":
                continue
            c = self.col[f["name"]]
            if f["kind"] == "dense":
                if f["name"] in uds:
                    x0[:, c] = self._dense(f, uds[f["name"]])
                continue
            a = self.alias.get(f["name"])
            vals = [u.user_id] if a == "user_id" and u.user_id else list(u.recent_item_ids) if a == "recent_item_ids" else usp.get(f["name"], [])
            rows = self._rows(f, vals)
            if rows:
                e = f["_table"][rows]
                x0[:, c:c + f["dim"]] = e.sum(0) if f["pooling"] == "sum" else e.mean(0)
        for f in self.feats:
            if f["side"] != "item":
                continue
            c, name = self.col[f["name"]], f["name"]
            if f["kind"] == "dense":
                for i, cd in enumerate(req.candidates):
                    for d in cd.dense:
                        if d.name == name:
                            x0[i, c] = self._dense(f, d.value)
                continue
            flat, offs = [], []
            is_ad = self.alias.get(name) == "ad_id"
            for cd in req.candidates:
                offs.append(len(flat))
                if is_ad and cd.ad_id:
                    flat.extend(self._rows(f, [cd.ad_id]))
                for s in cd.sparse:
                    if s.name == name:
                        flat.extend(self._rows(f, s.values))
            x0[:, c:c + f["dim"]] = F.embedding_bag(torch.tensor(flat, dtype=torch.long), f["_table"],
                                                    torch.tensor(offs, dtype=torch.long), mode=f["pooling"])
        with torch.no_grad():
            x = x0
            for W, b in self.cross:
                x = x0 * F.linear(x, W, b) + x
            for W, b in self.mlp:
                x = F.relu(F.linear(x, W, b))
            return torch.sigmoid(F.linear(x, *self.out)).reshape(-1).tolist()


def serve(args):
    import signal
    # blocked before grpc starts its threads, so sigwait below receives them
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    import grpc
    import torch
    torch.set_num_threads(1)
    pb = gen_stubs()
    model = Model(args.model, args.tables)

    def rank(req, ctx):
        if not req.candidates:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "candidates: empty")
        p = model.score(req)
        resp = pb.RankResponse(request_id=req.request_id, model_version=model.version)
        for cd, s in zip(req.candidates, p):
            resp.scores.add(ad_id=cd.ad_id, pctr=s)
        return resp

    handler = grpc.method_handlers_generic_handler("rankd.v1.Ranker", {
        "Rank": grpc.unary_unary_rpc_method_handler(rank, request_deserializer=pb.RankRequest.FromString,
                                                    response_serializer=pb.RankResponse.SerializeToString)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(args.listen)
    if not port:
        sys.exit("torch_server: cannot listen on " + args.listen)
    server.start()
    host = args.listen.rsplit(":", 1)[0]
    print("torch_server: listening on %s:%d (torch %s, %d intra-op thread, %d grpc workers)"
          % (host, port, torch.__version__, torch.get_num_threads(), args.workers), flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    server.stop(1).wait()


def compare(args):
    import grpc
    pb = gen_stubs()
    cfg = json.load(open(os.path.join(args.model, "model.json")))
    al = cfg.get("aliases", {})
    lines = open(args.data).read().split("\n")
    hdr = lines[0].split("\t")
    rows = [dict(zip(hdr, l.split("\t"))) for l in lines[1:] if l]
    worst, n = 0.0, 0
    for k in range(args.requests):
        start = k * args.candidates % len(rows)
        cand = [rows[(start + i) % len(rows)] for i in range(args.candidates)]
        u = cand[0]
        req = pb.RankRequest(request_id="cmp-%d" % k)
        for f in cfg["features"]:
            v = u[f["column"]] if f["side"] == "user" else None
            if v is None:
                continue
            if f["kind"] == "dense":
                if v:
                    req.user.dense.add(name=f["name"], value=float(v))
            elif f["name"] == al.get("user_id"):
                req.user.user_id = v
            elif f["name"] == al.get("recent_item_ids"):
                req.user.recent_item_ids.extend(v.split("|"))
            else:
                req.user.sparse.add(name=f["name"], values=v.split("|"))
        for r in cand:
            c = req.candidates.add()
            for f in cfg["features"]:
                if f["side"] != "item":
                    continue
                v = r[f["column"]]
                if f["kind"] == "dense":
                    if v:
                        c.dense.add(name=f["name"], value=float(v))
                elif f["name"] == al.get("ad_id"):
                    c.ad_id = v
                else:
                    c.sparse.add(name=f["name"], values=v.split("|"))
        got = []
        for addr in (args.compare[0], args.compare[1]):
            with grpc.insecure_channel(addr) as ch:
                call = ch.unary_unary("/rankd.v1.Ranker/Rank", request_serializer=pb.RankRequest.SerializeToString,
                                      response_deserializer=pb.RankResponse.FromString)
                got.append([s.pctr for s in call(req, timeout=30).scores])
        worst = max(worst, max(abs(a - b) for a, b in zip(*got)))
        n += len(got[0])
    print("torch_server: compare: %d requests, %d candidates: max |pctr(rankd) - pctr(torch)| = %.3g" % (args.requests, n, worst))
    return 0 if worst <= 1e-4 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tables")
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--compare", nargs=2, metavar=("RANKD_ADDR", "TORCH_ADDR"))
    ap.add_argument("--data")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--requests", type=int, default=5)
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare(args))
    if not args.tables:
        ap.error("--tables is required to serve")
    serve(args)


if __name__ == "__main__":
    main()
