# Thin wrapper over CMake/ctest. `make` builds, `make test` builds and runs every test,
# `make asan-test` runs them again under AddressSanitizer + UndefinedBehaviorSanitizer.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: all test asan-test fuzz fuzz-run clean
all:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

asan-test:
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLCM_SANITIZE=ON >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS)

fuzz:
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DLCM_FUZZ=ON -DLCM_SANITIZE=ON >/dev/null
	cmake --build build-fuzz -j $(JOBS)

# Runs every harness for FUZZ_SECONDS (default 60) each; see docs/FUZZING.md.
fuzz-run:
	JOBS=$(JOBS) fuzz/run.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) build-asan build-fuzz
