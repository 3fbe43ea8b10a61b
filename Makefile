# Everyday commands. CMake (CMakePresets.json) is the build; this file only names the steps.
# `make demo` and `make test` work as the first command on a fresh Debian 12 machine: both run
# scripts/setup, which installs what the build needs.

JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 30
SOAK_MINUTES ?= 30
export CCACHE_DIR ?= $(HOME)/.cache/ccache
# Relative paths in the cache keys: a fresh clone elsewhere (as CI makes) still hits the cache.
export CCACHE_BASEDIR ?= $(CURDIR)
export CCACHE_NOHASHDIR ?= 1

.PHONY: setup build test build-times fuzz-smoke format-check demo bench clean

setup:
	@bash scripts/setup

build: setup
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)

# Everything CI runs, in timed phases (scripts/test prints each phase's time at the end): the
# format check, the ASan+UBSan build of every test, the unit and integration tests, the
# libFuzzer smoke runs.
test: setup
	JOBS=$(JOBS) FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/test

# A cold compile of the test build and the fuzz build with ccache off; records the figures in
# docs/benchmarks.md. Re-run it whenever a subsystem lands.
build-times: setup
	JOBS=$(JOBS) bash scripts/build-times

# Every libFuzzer target on its seed corpus for FUZZ_SECONDS, all at once.
fuzz-smoke:
	JOBS=$(JOBS) FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz-smoke

format-check:
	@files=$$(git ls-files '*.cpp' '*.hpp'); \
	clang-format --dry-run --Werror $$files && echo "format: $$(echo $$files | wc -w) files clean"

demo: setup
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS) --target cairnd cairn cairn-cloud cairn-infer cairn-sensor
	@bash scripts/demo

# Side-by-side benchmarks; docs/benchmarks.md records their latest output. bench/agent_containers.py
# repeats the agent's deployment figures with container modules (Podman's service) beside process
# modules; it says why and skips where containers cannot run. The last step is the soak
# (bench/soak.py): SOAK_MINUTES of chaos at half the measured capacity.
bench: setup
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS) --target cairnd cairn cairn-cloud cairn-infer cairn-bench
	build/bin/cairn-bench mqtt --suite default --cairn-fsync true
	build/bin/cairn-bench mqtt --suite default --cairn-fsync false
	build/bin/cairn-bench link
	build/bin/cairn-bench agent
	/usr/bin/python3 bench/agent_containers.py --bin-dir build/bin
	build/bin/cairn-bench infer
	build/bin/cairn-bench model-fetch
	build/bin/cairn-bench model-delta
	SOAK_MINUTES=$(SOAK_MINUTES) CAIRN_BIN_DIR=$(CURDIR)/build/bin /usr/bin/python3 bench/soak.py

clean:
	rm -rf build build-asan build-debug build-tsan build-fuzz build-times build-times-fuzz
