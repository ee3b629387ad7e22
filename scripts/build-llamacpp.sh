#!/usr/bin/env bash
# Builds llama.cpp's CPU tools, the peer fasa is compared with, from the copy of
# llama.cpp that the PyPI source distribution of llama-cpp-python vendors (so
# nothing comes from anywhere but PyPI). The sdist's sha256 is checked.
#   usage: scripts/build-llamacpp.sh
# Result (git ignores build-peers/):
#   build-peers/llama.cpp/                 the llama.cpp sources, commit $LLAMA_COMMIT
#   build-peers/llama.cpp/build/bin/       llama-bench llama-perplexity llama-completion
#                                          llama-simple llama-tokenize
# CPU only: Release, -march=native (GGML_NATIVE), OpenMP, no CUDA/Metal/BLAS, no
# curl or OpenSSL. llama-cli is not built: in this version it is a client of
# llama-server, whose web UI the build would try to download; llama-completion is the
# classic command-line generator. Prints nothing when everything is already built.
# Environment: JOBS (default 2) parallel compile jobs; the build runs under nice.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG_VERSION="0.3.36"
PKG_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# The llama.cpp commit that llama-cpp-python 0.3.36 vendors, and upstream's release
# number for it (tag b11312). The sdist holds only a shallow git history, which
# cannot count the commits, so both are given to CMake for the version line the
# tools print ("version: 0.5.0-dev (build 11312, commit 0c1e57098)"; llama-bench:
# "build: 0c1e57098 (11312)").
LLAMA_COMMIT="0c1e57098bba43ac29e6e3b677cdceebdd22334f"
LLAMA_BUILD_NUMBER="11312"
TOOLS="llama-bench llama-perplexity llama-completion llama-simple llama-tokenize"
JOBS=${JOBS:-2}

src=build-peers/llama.cpp
bin=$src/build/bin
stamp="llama-cpp-python==$PKG_VERSION sha256=$PKG_SHA256 llama.cpp=$LLAMA_COMMIT"

die() { echo "build-llamacpp: error: $*" >&2; exit 1; }

all_built() {
    local t
    for t in $TOOLS; do [ -x "$bin/$t" ] || return 1; done
}

# Done already: the sources of this pinned version, every tool built.
if [ -f "$src/SOURCE" ] && [ "$(cat "$src/SOURCE")" = "$stamp" ] && all_built; then
    exit 0
fi

# llama.cpp is C++: it needs g++, which the C project alone does not.
for tool in cmake g++ tar sha256sum; do
    command -v "$tool" >/dev/null || die "'$tool' not found; install it (Debian: apt-get install cmake g++)"
done

# 1. Sources: the sdist's vendor/llama.cpp, unpacked once per pinned version.
if [ ! -f "$src/SOURCE" ] || [ "$(cat "$src/SOURCE")" != "$stamp" ]; then
    PIP=pip3; [ -x .venv/bin/pip ] && PIP=.venv/bin/pip
    command -v "$PIP" >/dev/null || die "pip not found; create the venv with scripts/setup-deps.sh"
    mkdir -p build-peers
    tmp=$(mktemp -d build-peers/tmp.XXXXXX)
    trap 'rm -rf "$tmp"' EXIT

    echo "build-llamacpp: downloading llama-cpp-python $PKG_VERSION (source, ~77 MB) from PyPI"
    # pip prepares the sdist's metadata, which installs its build backend into a
    # throw-away environment: that too comes from PyPI.
    if ! "$PIP" download -q --disable-pip-version-check --no-deps --no-binary :all: \
            "llama-cpp-python==$PKG_VERSION" -d "$tmp"; then
        die "could not download llama-cpp-python==$PKG_VERSION from PyPI; check the network or pip's index settings"
    fi
    sdist="$tmp/llama_cpp_python-$PKG_VERSION.tar.gz"
    [ -f "$sdist" ] || die "pip did not leave $(basename "$sdist") (found: $(ls "$tmp"))"
    got=$(sha256sum "$sdist" | cut -d' ' -f1)
    [ "$got" = "$PKG_SHA256" ] ||
        die "$(basename "$sdist") has sha256 $got, expected $PKG_SHA256: PyPI served a different file; not using it"

    # The vendored copy must be the commit this script names (the sdist keeps the
    # submodule's git directory beside it).
    top="llama_cpp_python-$PKG_VERSION"
    head=$(tar -xzOf "$sdist" "$top/.git/modules/vendor/llama.cpp/HEAD" 2>/dev/null || true)
    [ "$head" = "$LLAMA_COMMIT" ] ||
        die "the sdist vendors llama.cpp commit '${head:-?}', this script expects $LLAMA_COMMIT"

    echo "build-llamacpp: unpacking llama.cpp $LLAMA_COMMIT into $src"
    mkdir "$tmp/src"
    # Without its .git link (it points into the sdist's tree): CMake then takes the
    # version from LLAMA_BUILD_NUMBER/COMMIT below instead of some other repository.
    tar -xzf "$sdist" -C "$tmp/src" --strip-components=3 --exclude="$top/vendor/llama.cpp/.git" \
        "$top/vendor/llama.cpp" || die "could not unpack vendor/llama.cpp from $(basename "$sdist")"
    [ -f "$tmp/src/CMakeLists.txt" ] || die "$(basename "$sdist") holds no vendor/llama.cpp/CMakeLists.txt"
    echo "$stamp" > "$tmp/src/SOURCE"
    rm -rf "$src"
    mv "$tmp/src" "$src"
fi

# 2. Configure (once) and build the tools. Git must not find the project's own
# repository above build-peers/ and report its commit as llama.cpp's.
export GIT_CEILING_DIRECTORIES="$PWD/build-peers"
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$src/build/CMakeCache.txt" ]; then
    echo "build-llamacpp: configuring (CMake, Release, CPU only, native flags)"
    if ! cmake -S "$src" -B "$src/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
            -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON -DGGML_OPENMP=ON -DGGML_CCACHE=OFF \
            -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DGGML_VULKAN=OFF -DGGML_RPC=OFF \
            -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
            -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
            -DLLAMA_BUILD_NUMBER="$LLAMA_BUILD_NUMBER" -DLLAMA_BUILD_COMMIT="${LLAMA_COMMIT:0:9}" \
            > "$src/build-configure.log" 2>&1; then
        tail -n 30 "$src/build-configure.log" >&2
        rm -f "$src/build/CMakeCache.txt"
        die "CMake could not configure llama.cpp (log: $src/build-configure.log)"
    fi
fi

echo "build-llamacpp: building $TOOLS (-j $JOBS; takes a while)"
start=$(date +%s)
# shellcheck disable=SC2086  # TOOLS is a list of target names
if ! nice -n 10 cmake --build "$src/build" -j "$JOBS" --target $TOOLS > "$src/build.log" 2>&1; then
    tail -n 40 "$src/build.log" >&2
    die "the llama.cpp build failed (log: $src/build.log)"
fi
all_built || die "the build finished but not every tool is in $bin ($TOOLS)"
echo "build-llamacpp: built $TOOLS in $bin ($(( $(date +%s) - start )) s)"
