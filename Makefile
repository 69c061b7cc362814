# Thin wrapper over CMake. The two commands of the README:
#   make demo   install what is missing, build, train on bundled MovieLens, serve, compare
#   make test   install what is missing, build, run every test
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all setup build test demo clean asan bench-train bench-serve

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure --timeout 900

demo: build
	@bash scripts/demo.sh $(BUILD)

# Tests under AddressSanitizer + UndefinedBehaviorSanitizer, separate build tree.
asan: setup
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DRK_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@cd build-asan && ctest --output-on-failure --timeout 1800

# rankd vs in-process scoring vs a Python/PyTorch server, latency at 25-90% of
# rankd's max rate, 50/200/1000 candidates (bench/RESULTS.md "## bench-serve"); ~5 min.
bench-serve: build
	@bash bench/bench_serve.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-asan
