#!/usr/bin/env python3
"""Reference values for EmbSum's poly-attention and matching (nn/poly.c).

Run with Debian's PyTorch:  /usr/bin/python3 tests/ref/gen_embsum_ref.py
Writes tests/fixtures/embsum_ref.safetensors (float32), deterministic.

Formulas (papers.md §4(b), §6.6), float64 with autograd:
  poly-attention  Z = tanh(H Wa); A = softmax_rows(C Z^T); E = A H
                  loss = sum(E * G) for a fixed random G  -> dH, dC, dWa
  matching        S = U V^T; y = sum(softmax(vec S / tau) * vec S) | max S | mean S
                  gradients of y -> dU, dV
Tensors: pa.H [5,8], pa.C [3,4], pa.Wa [8,4], pa.G [3,8], pa.E, pa.A, pa.dH, pa.dC, pa.dWa;
for pool p in (softmax, max, mean) and tau in (1, 0.5) (softmax only):
  mt.U [3,8], mt.V [2,8], mt.<case>.y [1], mt.<case>.dU, mt.<case>.dV.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                                    "embsum_ref.safetensors"))


def main():
    g = torch.Generator().manual_seed(12)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    t = {}
    H, C, Wa, G = rnd(5, 8), rnd(3, 4), rnd(8, 4) * 0.5, rnd(3, 8)
    for name, x in (("H", H), ("C", C), ("Wa", Wa), ("G", G)):
        t["pa." + name] = x
    H, C, Wa = (x.clone().requires_grad_(True) for x in (H, C, Wa))
    Z = torch.tanh(H @ Wa)
    A = torch.softmax(C @ Z.T, dim=1)
    E = A @ H
    (E * G).sum().backward()
    t.update({"pa.E": E.detach(), "pa.A": A.detach(), "pa.dH": H.grad, "pa.dC": C.grad, "pa.dWa": Wa.grad})

    U0, V0 = rnd(3, 8) * 0.7, rnd(2, 8) * 0.7
    t["mt.U"], t["mt.V"] = U0, V0
    for case, pool, tau in (("softmax1", "softmax", 1.0), ("softmax05", "softmax", 0.5), ("max", "max", 1.0),
                            ("mean", "mean", 1.0)):
        U, V = U0.clone().requires_grad_(True), V0.clone().requires_grad_(True)
        S = (U @ V.T).reshape(-1)
        if pool == "softmax":
            y = (torch.softmax(S / tau, dim=0) * S).sum()
        elif pool == "max":
            y = S.max()
        else:
            y = S.mean()
        y.backward()
        t["mt.%s.y" % case] = y.detach().reshape(1)
        t["mt.%s.dU" % case], t["mt.%s.dV" % case] = U.grad, V.grad
    arrs = {k: v.detach().numpy().astype("float32") for k, v in t.items()}
    n = write_safetensors(OUT, arrs, {"generator": "tests/ref/gen_embsum_ref.py", "torch": torch.__version__})
    print("wrote %s (%d bytes)" % (OUT, n))


if __name__ == "__main__":
    main()
