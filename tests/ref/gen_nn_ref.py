#!/usr/bin/env python3
"""PyTorch reference values for nn/ (checked by tests/test_nn.c).

Writes tests/fixtures/nn_ref.safetensors: the inputs and the expected outputs
and gradients of every op in nn/nn.h, computed by PyTorch autograd and
torch.optim. Re-run after changing an op's contract, then commit both files:

    /usr/bin/python3 tests/ref/gen_nn_ref.py          # from the repo root
    (Debian: apt-get install python3-torch python3-numpy; made with torch 1.13)

Determinism: inputs come from torch.manual_seed(SEED) on the CPU, so the same
torch version writes the same bytes. Inputs are drawn in float32 (what the C
code sees); the references are computed in float64 from those exact values
and rounded to float32 once, so the C test measures only its own error.

The safetensors file is written by a small writer below (no `safetensors`
package needed): u64 LE header length, JSON header padded with spaces to a
multiple of 8 bytes (so every F32 tensor is 4-byte aligned in a malloc'd
buffer), then raw little-endian float32 data in the header's (sorted) order.
Integer arrays (bag offsets, indices, Adagrad rows) are stored as F32, exact
for these small values. Hyperparameters travel in the file too
("adam.hparams" = [lr, beta1, beta2, eps], "adagrad.hparams" = [lr, eps]) so
the C test cannot drift from the values used here.

Tensor names (shapes with B=5, IN=7, OUT=3, D=6, d=4, ROWS=10):
  linear.{x,W,b,dy,y,dx,dW,db}          y = x W^T + b; grads of sum(y*dy)
  relu.{x,dy,y,dx}
  sigmoid.{z,y}
  cross.{x0,xl,W,b,dy,u,y,dx0,dxl,dW,db}  one DCN-V2 layer, x0 and xl distinct
  cross2.{x0,W1,b1,W2,b2,dy,y,dx0,dW1,db1,dW2,db2}
                                        x1 = cross(x0,x0), y = cross(x0,x1)
  bag.{table,offsets,idx,dout}          offsets has B+1 entries (last = len)
  bag.{sum,mean}.{out,dtable}
  bce.{z,y,loss,dz}                     loss: [1], mean reduction
  adam.{hparams,p0,g,p,m,v}             g,p: [STEPS,...] grad fed / param after
                                        each step; m,v: state after the last
  adagrad.{hparams,p0,g,rows,p,s}       g: [STEPS,ROWS,d] dense (zero outside
                                        rows[t]); p: after each step; s: final
"""
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402
import torch.nn.functional as F

SEED = 20260401
B, IN, OUT, D, d, ROWS = 5, 7, 3, 6, 4, 10
STEPS = 3
OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                        "nn_ref.safetensors")

torch.manual_seed(SEED)
tensors = {}


def put(name, t):
    a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    tensors[name] = np.ascontiguousarray(a, dtype=np.float32)


def randn(*shape):
    """float32 draw, returned as a float64 leaf holding the same values."""
    return torch.randn(*shape, dtype=torch.float32).double().requires_grad_(True)


# ------------------------------------------------------------------ linear
x, W, b = randn(B, IN), randn(OUT, IN), randn(OUT)
dy = randn(B, OUT).detach()
y = F.linear(x, W, b)
y.backward(dy)
for k, v in dict(x=x, W=W, b=b, dy=dy, y=y, dx=x.grad, dW=W.grad, db=b.grad).items():
    put("linear." + k, v)

# ------------------------------------------------------------------ relu
x = randn(B, IN)
dy = randn(B, IN).detach()
y = torch.relu(x)
y.backward(dy)
for k, v in dict(x=x, dy=dy, y=y, dx=x.grad).items():
    put("relu." + k, v)


# ------------------------------------------------------------------ sigmoid
# Saturating inputs: a naive 1/(1+exp(-z)) overflows exp for z << 0 in float.
z = torch.tensor([-1000.0, -100.0, -30.0, -1.5, 0.0, 0.25, 3.0, 30.0, 100.0, 1000.0],
                 dtype=torch.float64)
put("sigmoid.z", z)
put("sigmoid.y", torch.sigmoid(z))

# ------------------------------------------------------------------ DCN-V2 cross
def cross(x0, xl, W, b):
    """DCN-V2 (Wang et al. 2021) eq. 1: x_{l+1} = x0 * (W x_l + b) + x_l."""
    u = F.linear(xl, W, b)
    return x0 * u + xl, u


x0, xl, W, b = randn(B, D), randn(B, D), randn(D, D) * 0.5, randn(D)
W = W.detach().requires_grad_(True)
dy = randn(B, D).detach()
y, u = cross(x0, xl, W, b)
y.backward(dy)
for k, v in dict(x0=x0, xl=xl, W=W, b=b, dy=dy, u=u, y=y, dx0=x0.grad, dxl=xl.grad, dW=W.grad,
                 db=b.grad).items():
    put("cross." + k, v)

