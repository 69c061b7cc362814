"""Exact token rows of papers.md Table 1 with Python's big integers, for the
test vectors of tests/test_semantic_id.c (prints C initialisers).

tok_i(prefix) = sum_{t<=i} K^(i-t) (c_t + 1) - 1; trigram K^2 c1 + K c2 + c3;
fourgram K^3 c1 + ... + c4; all-bigrams K^2 (i-1) + K c_i + c_{i+1}; each
reduced mod H. No 64-bit arithmetic anywhere, so these are the exact values.
"""


def prefix(c, K, n):
    return [sum(K ** (i - t) * (c[t] + 1) for t in range(i + 1)) - 1 for i in range(n)]


def trigram(c, K):
    return K * K * c[0] + K * c[1] + c[2]


def fourgram(c, K):
    return K ** 3 * c[0] + K * K * c[1] + K * c[2] + c[3]


def bigrams(c, K):
    return [K * K * i + K * c[i] + c[i + 1] for i in range(len(c) - 1)]


cases = [
    ("K4", [1, 2, 3], 4),
    ("K2048", [2047] * 6, 2048),
    ("K2048b", [5, 2047, 0, 1234, 77, 2046], 2048),
]
Hs = [2 ** 64 - 1, 2 ** 61 - 1, 1000003, 3247]
for name, c, K in cases:
    L = len(c)
    print(f"/* {name}: codes {c}, K = {K} */")
    print(f"/* exact prefix tokens: {prefix(c, K, L)} */")
    for H in Hs:
        p = [t % H for t in prefix(c, K, L)]
        out = {"prefix": p, "bigrams": [t % H for t in bigrams(c, K)]}
        if L >= 3:
            out["trigram"] = [trigram(c, K) % H]
        if L >= 4:
            out["fourgram"] = [fourgram(c, K) % H]
        for k, v in out.items():
            print(f"  {name} H={H}ULL {k}: {{" + ", ".join(f"{x}ULL" for x in v) + "}")
