/* bench/inprocess.h — rank-bench's in-process scoring of one request
 * (bench/inprocess.c), shared with bench/service_cost.c. */
#ifndef RK_BENCH_INPROCESS_H
#define RK_BENCH_INPROCESS_H

#include "rank.h"
#include "rank.pb-c.h"

/* Score request q (at most the scorer's max_rows candidates) into pctr;
 * 0, or -1 on any error (an unknown feature name included). */
int rk_bench_score_inprocess(rk_scorer *s, const rk_model_cfg *cfg, const Rankd__V1__RankRequest *q, float *pctr);

#endif
