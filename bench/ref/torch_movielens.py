#!/usr/bin/env python3
"""PyTorch reference for `rank train` on the MovieLens CTR split.

Trains the model a rankd config describes, the way rank/train.c does, so the
C trainer's test AUC can be compared against an independent implementation
(bench/bench_train.sh runs both over several seeds and compares the means):

    /usr/bin/python3 bench/ref/torch_movielens.py --config configs/movielens_dcnv2.json \
        --data out/bench-train/ml --seed 1 [--tower dnn|dcnv2] [--json-out FILE]

(Debian: apt-get install python3-torch python3-numpy python3-xxhash; written
against torch 1.13.)

What is the same as the C code, and where it lives there:
  featurization  rank/dataset.c + core/base.c rk_feature_row:
                 row = xxh64(feature name + "\\x1f" + value, seed 0) % table_size;
                 multi-valued fields split on '|', empty tokens skipped,
                 max_values keeps the first N; dense (x [log1p] - mean) / std,
                 mean/std over the train file's non-empty values (population
                 std, 1 if the variance is <= 1e-12), missing -> 0.
  architecture   rank/model.c: x0 = pooled EmbeddingBag (sum/mean) of each
                 sparse feature, dense features as their own columns, config
                 order; DCNv2 cross layers x_{l+1} = x0 * (W_l x_l + b_l) + x_l;
                 MLP Linear+ReLU; out Linear -> 1; BCE with logits, mean.
  init           nn.Linear default (U(+-1/sqrt(fan_in)) for W and b, which is
                 what rk_model_create draws); embeddings N(0, init_std_embed).
                 The random numbers themselves differ (different generators).
  optimizers     rank/train.c: Adam on every dense parameter (lr_dense, betas,
                 eps); Adagrad on the embedding tables with sparse gradients
                 (lr_embed, eps = adagrad_eps), i.e. only touched rows update.
  loop           batch_size, the training rows reshuffled every epoch (the
                 last batch may be short), early stopping on validation AUC
                 with `patience`, the best epoch's parameters kept, then test.
  metrics        AUC with ties (half credit), logloss with p clamped to
                 [1e-7, 1 - 1e-7], both in float64.
  threads        torch.set_num_threads(2), like train.threads = 2.

Prints one line per epoch (valid AUC) and the final valid/test metrics;
--json-out writes them with train_examples_per_s (examples over the time spent
in training steps, evaluation excluded, as rank/train.c measures it).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import xxhash


# ---------------------------------------------------------------- config

def load_config(path, tower_override=None):
    """The subset of rank/config.c this script needs, with the same defaults."""
    with open(path) as f:
        c = json.load(f)
    tw = c.get("tower", {})
    ttype = tw.get("type", "dcnv2")
    n_cross = 0 if ttype == "dnn" else int(tw.get("cross_layers", 2))
    hidden = list(tw.get("hidden", [256, 128]))
    if tower_override == "dnn":
        ttype, n_cross = "dnn", 0
    elif tower_override == "dcnv2":
        ttype = "dcnv2"
        if n_cross == 0:
            n_cross = 2
    t = {"seed": 1, "batch_size": 256, "max_epochs": 10, "patience": 2, "lr_dense": 1e-3,
         "lr_embed": 0.05, "adam_b1": 0.9, "adam_b2": 0.999, "adam_eps": 1e-8,
         "adagrad_eps": 1e-10, "init_std_embed": 0.05, "threads": 2,
         "zero_unseen_rows": True}
    t.update(c.get("train", {}))
    feats = []
    for fo in c["features"]:
        f = {"name": fo["name"], "column": fo.get("column", fo["name"]),
             "kind": fo.get("kind", "sparse")}
        if f["kind"] == "sparse":
            f["table_size"] = int(fo["table_size"])
            f["dim"] = int(fo.get("dim", 16))
            f["pool"] = fo.get("pooling", "sum")
            f["max_values"] = int(fo.get("max_values", 0))
        else:
            f["log1p"] = bool(fo.get("log1p", False))
        feats.append(f)
    return {"label": c.get("label_column", "label"), "features": feats,
            "tower": {"type": ttype, "n_cross": n_cross, "hidden": hidden}, "train": t}


# ---------------------------------------------------------------- data

def read_tsv(path):
    with open(path, newline="") as f:
        lines = f.read().split("\n")
    header = lines[0].rstrip("\r").split("\t")
    rows = [ln.rstrip("\r").split("\t") for ln in lines[1:] if ln.rstrip("\r")]
    for i, r in enumerate(rows):
        if len(r) != len(header):
            sys.exit(f"{path} row {i + 2}: {len(r)} fields, the header has {len(header)}")
    return header, rows


def dense_stats(cfg, path):
    """rk_dataset_fit_dense: mean and population std over non-empty values."""
    header, rows = read_tsv(path)
    stats = {}
    for f in cfg["features"]:
        if f["kind"] != "dense":
            continue
        ci = header.index(f["column"])
        s = sq = 0.0
        n = 0
        for r in rows:
            v = r[ci]
            if not v:
                continue
            x = float(v)
            if f["log1p"]:
                x = math.log1p(x)
            s += x
            sq += x * x
            n += 1
        if n == 0:
            stats[f["name"]] = (0.0, 1.0)
            continue
        mean = s / n
        var = sq / n - mean * mean
        stats[f["name"]] = (mean, math.sqrt(var) if var > 1e-12 else 1.0)
    return stats


class Featurized:
    """A TSV featurized for the model: per sparse feature a flat int64 array of
    hashed rows plus per-example start/length; dense as float32 [N, n_dense]."""

    def __init__(self, cfg, path, stats, cache):
        header, rows = read_tsv(path)
        self.n = len(rows)
        li = header.index(cfg["label"])
        lab = []
        for r in rows:
            v = r[li]
            if v in ("1", "1.0"):
                lab.append(1.0)
            elif v in ("0", "0.0"):
                lab.append(0.0)
            else:
                sys.exit(f"{path}: label '{v}' is not 0 or 1")
        self.labels = np.asarray(lab, dtype=np.float32)
        self.sparse = []  # (flat int64, start int64 [N], length int64 [N])
        dense_cols = []
        for f in cfg["features"]:
            ci = header.index(f["column"])
            if f["kind"] == "dense":
                mean, std = stats[f["name"]]
                col = np.zeros(self.n, dtype=np.float32)
                for i, r in enumerate(rows):
                    v = r[ci]
                    if v:
                        x = float(v)
                        if f["log1p"]:
                            x = math.log1p(x)
                        col[i] = np.float32((x - mean) / std)
                dense_cols.append(col)
                continue
            name, ts, mv = f["name"], f["table_size"], f["max_values"]
            pre = (name + "\x1f").encode()
            memo = cache.setdefault(name, {})
            flat, lens = [], np.zeros(self.n, dtype=np.int64)
            for i, r in enumerate(rows):
                k = 0
                for tok in r[ci].split("|"):
                    if mv and k >= mv:
                        break
                    if not tok:
                        continue
                    h = memo.get(tok)
                    if h is None:
                        h = xxhash.xxh64_intdigest(pre + tok.encode(), seed=0) % ts
                        memo[tok] = h
                    flat.append(h)
                    k += 1
                lens[i] = k
            start = np.zeros(self.n, dtype=np.int64)
            np.cumsum(lens[:-1], out=start[1:])
            self.sparse.append((np.asarray(flat, dtype=np.int64), start, lens))
        self.dense = (np.stack(dense_cols, axis=1) if dense_cols
                      else np.zeros((self.n, 0), dtype=np.float32))

    def batch(self, idx):
        """Tensors for rows idx: per sparse feature (input, offsets) for
        nn.EmbeddingBag, the dense matrix and the labels."""
        bags = []
        for flat, start, lens in self.sparse:
            ln = lens[idx]
            offs = np.zeros(len(idx), dtype=np.int64)
            np.cumsum(ln[:-1], out=offs[1:])
            tot = int(ln.sum())
            pos = np.arange(tot, dtype=np.int64) - np.repeat(offs, ln) + np.repeat(start[idx], ln)
            bags.append((torch.from_numpy(flat[pos]), torch.from_numpy(offs)))
        return bags, torch.from_numpy(self.dense[idx]), torch.from_numpy(self.labels[idx])


# ---------------------------------------------------------------- model

class Ranker(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.feats = cfg["features"]
        std = cfg["train"]["init_std_embed"]
        self.emb = nn.ModuleList()
        D = 0
        for f in self.feats:
            if f["kind"] == "sparse":
                e = nn.EmbeddingBag(f["table_size"], f["dim"], mode=f["pool"], sparse=True)
                nn.init.normal_(e.weight, 0.0, std)
                self.emb.append(e)
                D += f["dim"]
            else:
                D += 1
        self.D = D
        t = cfg["tower"]
        self.cross = nn.ModuleList([nn.Linear(D, D) for _ in range(t["n_cross"])])
        layers, prev = [], D
        for h in t["hidden"]:
            layers.append(nn.Linear(prev, h))
            prev = h
        self.mlp = nn.ModuleList(layers)
        self.out = nn.Linear(prev, 1)

    def forward(self, bags, dense):
        cols, si, di = [], 0, 0
        for f in self.feats:
            if f["kind"] == "sparse":
                inp, offs = bags[si]
                cols.append(self.emb[si](inp, offs))
                si += 1
            else:
                cols.append(dense[:, di:di + 1])
                di += 1
        x0 = torch.cat(cols, dim=1)
        x = x0
        for lin in self.cross:
            x = x0 * lin(x) + x
        for lin in self.mlp:
            x = F.relu(lin(x))
        return self.out(x).squeeze(1)


# ---------------------------------------------------------------- metrics

def auc_ties(score, label):
    """ROC AUC by the rank-sum (Mann-Whitney) formula with average ranks for
    tied scores, so ties get half credit. NaN when one class is missing."""
    score = np.asarray(score, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    n_pos = label.sum()
    n_neg = len(label) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s), dtype=np.float64)
    n = len(s)
    # average rank (1-based) over each run of equal scores
    bounds = np.flatnonzero(np.diff(s)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [n]])
    avg = (starts + ends + 1) / 2.0  # mean of (start+1 .. end)
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[label == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(p, label):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(label, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@torch.no_grad()
def evaluate(model, ds):
    model.eval()
    ps = []
    for r0 in range(0, ds.n, 4096):
        bags, dense, _ = ds.batch(np.arange(r0, min(ds.n, r0 + 4096)))
        ps.append(torch.sigmoid(model(bags, dense)).numpy())
    model.train()
    p = np.concatenate(ps)
    return {"n": ds.n, "auc": auc_ties(p, ds.labels), "logloss": logloss(p, ds.labels),
            "mean_pctr": float(p.astype(np.float64).mean()),
            "base_rate": float(ds.labels.astype(np.float64).mean())}


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True, help="directory with train/valid/test.tsv from 'rank data'")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--tower", choices=["dnn", "dcnv2"], default=None)
    ap.add_argument("--epochs", type=int, default=None, help="override train.max_epochs")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()

    cfg = load_config(a.config, a.tower)
    tc = cfg["train"]
    if a.seed is not None:
        tc["seed"] = a.seed
    if a.epochs:
        tc["max_epochs"] = a.epochs
    seed = int(tc["seed"])
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    rng = np.random.Generator(np.random.PCG64(seed ^ 0x5EED))

    t0 = time.time()
    stats = dense_stats(cfg, os.path.join(a.data, "train.tsv"))
    cache = {}
    tr = Featurized(cfg, os.path.join(a.data, "train.tsv"), stats, cache)
    va = Featurized(cfg, os.path.join(a.data, "valid.tsv"), stats, cache)
    te_path = os.path.join(a.data, "test.tsv")
    te = Featurized(cfg, te_path, stats, cache) if os.path.exists(te_path) else None
    load_s = time.time() - t0

    model = Ranker(cfg)
    emb_params = [p for e in model.emb for p in e.parameters()]
    emb_ids = {id(p) for p in emb_params}
    dense_params = [p for p in model.parameters() if id(p) not in emb_ids]
    opt_d = torch.optim.Adam(dense_params, lr=tc["lr_dense"], betas=(tc["adam_b1"], tc["adam_b2"]),
                             eps=tc["adam_eps"])
    opt_e = torch.optim.Adagrad(emb_params, lr=tc["lr_embed"], eps=tc["adagrad_eps"]) if emb_params else None

    t = cfg["tower"]
    log = (lambda *x: None) if a.quiet else (lambda *x: print(*x, file=sys.stderr, flush=True))
    log(f"torch {torch.__version__}: tower={t['type']} cross={t['n_cross']} hidden={t['hidden']} D={model.D} "
        f"seed={seed} threads={torch.get_num_threads()} load={load_s:.1f}s")

    BS, N = int(tc["batch_size"]), tr.n
    best_auc, best_epoch, since, best_state, best_valid = -1.0, 0, 0, None, None
    train_time, train_examples, epochs_run, per_epoch = 0.0, 0, 0, []
    for epoch in range(1, int(tc["max_epochs"]) + 1):
        perm = rng.permutation(N)
        t1 = time.perf_counter()
        loss_sum = 0.0
        for b0 in range(0, N, BS):
            idx = perm[b0:b0 + BS]
            bags, dense, y = tr.batch(idx)
            logit = model(bags, dense)
            loss = F.binary_cross_entropy_with_logits(logit, y)
            opt_d.zero_grad(set_to_none=True)
            if opt_e:
                opt_e.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
            if opt_e:
                opt_e.step()
            loss_sum += float(loss) * len(idx)
        train_time += time.perf_counter() - t1
        train_examples += N
        epochs_run = epoch
        vm = evaluate(model, va)
        improved = not math.isnan(vm["auc"]) and vm["auc"] > best_auc
        per_epoch.append({"epoch": epoch, "train_logloss": loss_sum / N, "valid_auc": vm["auc"],
                          "valid_logloss": vm["logloss"]})
        log(f"epoch {epoch}: train_logloss={loss_sum / N:.5f} valid_auc={vm['auc']:.4f} "
            f"valid_logloss={vm['logloss']:.5f}{' (best)' if improved else ''}")
        if improved:
            best_auc, best_epoch, since, best_valid = vm["auc"], epoch, 0, vm
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= int(tc["patience"]):
                log(f"early stop: no valid AUC gain for {since} epochs; keeping epoch {best_epoch}")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    if tc.get("zero_unseen_rows", True):
        # as rk_train does: rows no training example hashes to keep no random init
        with torch.no_grad():
            for e, (flat, _, _) in zip(model.emb, tr.sparse):
                seen = torch.zeros(e.weight.shape[0], dtype=torch.bool)
                seen[torch.from_numpy(flat)] = True
                e.weight[~seen] = 0
    eps = train_examples / train_time if train_time > 0 else 0.0
    res = {"impl": "torch", "torch_version": torch.__version__, "config": a.config, "tower": t["type"],
           "seed": seed, "best_epoch": best_epoch, "epochs_run": epochs_run,
           "train_examples_per_s": eps, "valid": best_valid, "per_epoch": per_epoch}
    if te is not None:
        res["test"] = evaluate(model, te)
    print(f"torch {t['type']} seed={seed} best_epoch={best_epoch} train_examples_per_s={eps:.0f}")
    print(f"valid: auc={best_valid['auc']:.4f} logloss={best_valid['logloss']:.5f}")
    if te is not None:
        print(f"test: auc={res['test']['auc']:.4f} logloss={res['test']['logloss']:.5f}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
