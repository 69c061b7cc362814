#!/usr/bin/env python3
"""Reference values for CETNet fusion and its collaborative loss (rank/fusion.c).

Run from anywhere with Debian's PyTorch:  /usr/bin/python3 tests/ref/gen_cetnet_ref.py
Writes tests/fixtures/cetnet_ref.safetensors (float32), deterministic.

Formulas (papers.md §5(b), §6.4), computed in float64 with autograd:
  q_i  = clamp(sigmoid(z_i), 1e-7, 1 - 1e-7)
  conf = q ln q + (1 - q) ln(1 - q);  w = softmax(conf / tau)   (mean fusion: w = 1/M)
  p    = sum_i w_i q_i
  L    = a * BCE(clamp(p), y) + b * sum_i BCE_logits(z_i, y)
         + lambda * sum_i BCE_logits(z_i, p.detach())
Gradients of L with respect to z_i and to log(tau).

Per case c the fixture holds row c of:
  case.z [C, 3] (members beyond M are ignored), case.params [C, 8] =
  (M, y, tau, lambda, a, b, fusion (0 confidence, 1 mean), unused),
  case.loss [C], case.dz [C, 3], case.dlog_tau [C], case.p [C], case.w [C, 3].
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                                    "cetnet_ref.safetensors"))
EPS = 1e-7


def case(z, y, tau, lam, a, b, fusion):
    M = len(z)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    lt = torch.tensor(np.log(tau), dtype=torch.float64, requires_grad=True)
    q = torch.clamp(torch.sigmoid(zt), EPS, 1 - EPS)
    if fusion == 0:
        conf = q * torch.log(q) + (1 - q) * torch.log(1 - q)
        w = torch.softmax(conf / torch.exp(lt), dim=0)
    else:
        w = torch.full((M,), 1.0 / M, dtype=torch.float64)
    p = (w * q).sum()
    pc = torch.clamp(p, EPS, 1 - EPS)
    yt = torch.tensor(float(y), dtype=torch.float64)
    fused = -(yt * torch.log(pc) + (1 - yt) * torch.log(1 - pc))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    members = sum(bce(zt[i], yt) for i in range(M))
    pull = sum(bce(zt[i], p.detach()) for i in range(M))
    L = a * fused + b * members + lam * pull
    L.backward()
    pad = lambda v: list(v) + [0.0] * (3 - len(v))  # noqa: E731
    return dict(z=pad(z), params=[M, y, tau, lam, a, b, fusion, 0], loss=L.item(),
                dz=pad(zt.grad.tolist()), dlog_tau=(lt.grad.item() if lt.grad is not None else 0.0),
                p=p.item(), w=pad(w.tolist()))


rng = np.random.default_rng(20261129)
cases = [
    case([0.3], 1, 1.0, 0.5, 1.0, 1.0, 0),                    # one member
    case([-4.59512, 0.0], 0, 1.0, 0.5, 1.0, 1.0, 0),          # p = (0.01, 0.5): papers.md §6.4 vector
    case([2.0, 2.0, 2.0], 1, 1.0, 0.5, 1.0, 1.0, 0),          # equal members
    case([1.5, -0.7, 0.2], 0, 0.3, 0.5, 1.0, 1.0, 0),         # small tau
    case([1.5, -0.7, 0.2], 1, 5.0, 0.0, 1.0, 1.0, 0),         # lambda 0
    case([1.5, -0.7, 0.2], 1, 1.0, 2.0, 0.5, 0.25, 0),        # other weights
    case([1.5, -0.7, 0.2], 0, 1.0, 0.5, 1.0, 1.0, 1),         # mean fusion
    case([30.0, -30.0, 0.5], 1, 1.0, 0.5, 1.0, 1.0, 0),       # saturated members (clamped)
]
for _ in range(8):
    M = int(rng.integers(1, 4))
    z = rng.normal(0, 2, M).round(4).tolist()
    cases.append(case(z, int(rng.integers(0, 2)), float(rng.choice([0.2, 1.0, 3.0])),
                      float(rng.choice([0.0, 0.5, 1.0])), 1.0, 1.0, int(rng.integers(0, 2))))

tensors = {k: np.array([c[k] for c in cases], dtype=np.float32)
           for k in ("z", "params", "loss", "dz", "dlog_tau", "p", "w")}
tensors = {"case." + k: v for k, v in tensors.items()}
n = write_safetensors(OUT, tensors, {"generator": "tests/ref/gen_cetnet_ref.py", "torch": torch.__version__})
print("wrote %s: %d cases, %d bytes" % (OUT, len(cases), n), file=sys.stderr)
