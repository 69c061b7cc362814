#!/usr/bin/env python3
"""Reference values for ExFM's student losses, auxiliary head and adapter (distill/loss.c).

Run from anywhere with Debian's PyTorch:  /usr/bin/python3 tests/ref/gen_exfm_ref.py
Writes tests/fixtures/exfm_ref.safetensors (float32), deterministic.

Formulas (papers.md §3(b), notation of distill/distill.h), by autograd in float64:
  -h(z, t) = BCE_with_logits(z, t)                               Eq. 1
  t_F = min(1, alpha * sigmoid(z_F))   (label scaling)           Eq. 4
  none: L = mean_i -h(z_s, y)
  kd:   L = mean_i [-h(z_s, y) - w h(z_s, t_F)]                  presumed Eq. 2
  ah:   L = mean_i [-h(z_s, y) - w h(z_D, t_F) - w_sa h(z_D, q)] Eq. 3-5, 7
  z_D = gs(h) a_w^T + a_b, gs(h) = beta h + (1 - beta) h.detach()  (gradient scaling:
        the backbone output h gets beta x the aux head's gradient, a_w the full one)
  rows whose teacher logit is NaN have no distillation term (the mean is still over n).
Student adapter (Eq. 6): z_SA = Linear(K,1)(relu(Linear(1,K)(z_F))), L_sta = mean over rows
with a teacher of BCE_with_logits(z_SA, y); one torch.optim.Adam step (lr 0.01); then
q = sigmoid(z_SA after the step).detach() is the adapter target of case 3.

Tensors: h [6,5], z_s [6], z_f [6] (row 4 NaN: no teacher), y [6], a_w [1,5], a_b [1];
adapter.* (initial), adapter_new.* (after the step), adapter.loss [1], adapter.grad [13]
(W1 | b1 | W2 | b2 flattened), q [6] (NaN at row 4);
case.params [4, 6] = (mode 0 none / 1 kd / 2 ah, w, alpha, beta, adapter, w_sa),
case.loss [4], case.dz_s [4, 6], case.dz_d [4, 6], case.dh [4, 6, 5], case.da_w [4, 5], case.da_b [4].
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                                    "exfm_ref.safetensors"))
N, H, K = 6, 5, 4
F = torch.float64


def bce(z, t):
    return torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none")


def main():
    g = np.random.default_rng(8)
    h = g.normal(0, 1, (N, H)).astype(np.float32)
    z_s = g.normal(0, 1.5, N).astype(np.float32)
    z_f = g.normal(0, 1.5, N).astype(np.float32)
    z_f[4] = np.nan
    y = np.array([1, 0, 1, 1, 0, 0], dtype=np.float32)
    a_w = g.normal(0, 0.5, (1, H)).astype(np.float32)
    a_b = np.array([0.1], dtype=np.float32)
    t = {"h": h, "z_s": z_s, "z_f": z_f, "y": y, "a_w": a_w, "a_b": a_b}

    # ---- adapter: one Adam step on rows with a teacher, then its output q
    ad = {"0.weight": g.uniform(-1, 1, (K, 1)), "0.bias": g.uniform(-1, 1, K),
          "2.weight": g.uniform(-0.5, 0.5, (1, K)), "2.bias": g.uniform(-0.5, 0.5, 1)}
    ad = {k: v.astype(np.float32) for k, v in ad.items()}
    net = torch.nn.Sequential(torch.nn.Linear(1, K), torch.nn.ReLU(), torch.nn.Linear(K, 1)).double()
    with torch.no_grad():
        for k, v in ad.items():
            net.state_dict()[k].copy_(torch.tensor(v, dtype=F))
    mask = ~np.isnan(z_f)
    xf = torch.tensor(z_f[mask], dtype=F).unsqueeze(1)
    yf = torch.tensor(y[mask], dtype=F)
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    loss_sta = bce(net(xf).squeeze(1), yf).mean()
    opt.zero_grad()
    loss_sta.backward()
    grad = np.concatenate([net.state_dict(keep_vars=True)[k].grad.numpy().ravel() for k in ad])
    opt.step()
    for k, v in ad.items():
        t["adapter." + k] = v
        t["adapter_new." + k] = net.state_dict()[k].numpy().astype(np.float32)
    t["adapter.loss"] = np.array([loss_sta.item()], dtype=np.float32)
    t["adapter.grad"] = grad.astype(np.float32)
    with torch.no_grad():
        zin = torch.tensor(np.nan_to_num(z_f, nan=0.0), dtype=F).unsqueeze(1)
        q = torch.sigmoid(net(zin).squeeze(1)).numpy()
    q[~mask] = np.nan
    t["q"] = q.astype(np.float32)

    # ---- losses
    cases = [(0, 1.0, 1.0, 1.0, 0, 1.0), (1, 0.5, 1.0, 1.0, 0, 1.0),
             (2, 2.0, 3.0, 0.25, 0, 1.0), (2, 1.0, 1.0, 4.0, 1, 0.7)]
    P, L, DZS, DZD, DH, DAW, DAB = [], [], [], [], [], [], []
    for mode, w, alpha, beta, adapter, w_sa in cases:
        ht = torch.tensor(h, dtype=F, requires_grad=True)
        zs = torch.tensor(z_s, dtype=F, requires_grad=True)
        aw = torch.tensor(a_w, dtype=F, requires_grad=True)
        ab = torch.tensor(a_b, dtype=F, requires_grad=True)
        yt = torch.tensor(y, dtype=F)
        m = torch.tensor(mask.astype(np.float64))
        tf = torch.clamp(alpha * torch.sigmoid(torch.tensor(np.nan_to_num(z_f), dtype=F)), max=1.0)
        gs = beta * ht + (1 - beta) * ht.detach()
        zd = (gs @ aw.t()).squeeze(1) + ab
        zd.retain_grad()
        per = bce(zs, yt)
        if mode == 1:
            per = per + w * m * bce(zs, tf)
        if mode == 2:
            per = per + w * m * bce(zd, tf)
            if adapter:
                qt = torch.tensor(np.nan_to_num(q), dtype=F)
                per = per + w_sa * m * bce(zd, qt)
        loss = per.mean()
        loss.backward()
        P.append([mode, w, alpha, beta, adapter, w_sa])
        L.append(loss.item())
        DZS.append(zs.grad.numpy())
        DZD.append(zd.grad.numpy() if mode == 2 else np.zeros(N))
        DH.append(ht.grad.numpy() if ht.grad is not None else np.zeros((N, H)))
        DAW.append(aw.grad.numpy().ravel() if aw.grad is not None else np.zeros(H))
        DAB.append(ab.grad.numpy()[0] if ab.grad is not None else 0.0)
    t["case.params"] = np.array(P, dtype=np.float32)
    t["case.loss"] = np.array(L, dtype=np.float32)
    t["case.dz_s"] = np.array(DZS, dtype=np.float32)
    t["case.dz_d"] = np.array(DZD, dtype=np.float32)
    t["case.dh"] = np.array(DH, dtype=np.float32)
    t["case.da_w"] = np.array(DAW, dtype=np.float32)
    t["case.da_b"] = np.array(DAB, dtype=np.float32)
    n = write_safetensors(OUT, t, {"source": "tests/ref/gen_exfm_ref.py", "torch": torch.__version__})
    print(f"wrote {OUT} ({n} bytes); -h(0,1) = {bce(torch.zeros(1, dtype=F), torch.ones(1, dtype=F)).item():.6f}")


if __name__ == "__main__":
    main()