x0 = randn(B, D)
W1, b1, W2, b2 = randn(D, D), randn(D), randn(D, D), randn(D)
dy = randn(B, D).detach()
x1, _ = cross(x0, x0, W1, b1)
y, _ = cross(x0, x1, W2, b2)
y.backward(dy)
for k, v in dict(x0=x0, W1=W1, b1=b1, W2=W2, b2=b2, dy=dy, y=y, dx0=x0.grad, dW1=W1.grad,
                 db1=b1.grad, dW2=W2.grad, db2=b2.grad).items():
    put("cross2." + k, v)

# ------------------------------------------------------------------ embedding bag
# Bag 1 and bag 4 are empty (bag 4 is the last one, whose end is len(idx));
# rows 1, 3 and 7 repeat, within a bag and across bags.
offsets = torch.tensor([0, 3, 3, 5, 9, 9], dtype=torch.long)
idx = torch.tensor([1, 7, 1, 3, 3, 0, 9, 2, 7], dtype=torch.long)
table = randn(ROWS, d)
dout = randn(B, d).detach()
put("bag.table", table)
put("bag.offsets", offsets)
put("bag.idx", idx)
put("bag.dout", dout)
for mode in ("sum", "mean"):
    t = table.detach().clone().requires_grad_(True)
    out = F.embedding_bag(idx, t, offsets, mode=mode, include_last_offset=True)
    out.backward(dout)
    put("bag.%s.out" % mode, out)
    put("bag.%s.dtable" % mode, t.grad)

# ------------------------------------------------------------------ BCE with logits
z = torch.tensor([30.0, -30.0, 30.0, -30.0, 0.0, 0.7, -2.5, 4.0, 1e-3], dtype=torch.float64)
yl = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.3, 0.5], dtype=torch.float64)
z.requires_grad_(True)
loss = F.binary_cross_entropy_with_logits(z, yl, reduction="mean")
loss.backward()
put("bce.z", z)
put("bce.y", yl)
put("bce.loss", loss.reshape(1))
put("bce.dz", z.grad)

# ------------------------------------------------------------------ Adam
ADAM_LR, ADAM_B1, ADAM_B2, ADAM_EPS = 0.01, 0.9, 0.999, 1e-8  # torch defaults except lr
p = torch.randn(3, 4, dtype=torch.float32).double().requires_grad_(True)
g = torch.randn(STEPS, 3, 4, dtype=torch.float32).double()
g[1, 0, 0] = 0.0  # a zero gradient still moves p through the momentum
put("adam.hparams", [ADAM_LR, ADAM_B1, ADAM_B2, ADAM_EPS])
put("adam.p0", p)
put("adam.g", g)
opt = torch.optim.Adam([p], lr=ADAM_LR, betas=(ADAM_B1, ADAM_B2), eps=ADAM_EPS)
ps = []
for t in range(STEPS):
    p.grad = g[t].clone()
    opt.step()
    ps.append(p.detach().clone())
put("adam.p", torch.stack(ps))
put("adam.m", opt.state[p]["exp_avg"])
put("adam.v", opt.state[p]["exp_avg_sq"])

# ------------------------------------------------------------------ Adagrad (rows)
ADA_LR, ADA_EPS = 0.1, 1e-10  # eps = torch.optim.Adagrad's default
p = torch.randn(ROWS, d, dtype=torch.float32).double().requires_grad_(True)
rows = torch.tensor([[2, 5, 7], [5, 0, 9], [7, 2, 3]], dtype=torch.long)  # distinct per step
g = torch.zeros(STEPS, ROWS, d, dtype=torch.float64)
for t in range(STEPS):
    g[t, rows[t]] = torch.randn(rows.shape[1], d, dtype=torch.float32).double()
# A gradient far below sqrt(eps) tells "sqrt(s) + eps" (torch) from "sqrt(s + eps)".
g[0, rows[0, 0], 0] = float(np.float32(1e-12))
put("adagrad.hparams", [ADA_LR, ADA_EPS])
put("adagrad.p0", p)
put("adagrad.g", g)
put("adagrad.rows", rows)
opt = torch.optim.Adagrad([p], lr=ADA_LR, eps=ADA_EPS)
ps = []
for t in range(STEPS):
    p.grad = g[t].clone()
    opt.step()
    ps.append(p.detach().clone())
put("adagrad.p", torch.stack(ps))
put("adagrad.s", opt.state[p]["sum"])


# ------------------------------------------------------------------ write
size = write_safetensors(os.path.normpath(OUT_PATH), tensors,
                         {"generator": "tests/ref/gen_nn_ref.py", "seed": str(SEED),
                          "torch": torch.__version__})
print("wrote %s: %d tensors, %d bytes" % (os.path.normpath(OUT_PATH), len(tensors), size),
      file=sys.stderr)
