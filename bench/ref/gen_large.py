#!/usr/bin/env python3
"""bench/ref/gen_large.py OUT_DIR -- synthetic click data for the production-size
DCNv2 of `make bench-roofline` (configs/bench_large_dcnv2.json: 32 sparse
features x dim 32 = a 1,024-d tower input, 3 cross layers, MLP 1024-512-256).

Writes OUT_DIR/{train,valid,test}.tsv (rank's TSV: header of column names,
tab-separated). user_id and u01..u15 are user-side, ad_id and i01..i15
item-side; user_id is unique per user, every other value is drawn from a skewed distribution over 2,000
values; the label is a Bernoulli draw whose odds depend on (user_id, ad_id)
and one item feature, so training learns something. The test split holds
users with 500 consecutive rows each (one full 500-candidate request per
user in rank-bench). Seeded: the same files every run. Only the speed of
the model matters to the benchmark; its accuracy is not reported.
"""
import os
import random
import sys


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(16)
    cols = ["label", "user_id"] + ["u%02d" % i for i in range(1, 16)] + ["ad_id"] + ["i%02d" % i for i in range(1, 16)]

    def val():
        return str(int(rng.paretovariate(1.1)) % 2000)

    n_users = [0]

    def user():
        n_users[0] += 1
        return ["user%d" % n_users[0]] + [val() for _ in range(15)]

    def row(u):
        it = [val() for _ in range(16)]
        z = ((n_users[0] * 31 + int(it[0])) % 7 - 3) * 0.4 + (0.8 if int(it[1]) % 3 == 0 else -0.8)
        p = 1.0 / (1.0 + pow(2.718281828, -z))
        return ["1" if rng.random() < p else "0"] + u + it

    def write(name, users, per_user):
        with open(os.path.join(out, name), "w") as f:
            f.write("\t".join(cols) + "\n")
            for _ in range(users):
                u = user()
                for _ in range(per_user):
                    f.write("\t".join(row(u)) + "\n")

    write("train.tsv", 60, 50)
    write("valid.tsv", 10, 50)
    write("test.tsv", 8, 500)


if __name__ == "__main__":
    main()
