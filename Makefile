# Thin wrapper over CMake so the README's two commands stay short.
#   make demo   set up, fetch the default model, build, run the main job
#   make demo-long  the same with Qwen2.5-Coder-1.5B (1.12 GB) on a 16K-token source file
#   make test   set up, fetch the default model, build plain + sanitizer, run all tests,
#               then run every fuzz target for a few seconds (a clang build)
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
FUZZ_CC ?= clang-14

.PHONY: all demo demo-long test deps model build build-asan build-fuzz test-plain test-asan test-fuzz bench clean

all: build

deps:
	bash scripts/setup-deps.sh

model:
	bash scripts/fetch-model.sh

build:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	cmake --build build -j $(JOBS)

build-asan:
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFASA_SANITIZE=ON -DFASA_CUDA=OFF $(CMAKE_FLAGS) >/dev/null
	cmake --build build-asan -j $(JOBS)

# Only the library and the fuzz targets: the tools gain nothing from libFuzzer.
build-fuzz:
	cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=$(FUZZ_CC) -DFASA_FUZZ=ON \
		-DFASA_TESTS=OFF -DFASA_CUDA=OFF $(CMAKE_FLAGS) >/dev/null
	cmake --build build-fuzz -j $(JOBS) --target fuzzers

demo: deps model build
	bash scripts/demo.sh

demo-long: deps build
	bash scripts/demo-long.sh

test-plain: build
	cd build && ctest --output-on-failure -j $(JOBS)

test-asan: build-asan
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

test-fuzz: build-fuzz
	cd build-fuzz && ctest --output-on-failure -j $(JOBS)

test: deps model
	$(MAKE) test-plain
	$(MAKE) test-asan
	$(MAKE) test-fuzz

bench: deps model build
	build/bench_decode

clean:
	rm -rf build build-asan build-fuzz
