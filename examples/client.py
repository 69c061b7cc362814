#!/usr/bin/python3
"""examples/client.py — score MovieLens rows through a running rankd with
the rankd_client package (python/; pip install it first, see its README).

  rankd --model BUNDLE --listen 127.0.0.1:50051 &       # a configs/movielens_*.json model
  python3 client.py --addr 127.0.0.1:50051 --input ml/test.tsv --rows 200

Consecutive rows with the same user cells form one request (the user once,
each row a candidate). Prints "pctr", then one pCTR per row, like
`rank score`.
"""
import argparse

from rankd_client import Client

USER_SPARSE = ["hour", "weekday"]      # besides user_id and history


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--input", required=True, help="TSV of `rank data movielens`")
    ap.add_argument("--rows", type=int, default=100)
    a = ap.parse_args()
    with open(a.input) as f:
        hdr = f.readline().rstrip("\n").split("\t")
        rows = [dict(zip(hdr, line.rstrip("\n").split("\t"))) for _, line in zip(range(a.rows), f)]
    user_cols = ["user_id", "history"] + USER_SPARSE
    print("pctr")
    with Client(a.addr) as client:
        r0 = 0
        while r0 < len(rows):
            r1 = r0 + 1
            while r1 < len(rows) and all(rows[r1][c] == rows[r0][c] for c in user_cols):
                r1 += 1
            u = rows[r0]
            cands = [{"genres": r["genres"].split("|"), **({"year": float(r["year"])} if r["year"] else {})}
                     for r in rows[r0:r1]]
            pctr = client.rank({c: u[c].split("|") for c in USER_SPARSE}, cands, user_id=u["user_id"],
                               recent_item_ids=u["history"].split("|"), ad_ids=[r["movie_id"] for r in rows[r0:r1]])
            for p in pctr:
                print("%.9g" % p)
            r0 = r1


if __name__ == "__main__":
    main()
