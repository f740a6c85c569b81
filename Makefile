# psmfs — the Makefile only wraps CMake/CTest. Targets:
#   make run     install what is missing, build psmfs and psmctl only (not the tests),
#                create var/vol if absent, mount it at var/mnt
#   make stop    unmount var/mnt
#   make test    install what is missing, build everything with the tests (normal,
#                ASan+UBSan, TSan), run every suite
#   make bench   benchmarks against a native directory, passthrough_ll (with and
#                without -o writeback) and zfs-fuse (installs zfs-fuse, for this only),
#                then checksums on vs --checksum=off (BENCH_ONLY=checksums: only that)
#   make bench-scale  SCALE_FILES small files (default 10,000,000) against 10,000:
#                mount, stat, lookup, readdir, snapshot, diff, fsck, metadata bytes, RSS
#   make build   just build (build/)
# Environment: PSMFS_STRESS=N scales stress/soak runs (default 1).
SHELL := /bin/bash
JOBS ?= $(shell nproc)
BUILD ?= build
DEB_PKGS := libfuse3-dev fuse3 librocksdb-dev libcli11-dev doctest-dev cmake pkg-config g++ make ccache strace samba smbclient nlohmann-json3-dev libssl-dev libisal-dev libsystemd-dev
VOL ?= var/vol
MNT ?= var/mnt
SIZE ?= 2G
# Only `make bench` needs these (the zfs-fuse peer, tests/bench/zfs_peer.sh).
BENCH_PKGS := zfs-fuse

.PHONY: all deps bench-deps build build-asan build-tsan run stop test test-unit test-fuse test-asan test-tsan bench bench-scale install clean

all: build

deps:
	@./.ci/deps.sh $(DEB_PKGS)

bench-deps: deps
	@./.ci/deps.sh $(BENCH_PKGS)

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# The sanitizer trees (docs/testing.md, "Build time"): line tables only
# (-g1: what a sanitizer's stack trace prints), only the test groups that
# scripts/test.sh runs in them, no benchmark programs. ASan+UBSan at -O1 with
# assertions on: the optimisation ASan's authors recommend.
SAN_CMAKE := -DPSM_BENCH_TOOLS=OFF
build-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPSM_SANITIZE=address $(SAN_CMAKE) \
	  -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" "-DPSM_TEST_GROUPS=unit;integration" >/dev/null
	@cmake --build build-asan -j$(JOBS)

build-tsan: deps
	@cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPSM_SANITIZE=thread $(SAN_CMAKE) \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" "-DPSM_TEST_GROUPS=stress;integration" >/dev/null
	@cmake --build build-tsan -j$(JOBS)

# What `make run` runs and nothing more: psmfs (also the psm-guard it starts,
# the same binary, and the mount.fuse.psmfs helper, a link to it made by
# `make install`) and psmctl. The tests are built by `make build`/`make test`.
run: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS) --target psmfs psmctl
	@./scripts/run.sh "$(BUILD)/bin" "$(VOL)" "$(MNT)" "$(SIZE)"

stop:
	@fusermount3 -u "$(MNT)" 2>/dev/null || umount "$(MNT)" 2>/dev/null || true
	@echo "unmounted $(MNT)"

# Every suite: unit + fuse (normal build), unit + fuse under ASan+UBSan,
# concurrency/stress + fuse under TSan (docs/testing.md, "Sanitizers").
test: build build-asan build-tsan
	@./scripts/test.sh

test-unit: build
	@cd $(BUILD) && ctest -L unit --output-on-failure -j$(JOBS)

test-fuse: build
	@cd $(BUILD) && ctest -L fuse --output-on-failure

bench: build bench-deps
	@./tests/bench/run.sh "$(BUILD)/bin"

# docs/performance.md, "Scale". SCALE_FILES=200000 for a try (minutes).
bench-scale: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS) --target psmfs psmctl psmpopulate
	@./tests/bench/scale_run.sh "$(BUILD)/bin"

install: build
	@cmake --install $(BUILD) --prefix "$(or $(PREFIX),/usr/local)"

clean:
	rm -rf build build-asan build-tsan
