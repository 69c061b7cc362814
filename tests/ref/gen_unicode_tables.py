#!/usr/bin/env python3
"""Writes embed/bert_unicode.c: the Unicode tables of rankd's BERT tokenizer.

    python3 tests/ref/gen_unicode_tables.py            # from the repo root
    python3 tests/ref/gen_unicode_tables.py --verify-hf MODEL_DIR
        (also checks every code point against HuggingFace's fast tokenizer;
         needs `tokenizers`, e.g. the venv of scripts/setup-encoder.sh --python)

Source: Python's `unicodedata` (the Unicode version is written into the file;
Python 3.11 ships Unicode 14.0.0). Run once at development time and commit
the output; the build needs no Python.

What the tables encode (HuggingFace tokenizers' BertNormalizer and
BertPreTokenizer, which sentence-transformers uses through the fast tokenizer):
  control  code points removed by text cleaning: general category Cc, Cf, Co
           or Cs, except TAB, LF and CR (which count as whitespace). Cn
           (unassigned) is NOT removed: HF's fast tokenizer keeps it.
  space    code points that become ' ' and split words: TAB, LF, CR and the
           White_Space characters that are not controls (Zs, Zl, Zp).
  punct    code points split off as one-character words: general category P*
           plus the ASCII symbol ranges 33-47, 58-64, 91-96, 123-126 (BERT
           treats '$', '+', '^', '`', ... as punctuation).
  strip    accent stripping: NFD(c) with the nonspacing marks (Mn) removed,
           for every c where that differs from c; Hangul syllables are left to
           the C code (algorithmic decomposition, Unicode ch. 3.12) to keep the
           table small. Canonical reordering is not applied: after the Mn are
           dropped it only matters for adjacent non-Mn marks of non-zero
           combining class, which no real text has.
  lower    full lower-case mapping of one code point (str.lower() of a single
           character; per character, so no final-sigma rule, as in HF).
Maps are sorted by code point, each entry {cp, offset, length} into a pool.
"""
import argparse
import sys
import unicodedata

ASCII_PUNCT = set(range(33, 48)) | set(range(58, 65)) | set(range(91, 97)) | set(range(123, 127))
MAXCP = 0x110000


def is_control(c):
    if c in (9, 10, 13):
        return False
    return unicodedata.category(chr(c)) in ("Cc", "Cf", "Co", "Cs")


def is_space(c):
    if c in (9, 10, 13, 32):
        return True
    return unicodedata.category(chr(c)) in ("Zs", "Zl", "Zp")


def is_punct(c):
    return c in ASCII_PUNCT or unicodedata.category(chr(c)).startswith("P")


def is_hangul(c):
    return 0xAC00 <= c <= 0xD7A3


def strip(c):
    s = unicodedata.normalize("NFD", chr(c))
    return "".join(ch for ch in s if unicodedata.category(ch) != "Mn")


def ranges(pred):
    out, start = [], None
    for c in range(MAXCP + 1):
        v = c < MAXCP and pred(c)
        if v and start is None:
            start = c
        elif not v and start is not None:
            out.append((start, c - 1))
            start = None
    return out


def build_map(fn, max_len):
    entries, pool = [], []
    for c in range(MAXCP):
        if 0xD800 <= c <= 0xDFFF or is_hangul(c):
            continue
        s = fn(c)
        if s == chr(c):
            continue
        cps = [ord(x) for x in s]
        entries.append((c, len(pool), len(cps)))
        pool.extend(cps)
    # embed/tokenizer.c's buffers: strip <= 4 code points, lower <= 3
    assert len(pool) < 65536 and max(e[2] for e in entries) <= max_len
    return entries, pool


def emit_ranges(o, name, rs):
    o.write(f"const uint32_t {name}[][2] = {{\n")
    for i in range(0, len(rs), 6):
        o.write("    " + " ".join(f"{{0x{a:X}, 0x{b:X}}}," for a, b in rs[i:i + 6]) + "\n")
    o.write(f"}};\nconst size_t {name}_n = {len(rs)};\n\n")


