#!/usr/bin/env python3
"""bench/ref/ort_bench.py -- ONNX Runtime beside rankd on the same weights
(`make bench-roofline`, issue 16). Runs in the venv bench/bench_roofline.sh
makes (PyPI onnxruntime, onnx, numpy, xxhash).

    ort_bench.py export --model BUNDLE --tables TABLES.safetensors --data TSV --out DIR
    ort_bench.py parity --model BUNDLE --tables T --data TSV --dir DIR --rows N \
                        --roofline BIN --rank BIN
    ort_bench.py time   --model BUNDLE --tables T --data TSV --dir DIR --batch B \
                        --seconds S --json OUT

export writes DIR/tower.onnx (tower input x0 [B, D] -> pCTR [B, 1]) and
DIR/graph.onnx, the whole graph: per sparse feature its table as an
initializer, Gather of the rows' table indices, masked ReduceSum over the
bag (then / count for mean pooling), the dense features, Concat in config
order, then the same tower. Weights: the bundle's dense.safetensors (torch
[out, in] layout, Gemm transB=1); tables: TABLES.safetensors from
build/bench/dump_tables. A sparse feature whose every row in TSV holds
exactly one value is a plain Gather of [B] indices (what an exporter would
emit for a one-hot feature); the others are bags [B, L] with a mask.

Featurization (strings -> table rows) is done here in Python, outside the
timed region, exactly as rankd does it: row = xxh64(name 0x1f value) mod
table_size, '|' between values, empty values skipped, at most max_values.
ONNX Runtime is timed on table indices, so its figures exclude hashing;
rankd's in-process figures include it (and its request parsing).

parity: the tower (x0 from numpy, rankd's logits from `roofline tower-dump`)
and the whole graph (`rank score` on the same N rows) against ONNX Runtime;
prints the largest |pCTR difference| of each.

time: one intra-op thread, sequential execution, all graph optimizations;
the batch is the first B rows (cycled when the file is shorter). Runs for
S seconds after 3 warm-up runs; records wall and process CPU seconds.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_server import read_safetensors  # noqa: E402  (one reader for the bench scripts)


class Bundle:
    def __init__(self, bundle, tables):
        self.cfg = json.load(open(os.path.join(bundle, "model.json")))
        assert self.cfg["tower"]["type"] == "dcnv2", "this exporter implements the DCNv2 tower"
        self.feats = self.cfg["features"]
        self.dense = read_safetensors(os.path.join(bundle, "dense.safetensors"))
        self.tables = read_safetensors(tables)
        self.D = sum(f["dim"] if f["kind"] == "sparse" else 1 for f in self.feats)

    def featurize(self, tsv, n=None):
        """Per feature: list of row lists (sparse) or floats (dense), for the first n rows."""
        import xxhash
        with open(tsv) as fh:
            cols = fh.readline().rstrip("\n").split("\t")
            at = {c: i for i, c in enumerate(cols)}
            rows = []
            for line in fh:
                if n is not None and len(rows) >= n:
                    break
                rows.append(line.rstrip("\n").split("\t"))
        out = {}
        for f in self.feats:
            c = at[f.get("column", f["name"])]
            if f["kind"] == "dense":
                def dv(s, f=f):
                    x = float(s) if s else 0.0
                    if f.get("log1p"):
                        x = float(np.log1p(x))
                    return (x - f.get("mean", 0.0)) / f.get("std", 1.0)
                out[f["name"]] = [dv(r[c]) for r in rows]
                continue
            pre, keep, ts = f["name"].encode() + b"\x1f", f.get("max_values", 0), f["table_size"]
            bags = []
            for r in rows:
                b = []
                for v in r[c].split("|"):
                    if not v:
                        continue
                    if keep and len(b) >= keep:
                        break
                    b.append(xxhash.xxh64_intdigest(pre + v.encode()) % ts)
                bags.append(b)
            out[f["name"]] = bags
        return out, len(rows)

    def x0(self, fz, n):
        """Tower input as rankd builds it: bags summed in order (float32), mean = sum / count."""
        x = np.zeros((n, self.D), dtype=np.float32)
        c = 0
        for f in self.feats:
            if f["kind"] == "dense":
                x[:, c] = np.asarray(fz[f["name"]], dtype=np.float32)
                c += 1
                continue
            t, d = self.tables["emb." + f["name"]], f["dim"]
            for i, b in enumerate(fz[f["name"]]):
                s = np.zeros(d, dtype=np.float32)
                for r in b:
                    s = s + t[r]
                if b and f["pooling"] == "mean":
                    s = s / np.float32(len(b))
                x[i, c:c + d] = s
            c += d
        return x


def tower_nodes(h, B, x0_name, inp):
    """Append the DCNv2 tower's nodes (x0_name -> 'pctr') and initializers."""
    from onnx import helper, numpy_helper
    nodes, inits = [], []
    cfg = B.cfg["tower"]

    def init(name, a):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a, dtype=np.float32), name))

    xl = x0_name
    for l in range(cfg["cross_layers"]):
        init("cW%d" % l, B.dense["cross.%d.weight" % l])
        init("cb%d" % l, B.dense["cross.%d.bias" % l])
        nodes += [helper.make_node("Gemm", [xl, "cW%d" % l, "cb%d" % l], ["cu%d" % l], transB=1),
                  helper.make_node("Mul", [x0_name, "cu%d" % l], ["cm%d" % l]),
                  helper.make_node("Add", ["cm%d" % l, xl], ["cx%d" % l])]
        xl = "cx%d" % l
    for i in range(len(cfg["hidden"])):
        init("mW%d" % i, B.dense["mlp.%d.weight" % i])
        init("mb%d" % i, B.dense["mlp.%d.bias" % i])
        nodes += [helper.make_node("Gemm", [xl, "mW%d" % i, "mb%d" % i], ["mg%d" % i], transB=1),
                  helper.make_node("Relu", ["mg%d" % i], ["mr%d" % i])]
        xl = "mr%d" % i
    init("oW", B.dense["out.weight"])
    init("ob", B.dense["out.bias"])
    nodes += [helper.make_node("Gemm", [xl, "oW", "ob"], ["logit"], transB=1),
              helper.make_node("Sigmoid", ["logit"], ["pctr"])]
    return nodes, inits


