# Thin wrapper over CMake/ctest.
#   make              build (Release) into build/
#   make test         build, run every test, then build with AddressSanitizer + UBSan into
#                     build-asan/ and run every test again there, then build the fuzzers and run
#                     each for FUZZ_CI_SECONDS (fuzz-ci)
#   make quick-test   the first half only (no sanitizer pass)
#   make fuzz         build the libFuzzer harnesses into build-fuzz/ (see docs/FUZZING.md)
#   make fuzz-run     build them and run each for FUZZ_SECONDS (default 60)
#   make fuzz-ci      the same for FUZZ_CI_SECONDS (default 15): what `make test` runs
#   make valgrind     valgrind memcheck over a tiny generation, a LoRA run and a ControlNet run
# Tests read the golden fixtures from $LCM_FIXTURES (default ../shared/fixtures).
BUILD ?= build
JOBS ?= $(shell nproc)

FUZZ_CI_SECONDS ?= 15

.PHONY: all test quick-test asan-test browser-deps fuzz fuzz-run fuzz-ci valgrind clean
all:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

quick-test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test: browser-deps quick-test asan-test fuzz-ci

# playwright-core for the browser test of `lcm serve` (tests/browser) and the OpenAI SDK for its
# client test (tests/clients), at the locked versions; the tests skip themselves (and say why)
# where node or chromium is missing. The A1111 client's venv is made by its test.
browser-deps:
	@if command -v npm >/dev/null && [ ! -d tests/browser/node_modules/playwright-core ]; then \
		cd tests/browser && npm ci --no-audit --no-fund; fi
	@if command -v npm >/dev/null && [ ! -d tests/clients/node_modules/openai ]; then \
		cd tests/clients && npm ci --no-audit --no-fund; fi

asan-test:
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLCM_SANITIZE=ON >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS)

fuzz:
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DLCM_FUZZ=ON -DLCM_SANITIZE=ON >/dev/null
	cmake --build build-fuzz -j $(JOBS)

# Runs every harness for FUZZ_SECONDS (default 60) each; see docs/FUZZING.md.
fuzz-run:
	JOBS=$(JOBS) fuzz/run.sh $(FUZZ_SECONDS)

# Every harness for a short fixed time on its seeds: any crash, leak, timeout or sanitizer report
# fails `make test`. Crash inputs land in build-fuzz/artifacts/ (see docs/FUZZING.md).
fuzz-ci:
	JOBS=$(JOBS) fuzz/run.sh $(FUZZ_CI_SECONDS)

# Memcheck over a tiny generation, a LoRA run and a ControlNet run (scripts/valgrind.sh).
valgrind: all
	scripts/valgrind.sh

clean:
	rm -rf $(BUILD) build-asan build-fuzz
