# The two commands of the README, and their parts.
#   make demo   install what is missing, build, run spotterd + the demo trainer
#   make test   install what is missing, build, run the whole suite (ctest)
SHELL := /bin/bash
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=

# What the demo runs; `make demo` builds these and nothing else (not the tests,
# fuzzers and benchmarks that `make test` builds).
DEMO_TARGETS := spotterd spotterctl synthetic_trainer

.PHONY: all deps configure build build-demo demo test clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	@mkdir -p $(BUILD)
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) > $(BUILD)/configure.log 2>&1 \
	  || { cat $(BUILD)/configure.log; exit 1; }

build: configure
	cmake --build $(BUILD) -j$(JOBS)

build-demo: configure
	cmake --build $(BUILD) -j$(JOBS) --target $(DEMO_TARGETS)

demo: build-demo
	scripts/demo.sh $(BUILD)

# No test may be skipped: a skipped test checks nothing (it once hid a shared
# certificate directory that concurrent test processes overwrote).
test: build
	cd $(BUILD) && set -o pipefail && ctest --output-on-failure -j$(JOBS) 2>&1 | tee ctest.log
	@! grep -F '***Skipped' $(BUILD)/ctest.log || { echo "FAIL: skipped tests (above)"; exit 1; }

clean:
	rm -rf $(BUILD)
