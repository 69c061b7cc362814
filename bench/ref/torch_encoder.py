#!/usr/bin/env python3
"""PyTorch baseline for `make bench-encoder`: sentences/s of all-MiniLM-L6-v2.

    python torch_encoder.py --model DIR --input movies.csv --column title \
        --n 2000 --n-b1 300 --batches 1,32,256 --threads 2 --out emb.safetensors

Runs sentence-transformers' SentenceTransformer.encode (tokenize, BertModel,
mean pooling, normalize; what users of this model call), and, when
--also-hf is given, the same with transformers' BertModel + fast tokenizer
and the pooling written out (no sentence-transformers). Same texts as the C
run: the first --n values of --column (the first --n-b1 at batch 1, which is
slow). torch.set_num_threads(--threads); inference mode; one warm-up batch
not timed. Prints one line per run:
    torch: impl=st batch=32 n=2000 seconds=S sent_per_s=R
and writes the batch-32 embeddings of the first --n texts to --out
("embeddings" F32 [n, 384]) so the caller can compare them with rankd's.
"""
import argparse
import csv
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--column", default="title")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--n-b1", type=int, default=300)
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--also-hf", action="store_true")
    a = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    with open(a.input, encoding="utf-8", newline="") as f:
        texts = [r[a.column] for r in csv.DictReader(f)][: a.n]

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(a.model, device="cpu")
    impls = [("st", lambda batch, b: st.encode(batch, batch_size=b, convert_to_numpy=True))]
    if a.also_hf:
        from transformers import AutoTokenizer, BertModel

        tok = AutoTokenizer.from_pretrained(a.model)
        bert = BertModel.from_pretrained(a.model).eval()

        def hf(batch, b):
            outs = []
            for i in range(0, len(batch), b):
                enc = tok(batch[i:i + b], padding=True, truncation=True, max_length=256, return_tensors="pt")
                h = bert(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                outs.append(torch.nn.functional.normalize(e, p=2, dim=1).numpy())
            return np.concatenate(outs)

        impls.append(("hf", hf))

    keep = None
    with torch.inference_mode():
        for name, fn in impls:
            for b in [int(x) for x in a.batches.split(",")]:
                n = a.n_b1 if b == 1 else a.n
                fn(texts[: min(b, n)], b)  # warm-up
                t0 = time.perf_counter()
                emb = fn(texts[:n], b)
                dt = time.perf_counter() - t0
                print(f"torch: impl={name} batch={b} n={n} seconds={dt:.3f} sent_per_s={n / dt:.1f}", flush=True)
                if name == "st" and b == 32:
                    keep = emb
    if a.out and keep is not None:
        from safetensors.numpy import save_file

        save_file({"embeddings": np.ascontiguousarray(keep, dtype=np.float32)}, a.out)


if __name__ == "__main__":
    main()