def single_valued(B, fz):
    return {f["name"]: all(len(b) == 1 for b in fz[f["name"]]) for f in B.feats if f["kind"] == "sparse"}


def export(a):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    B = Bundle(a.model, a.tables)
    fz, _ = B.featurize(a.data)
    single = single_valued(B, fz)
    os.makedirs(a.out, exist_ok=True)
    pctr = helper.make_tensor_value_info("pctr", TensorProto.FLOAT, ["B", 1])
    # tower alone
    nodes, inits = tower_nodes(helper, B, "x0", None)
    g = helper.make_graph(nodes, "tower", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["B", B.D])], [pctr], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), os.path.join(a.out, "tower.onnx"))
    # whole graph
    nodes, inits, inputs, parts = [], [], [], []
    for f in B.feats:
        n = f["name"]
        if f["kind"] == "dense":
            inputs.append(helper.make_tensor_value_info("dense_" + n, TensorProto.FLOAT, ["B", 1]))
            parts.append("dense_" + n)
            continue
        inits.append(numpy_helper.from_array(B.tables["emb." + n], "emb_" + n))
        if single[n]:
            inputs.append(helper.make_tensor_value_info("idx_" + n, TensorProto.INT64, ["B"]))
            nodes.append(helper.make_node("Gather", ["emb_" + n, "idx_" + n], ["pool_" + n]))
        else:
            inputs += [helper.make_tensor_value_info("idx_" + n, TensorProto.INT64, ["B", "L_" + n]),
                       helper.make_tensor_value_info("mask_" + n, TensorProto.FLOAT, ["B", "L_" + n, 1])]
            nodes += [helper.make_node("Gather", ["emb_" + n, "idx_" + n], ["rows_" + n]),
                      helper.make_node("Mul", ["rows_" + n, "mask_" + n], ["mrows_" + n]),
                      helper.make_node("ReduceSum", ["mrows_" + n, "ax1"], ["sum_" + n], keepdims=0)]
            if f["pooling"] == "mean":
                inputs.append(helper.make_tensor_value_info("cnt_" + n, TensorProto.FLOAT, ["B", 1]))
                nodes.append(helper.make_node("Div", ["sum_" + n, "cnt_" + n], ["pool_" + n]))
            else:
                nodes.append(helper.make_node("Identity", ["sum_" + n], ["pool_" + n]))
        parts.append("pool_" + n)
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1"))
    nodes.append(helper.make_node("Concat", parts, ["x0"], axis=1))
    tn, ti = tower_nodes(helper, B, "x0", None)
    g = helper.make_graph(nodes + tn, "graph", inputs, [pctr], inits + ti)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), os.path.join(a.out, "graph.onnx"))
    json.dump(single, open(os.path.join(a.out, "single.json"), "w"))
    print("ort_bench: exported tower.onnx and graph.onnx (D=%d; single-valued: %s)" %
          (B.D, ", ".join(k for k, v in single.items() if v) or "none"))


