#!/usr/bin/env python3
"""bench/ref/embsum_torch.py — PyTorch implementation of rankd's EmbSum (rank/embsum.c),
run (f) of `make bench-embsum`: same inputs, same model, same hyper-parameters.

    /usr/bin/python3 bench/ref/embsum_torch.py --dump DUMP.safetensors --out RESULT.json \
        [--m 4 --k 4 --dc 32 --epochs 3 --batch 32 --lr 1e-3 --negatives 4 --nce-scale 10 \
         --max-pos 64 --pool softmax --tau 1 --session-pool mean --seed 1]

Inputs: the file `rank embsum train --dump` writes: the encoder's item token states (row-normalized),
session vectors of every split (first-token and mean pooling), training positives, evaluation
impressions (positives + 4 sampled negatives each, the very rows the C run scores).

Model (papers.md §4(b), §6.6), batched with padding masks:
  gvec = Wg mean(sessions) + bg;  H_u = [sessions; gvec]
  UPE = softmax(Cu tanh(H_u Wau)^T) H_u Pu^T;   CPE = softmax(Ci tanh(T Wai)^T) T
  y = sum(softmax(vec S / tau) * vec S), S = UPE CPE^T;   L = -log softmax(nce_scale * y)_0
Initialisation as in C (Pu = Wg = I, bg = 0, codes N(0, 1/dc), attention maps N(0, 1/d)) from
torch's generator; negatives sampled per epoch uniformly among items the user never rated (its own
seeded RNG, not C's stream). Evaluation: MIND's AUC / MRR / nDCG@5 / nDCG@10 averaged over impressions.
Cost: UPE users/s over the test histories and CPE items/s over all items, batched, one thread.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "ref"))
from safetensors_io import read_safetensors  # noqa: E402

EVAL_NEG = 4


def poly(H, mask, C, Wa):
    """H [B,n,d], mask [B,n] bool, C [m,dc], Wa [d,dc] -> [B,m,d]."""
    Z = torch.tanh(H @ Wa)                              # [B,n,dc]
    L = torch.einsum("md,bnd->bmn", C, Z)
    L = L.masked_fill(~mask[:, None, :], float("-inf"))
    return torch.softmax(L, dim=-1) @ H


def match(U, V, pool, tau):
    """U [B,m,d], V [B,m2,d] -> [B]."""
    S = (U @ V.transpose(1, 2)).flatten(1)
    if pool == "max":
        return S.max(dim=1).values
    if pool == "mean":
        return S.mean(dim=1)
    return (torch.softmax(S / tau, dim=1) * S).sum(dim=1)


class Data:
    def __init__(self, path, session_pool):
        t, _ = read_safetensors(path)
        self.tok = torch.from_numpy(t["tok"].copy())
        self.tok_off = t["tok_off"]
        self.rated_off, self.rated = t["rated_off"], t["rated"]
        self.n_items = len(self.tok_off) - 1
        self.d = self.tok.shape[1]
        self.sp = []
        for s in range(3):
            self.sp.append({
                "sess": torch.from_numpy(t["s%d.%s" % (s, session_pool)].copy()),
                "sess_off": t["s%d.sess_off" % s], "pos_off": t["s%d.pos_off" % s], "pos": t["s%d.pos" % s],
                "neg": t.get("s%d.neg" % s)})
        self.n_users = len(self.rated_off) - 1
        self.summary = torch.from_numpy(t["summary"].copy()) if "summary" in t else None
        self.has_summary = t.get("has_summary")
        ntok = np.diff(self.tok_off)
        self.T = int(ntok.max())
        # padded token states of every item: [n_items, T, d] + mask
        self.items = torch.zeros(self.n_items, self.T, self.d)
        self.imask = torch.zeros(self.n_items, self.T, dtype=torch.bool)
        for i in range(self.n_items):
            a, b = self.tok_off[i], self.tok_off[i + 1]
            self.items[i, :b - a] = self.tok[a:b]
            self.imask[i, :b - a] = True

    def sessions(self, s, users, g):
        sp = self.sp[s]
        B = len(users)
        H = torch.zeros(B, g, self.d)
        M = torch.zeros(B, g, dtype=torch.bool)
        for j, u in enumerate(users):
            a, b = sp["sess_off"][u], sp["sess_off"][u + 1]
            H[j, :b - a] = sp["sess"][a:b]
            M[j, :b - a] = True
        return H, M


class Model(torch.nn.Module):
    def __init__(self, a, d, gen):
        super().__init__()
        rn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
        self.Cu = torch.nn.Parameter(rn(a.m, a.dc) / a.dc ** 0.5)
        self.Wau = torch.nn.Parameter(rn(d, a.dc) / d ** 0.5)
        self.Ci = torch.nn.Parameter(rn(a.k, a.dc) / a.dc ** 0.5)
        self.Wai = torch.nn.Parameter(rn(d, a.dc) / d ** 0.5)
        self.Pu = torch.nn.Parameter(torch.eye(d))
        self.Wg = torch.nn.Parameter(torch.eye(d))
        self.bg = torch.nn.Parameter(torch.zeros(d))
        self.a = a

    def upe(self, H, M):
        """H [B,g,d] sessions, M mask -> UPE [B,m,d], global vector [B,d]."""
        mean = (H * M[..., None]).sum(1) / M.sum(1, keepdim=True).clamp(min=1)
        gvec = mean @ self.Wg.T + self.bg
        Hu = torch.cat([H, gvec[:, None]], 1)
        Mu = torch.cat([M, torch.ones(len(H), 1, dtype=torch.bool)], 1)
        return poly(Hu, Mu, self.Cu, self.Wau) @ self.Pu.T, gvec

    def cpe(self, T, M):
        return poly(T, M, self.Ci, self.Wai)


def sample_neg(data, u, rng, taken):
    rated = data.rated[data.rated_off[u]:data.rated_off[u + 1]]
    while True:
        it = int(rng.integers(data.n_items))
        if it in taken:
            continue
        j = np.searchsorted(rated, it)
        if j < len(rated) and rated[j] == it:
            continue
        return it


def epoch_examples(data, a, rng):
    sp = data.sp[0]
    ex = []
    for u in range(data.n_users):
        pos = sp["pos"][sp["pos_off"][u]:sp["pos_off"][u + 1]]
        if len(pos) > a.max_pos:
            pos = rng.choice(pos, a.max_pos, replace=False)
        ex += [(u, int(p)) for p in pos]
    rng.shuffle(ex)
    return ex


def mind_metrics(y, lab):
    order = np.argsort(-y, kind="stable")
    ys, ls = y[order], lab[order]
    np_, nn_ = int(lab.sum()), int(len(lab) - lab.sum())
    # AUC with ties half
    yp, yn = y[lab == 1][:, None], y[lab == 0][None, :]
    auc = ((yp > yn).sum() + 0.5 * (yp == yn).sum()) / (np_ * nn_) if np_ and nn_ else 0.5
    ranks = np.arange(1, len(y) + 1)
    mrr = (ls / ranks).sum() / max(np_, 1)
    out = []
    for k in (5, 10):
        disc = 1 / np.log2(ranks[:k] + 1)
        dcg = (ls[:k] * disc).sum()
        idcg = disc[:min(np_, k)].sum()
        out.append(dcg / idcg if idcg > 0 else 0)
    del ys
    return auc, mrr, out[0], out[1]


@torch.no_grad()
def evaluate(model, data, s, a):
    sp = data.sp[s]
    users = [u for u in range(data.n_users) if sp["pos_off"][u + 1] > sp["pos_off"][u]]
    H, M = data.sessions(s, users, a.g)
    U, _ = model.upe(H, M)
    V = torch.cat([model.cpe(data.items[i:i + 512], data.imask[i:i + 512]) for i in range(0, data.n_items, 512)])
    res = []
    for j, u in enumerate(users):
        pos = sp["pos"][sp["pos_off"][u]:sp["pos_off"][u + 1]]
        neg = sp["neg"][sp["pos_off"][u] * EVAL_NEG:sp["pos_off"][u + 1] * EVAL_NEG]
        cand = np.concatenate([pos, neg])
        y = match(U[j:j + 1].expand(len(cand), -1, -1), V[cand], a.pool, a.tau).numpy()
        lab = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
        res.append(mind_metrics(y.astype(np.float64), lab))
    r = np.array(res)
    return {"impressions": len(users), "auc": r[:, 0].mean(), "mrr": r[:, 1].mean(), "ndcg5": r[:, 2].mean(),
            "ndcg10": r[:, 3].mean()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--out", required=True)
    for n, v in (("m", 4), ("k", 4), ("dc", 32), ("g", 4), ("epochs", 3), ("batch", 32), ("negatives", 4),
                 ("max-pos", 64), ("seed", 1)):
        ap.add_argument("--" + n, type=int, default=v)
    for n, v in (("lr", 1e-3), ("nce-scale", 10.0), ("tau", 1.0), ("lambda", 0.0)):
        ap.add_argument("--" + n, type=float, default=v)
    ap.add_argument("--pool", default="softmax")
    ap.add_argument("--session-pool", default="mean")
    a = ap.parse_args()
    a.max_pos, a.nce_scale, a.session_pool = a.max_pos, a.nce_scale, a.session_pool
    torch.set_num_threads(1)
    data = Data(a.dump, a.session_pool)
    gen = torch.Generator().manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    model = Model(a, data.d, gen)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    t0 = time.time()
    n_ex = 0
    for ep in range(a.epochs):
        ex = epoch_examples(data, a, rng)
        tot = 0.0
        for b0 in range(0, len(ex), a.batch):
            batch = ex[b0:b0 + a.batch]
            users = [u for u, _ in batch]
            cand = []
            for u, p in batch:
                taken = [p]
                for _ in range(a.negatives):
                    taken.append(sample_neg(data, u, rng, taken))
                cand.append(taken)
            cand = torch.tensor(cand)
            H, M = data.sessions(0, users, a.g)
            U, gvec = model.upe(H, M)
            C1 = a.negatives + 1
            V = model.cpe(data.items[cand.flatten()], data.imask[cand.flatten()]).view(len(batch), C1, a.k, -1)
            y = match(U[:, None].expand(-1, C1, -1, -1).reshape(len(batch) * C1, a.m, -1),
                      V.reshape(len(batch) * C1, a.k, -1), a.pool, a.tau).view(len(batch), C1)
            loss = -torch.log_softmax(a.nce_scale * y, dim=1)[:, 0]
            if a.__dict__["lambda"] > 0 and data.summary is not None:
                us = torch.tensor(users)
                has = torch.from_numpy(data.has_summary[us].astype(bool))
                cos = torch.nn.functional.cosine_similarity(gvec, data.summary[us], dim=1)
                loss = loss + a.__dict__["lambda"] * (1 - cos) * has
            loss = loss.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * len(batch)
        n_ex += len(ex)
        print("torch epoch %d/%d loss %.4f (%d examples, %.1f s)" % (ep + 1, a.epochs, tot / max(len(ex), 1),
                                                                    len(ex), time.time() - t0), file=sys.stderr)
    train_s = time.time() - t0
    model.eval()
    res = {"train_s": train_s, "examples_per_s": n_ex / train_s, "valid": evaluate(model, data, 1, a),
           "test": evaluate(model, data, 2, a)}
    # cost: UPE over every user's test history, CPE over every item, batched
    with torch.no_grad():
        users = [u for u in range(data.n_users) if data.sp[2]["sess_off"][u + 1] > data.sp[2]["sess_off"][u]]
        H, M = data.sessions(2, users, a.g)
        t = time.time()
        for b in range(0, len(users), 256):
            model.upe(H[b:b + 256], M[b:b + 256])
        res["upe_users_per_s"] = len(users) / (time.time() - t)
        t = time.time()
        for i in range(0, data.n_items, 256):
            model.cpe(data.items[i:i + 256], data.imask[i:i + 256])
        res["cpe_items_per_s"] = data.n_items / (time.time() - t)
    res["torch"] = torch.__version__
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print("torch: valid auc %.4f test auc %.4f ndcg10 %.4f upe_users_per_s %.0f cpe_items_per_s %.0f" % (
        res["valid"]["auc"], res["test"]["auc"], res["test"]["ndcg10"], res["upe_users_per_s"],
        res["cpe_items_per_s"]), file=sys.stderr)


if __name__ == "__main__":
    main()
