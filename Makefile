# Thin wrapper over CMake so the README's two commands stay short.
#   make demo   set up, fetch the default model, build, run the main job
#   make test   set up, fetch the default model, build plain + sanitizer, run all tests
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all demo test deps model build build-asan test-plain test-asan bench clean

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

demo: deps model build
	bash scripts/demo.sh

test-plain: build
	cd build && ctest --output-on-failure -j $(JOBS)

test-asan: build-asan
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

test: deps model
	$(MAKE) test-plain
	$(MAKE) test-asan

bench: deps model build
	build/bench_decode

clean:
	rm -rf build build-asan