def graph_inputs(B, fz, idx, single):
    feeds = {}
    for f in B.feats:
        n = f["name"]
        if f["kind"] == "dense":
            feeds["dense_" + n] = np.asarray([fz[n][i] for i in idx], dtype=np.float32).reshape(-1, 1)
            continue
        bags = [fz[n][i] for i in idx]
        if single[n]:
            feeds["idx_" + n] = np.asarray([b[0] for b in bags], dtype=np.int64)
            continue
        L = max(1, max(len(b) for b in bags))
        ix = np.zeros((len(bags), L), dtype=np.int64)
        mk = np.zeros((len(bags), L, 1), dtype=np.float32)
        for i, b in enumerate(bags):
            ix[i, :len(b)] = b
            mk[i, :len(b), 0] = 1
        feeds["idx_" + n], feeds["mask_" + n] = ix, mk
        if f["pooling"] == "mean":
            feeds["cnt_" + n] = np.maximum(1, np.asarray([len(b) for b in bags], dtype=np.float32)).reshape(-1, 1)
    return feeds


def session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def parity(a):
    B = Bundle(a.model, a.tables)
    fz, n = B.featurize(a.data, a.rows)
    single = json.load(open(os.path.join(a.dir, "single.json")))
    x0 = B.x0(fz, n)
    tmp = tempfile.mkdtemp(prefix="rk_ort_")
    x0.tofile(os.path.join(tmp, "x0.f32"))
    subprocess.run([a.roofline, "tower-dump", a.model, os.path.join(tmp, "x0.f32"), str(n), os.path.join(tmp, "logit.f32")],
                   check=True)
    logit = np.fromfile(os.path.join(tmp, "logit.f32"), dtype=np.float32).astype(np.float64)
    rk_tower = 1.0 / (1.0 + np.exp(-logit))
    ort_tower = session(os.path.join(a.dir, "tower.onnx")).run(["pctr"], {"x0": x0})[0][:, 0]
    with open(a.data) as fh, open(os.path.join(tmp, "rows.tsv"), "w") as o:
        for i, line in enumerate(fh):
            if i > n:
                break
            o.write(line)
    subprocess.run([a.rank, "score", "--model", a.model, "--input", os.path.join(tmp, "rows.tsv"), "--output",
                    os.path.join(tmp, "scores.tsv")], check=True, stdout=subprocess.DEVNULL)
    rk_graph = np.loadtxt(os.path.join(tmp, "scores.tsv"), skiprows=1, dtype=np.float64).reshape(-1)
    ort_graph = session(os.path.join(a.dir, "graph.onnx")).run(["pctr"], graph_inputs(B, fz, list(range(n)), single))[0][:, 0]
    dt, dg = float(np.max(np.abs(rk_tower - ort_tower))), float(np.max(np.abs(rk_graph - ort_graph)))
    print("ort_bench parity: %d rows, max |pCTR diff| tower %.3g, whole graph (rank score vs ORT) %.3g" % (n, dt, dg))
    if not (dt <= 1e-6 and dg <= 1e-6):
        sys.exit("ort_bench: the ONNX export does not score as rankd does (> 1e-6)")


def timeit(fn, seconds):
    for _ in range(3):
        fn()
    n, w0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        n += 1
        w = time.perf_counter() - w0
        if w >= seconds or n >= 1000000:
            break
    return n, w, time.process_time() - c0


def time_cmd(a):
    B = Bundle(a.model, a.tables)
    fz, n = B.featurize(a.data, a.batch)
    single = json.load(open(os.path.join(a.dir, "single.json")))
    idx = [i % n for i in range(a.batch)]
    feeds = graph_inputs(B, fz, idx, single)
    x0 = B.x0(fz, n)[np.asarray(idx)]
    res = {"batch": a.batch}
    for name, path, fd in (("tower", "tower.onnx", {"x0": x0}), ("graph", "graph.onnx", feeds)):
        s = session(os.path.join(a.dir, path))
        k, w, c = timeit(lambda: s.run(["pctr"], fd), a.seconds)
        res[name] = {"runs": k, "wall_s": w, "cpu_s": c, "candidates_per_s": k * a.batch / w,
                     "candidates_per_cpu_s": k * a.batch / c if c > 0 else 0}
    import onnxruntime
    res["onnxruntime"] = onnxruntime.__version__
    json.dump(res, open(a.json, "w"), indent=1)
    print("ort_bench time B=%d: tower %.0f cand/s (%.0f per CPU-s), whole graph %.0f cand/s (%.0f per CPU-s)" %
          (a.batch, res["tower"]["candidates_per_s"], res["tower"]["candidates_per_cpu_s"],
           res["graph"]["candidates_per_s"], res["graph"]["candidates_per_cpu_s"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["export", "parity", "time"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tables", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out")
    ap.add_argument("--dir")
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--roofline")
    ap.add_argument("--rank")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    {"export": export, "parity": parity, "time": time_cmd}[a.cmd](a)


if __name__ == "__main__":
    main()