def emit_map(o, name, entries, pool):
    o.write(f"const rk_ucd_map {name}[] = {{\n")
    for i in range(0, len(entries), 5):
        o.write("    " + " ".join(f"{{0x{c:X}, {off}, {n}}}," for c, off, n in entries[i:i + 5]) + "\n")
    o.write(f"}};\nconst size_t {name}_n = {len(entries)};\n")
    o.write(f"const uint32_t {name}_pool[] = {{\n")
    for i in range(0, len(pool), 10):
        o.write("    " + " ".join(f"0x{c:X}," for c in pool[i:i + 10]) + "\n")
    o.write("};\n\n")


def verify_hf(model_dir, ctl, sp, pu, smap, lmap):
    """Every code point through HF's normalizer and pre-tokenizer vs the tables."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    norm, pre = tok.normalizer, tok.pre_tokenizer
    sset = {c: p for c, p in smap}
    lset = {c: p for c, p in lmap}
    cjk = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
           (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
    bad = 0
    for c in range(MAXCP):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        if c in (0, 0xFFFD) or ctl(c):
            want = ""
        elif sp(c):
            want = " "
        else:
            st = sset.get(c, ch) if not is_hangul(c) else unicodedata.normalize("NFD", ch)
            want = "".join(lset.get(ord(x), x) for x in st)
            if any(a <= c <= b for a, b in cjk):
                want = " " + want + " "
        got = norm.normalize_str(ch)
        if got != want:
            bad += 1
            if bad <= 20:
                print(f"normalize U+{c:04X}: hf={got!r} tables={want!r}", file=sys.stderr)
        if want and want.strip() and len(want) == 1 and not sp(ord(want)):
            words = [w for w, _ in pre.pre_tokenize_str("a" + want + "b")]
            hf_p = len(words) == 3
            if hf_p != pu(ord(want)):
                bad += 1
                if bad <= 20:
                    print(f"punct U+{ord(want):04X}: hf={hf_p} tables={pu(ord(want))}", file=sys.stderr)
    print(f"verify-hf: {bad} code points differ", file=sys.stderr)
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="embed/bert_unicode.c")
    ap.add_argument("--verify-hf", metavar="MODEL_DIR")
    a = ap.parse_args()
    ctl, sp, pu = ranges(is_control), ranges(is_space), ranges(is_punct)
    smap, spool = build_map(strip, 4)
    lmap, lpool = build_map(lambda c: chr(c).lower(), 3)
    with open(a.out, "w") as o:
        o.write("/*\n * embed/bert_unicode.c — GENERATED by tests/ref/gen_unicode_tables.py; do not edit.\n")
        o.write(f" * Unicode {unicodedata.unidata_version} (Python {sys.version.split()[0]} unicodedata).\n")
        o.write(" * Character classes and the accent-strip / lower-case maps of the BERT\n")
        o.write(" * tokenizer; see the script's docstring for what each table holds.\n */\n")
        o.write('#include "internal.h"\n\n')
        o.write(f'const char rk_ucd_version[] = "{unicodedata.unidata_version}";\n\n')
        emit_ranges(o, "rk_ucd_control", ctl)
        emit_ranges(o, "rk_ucd_space", sp)
        emit_ranges(o, "rk_ucd_punct", pu)
        emit_map(o, "rk_ucd_strip", smap, spool)
        emit_map(o, "rk_ucd_lower", lmap, lpool)
    print(f"wrote {a.out}: control {len(ctl)} ranges, space {len(sp)}, punct {len(pu)}, "
          f"strip {len(smap)} entries / {len(spool)} cps, lower {len(lmap)} / {len(lpool)}", file=sys.stderr)
    if a.verify_hf:
        inr = lambda rs: (lambda c: any(x <= c <= y for x, y in rs))
        smap_d = [(c, "".join(chr(x) for x in spool[off:off + n])) for c, off, n in smap]
        lmap_d = [(c, "".join(chr(x) for x in lpool[off:off + n])) for c, off, n in lmap]
        return 1 if verify_hf(a.verify_hf, is_control, is_space, is_punct, smap_d, lmap_d) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
