/* examples/hello.c — the smallest use of librankd (rank.h): one user, N candidates.
 *   cc hello.c $(pkg-config --cflags --libs rankd) -o hello
 *   ./hello BUNDLE USER_ID MOVIE_ID...    (a MovieLens bundle: configs/movielens_*.json)
 * Lists the bundle's features on stderr, then prints "movie_id<TAB>pctr" per candidate. */
#include <rank.h>
#include <stdio.h>

int main(int argc, char **argv) {
    rankd_model *m = NULL;
    rankd_batch *b = NULL;
    rankd_error e;
    float pctr[64];
    int n = argc - 3, rc = 1;
    if (n < 1 || n > 64) return fprintf(stderr, "usage: hello BUNDLE USER_ID MOVIE_ID... (1..64 movies)\n"), 2;
    if (rankd_model_open(argv[1], NULL, &m, &e) || rankd_batch_create(m, &b, &e) || rankd_batch_begin(b, n, &e)) goto done;
    for (int i = 0; i < rankd_model_n_features(m); i++)
        fprintf(stderr, "feature %-10s %-9s %-6s dim %d\n", rankd_feature_name(m, i),
                rankd_feature_side(m, i) == RANKD_SIDE_USER ? "user" : "candidate",
                rankd_feature_kind(m, i) == RANKD_KIND_SPARSE ? "sparse" : "dense", rankd_feature_dim(m, i));
    if (rankd_batch_user_sparse(b, "user_id", (const char *const *)&argv[2], 1, &e)) goto done;
    for (int i = 0; i < n; i++)
        if (rankd_batch_candidate_sparse(b, i, "movie_id", (const char *const *)&argv[3 + i], 1, &e)) goto done;
    if (rankd_batch_score(b, pctr, &e)) goto done;
    for (int i = 0; i < n; i++) printf("%s\t%.9g\n", argv[3 + i], pctr[i]);
    rc = 0;
done:
    if (rc) fprintf(stderr, "hello: %s\n", e.message);
    rankd_batch_destroy(b);
    rankd_model_close(m);
    return rc;
}
