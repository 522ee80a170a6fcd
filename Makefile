# sqlalloc — build, test, install. `make` builds the libraries and the header; `make test` runs
# every suite (Rust, C, sanitizers, TCL); `make demo` shows the counters of each backend.
CARGO   ?= cargo
CC      ?= cc
PREFIX  ?= /usr/local
BUILD   ?= build
RELEASE := target/release
LIBA    := $(RELEASE)/libsqlalloc.a
LIBSO   := $(RELEASE)/libsqlalloc.so
CFLAGS_TEST := -std=c11 -O1 -g -Wall -Wextra -Werror -Iinclude
LDLIBS_TEST := -lsqlite3 -lpthread -ldl -lm

.PHONY: all lib header deps deps-demo demo test test-suites rust-test c-test c-test-asan tcl-test lint install clean

all: lib

lib:
	$(CARGO) build --release

# Regenerate include/sqlalloc.h from src/ffi/ (tests/header.rs fails when it is stale).
header:
	SQLALLOC_UPDATE_HEADER=1 $(CARGO) build --release

# What the targets need from the system, installed when missing (Debian/Ubuntu; scripts/deps.sh
# says what and why, uses sudo when not root, and fails naming the packages it could not install).
deps:
	scripts/deps.sh test

deps-demo:
	scripts/deps.sh demo

# deps first, then every suite (a sub-make, so that the order holds under -j too).
test: deps
	@$(MAKE) --no-print-directory test-suites

test-suites: lint rust-test readme-test c-test c-test-asan valgrind preload-test tcl-test rust-features-test sqlx-test oom-sweep-quick soak-quick bench-smoke asan-pool-test

rust-test:
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

clean:
	$(CARGO) clean
	rm -rf $(BUILD)

# ---- C tests, demo, install (owner: ctests; see c-tests/README.md) --------------------------
CTESTS       := t_workload t_nomem t_heaplimit t_limit t_threads t_misuse t_badspec t_debug t_serve t_scopes t_track
CTEST_DEPS   := c-tests/common.c c-tests/common.h include/sqlalloc.h $(LIBA)
CTEST_DIR    := $(BUILD)/c-tests
CTEST_ASAN_DIR := $(BUILD)/c-tests-asan
# The C code is instrumented; the Rust library is not (it is linked as it is shipped).
CFLAGS_ASAN  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# LeakSanitizer stays on, with one suppression (c-tests/lsan.supp): the counters each install
# leaks on purpose. handle_abort=0 (the default, spelled out): the debug overrun test expects its
# child to die of SIGABRT; ASan must not turn that abort into its own report and exit code.
ASAN_ENV     := ASAN_OPTIONS=detect_leaks=1:handle_abort=0:abort_on_error=0:halt_on_error=1 \
                LSAN_OPTIONS=suppressions=$(CURDIR)/c-tests/lsan.supp:print_suppressions=0 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Native libraries a static link of libsqlalloc.a needs: the output of
# `cargo rustc --release --lib --crate-type staticlib -- --print native-static-libs`.
NATIVE_STATIC_LIBS ?= -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
VERSION      := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
INSTALL      ?= install
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

$(CTEST_DIR)/%: c-tests/%.c $(CTEST_DEPS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_TEST) -o $@ $< c-tests/common.c $(LIBA) $(LDLIBS_TEST)

$(CTEST_ASAN_DIR)/%: c-tests/%.c $(CTEST_DEPS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_TEST) $(CFLAGS_ASAN) -o $@ $< c-tests/common.c $(LIBA) $(LDLIBS_TEST)

# The library is built first (`lib` runs cargo, which knows when it is up to date), then the
# test programs, then the driver prints one line per test x backend.
c-test: lib
	@$(MAKE) --no-print-directory $(CTESTS:%=$(CTEST_DIR)/%)
	MAKE="$(MAKE)" CC="$(CC)" c-tests/run.sh $(CTEST_DIR) pkgconfig

c-test-asan: lib
	@$(MAKE) --no-print-directory $(CTESTS:%=$(CTEST_ASAN_DIR)/%)
	$(ASAN_ENV) c-tests/run.sh $(CTEST_ASAN_DIR)

# The README's commands and code blocks, run as written (scripts/readme-test.sh; its Rust block is
# a doctest, run by rust-test).
.PHONY: readme-test
readme-test: deps lib preload
	scripts/readme-test.sh

demo: deps-demo
	@$(MAKE) --no-print-directory lib
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_TEST) -o $(BUILD)/demo examples/demo.c $(LIBA) $(LDLIBS_TEST)
	$(BUILD)/demo

install: lib
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 644 $(LIBA) $(DESTDIR)$(LIBDIR)/libsqlalloc.a
	$(INSTALL) -m 755 $(LIBSO) $(DESTDIR)$(LIBDIR)/libsqlalloc.so
	$(INSTALL) -m 644 include/sqlalloc.h $(DESTDIR)$(INCLUDEDIR)/sqlalloc.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@LIBS_PRIVATE@|$(NATIVE_STATIC_LIBS)|g' sqlalloc.pc.in \
	    > $(DESTDIR)$(PKGCONFIGDIR)/sqlalloc.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/sqlalloc.pc

# ---- SQLite's TCL malloc suites (owner: tcl; see tcl/run.sh) ---------------------------------
# Fetches SQLite 3.40.1's tree into $(BUILD), builds its testfixture twice (C allocators;
# sqlalloc through tcl/sqlalloc_tcl.c), runs the malloc suites on both, writes
# docs/tcl-results.md; fails when any sqlalloc cell fails.
tcl-test: deps lib
	tcl/run.sh --lib $(LIBA) --build $(BUILD) --out docs/tcl-results.md

# ---- LD_PRELOAD library (owner: preload; see docs/preload.md) --------------------------------
# `LD_PRELOAD=$(PRELOAD_SO) SQLALLOC=spec program`. Built with `-p` alone: built together with the
# root package, cargo would unify the core's features and the library would reference
# sqlite3_config, which it must find at run time (programs that dlopen SQLite later).
PRELOAD_SO := $(RELEASE)/libsqlalloc_preload.so
# tests-bundled's example `unreached` (rusqlite `bundled`, no sqlalloc call): a program whose
# SQLite the preload cannot reach. A target directory of its own: built with tests-bundled's
# profile (panic = unwind) into the main one, its dependencies' artifacts would be overwritten by
# the main workspace's (panic = abort) of the same names before tests-bundled's tests link them.
UNREACHED_DIR := $(abspath $(BUILD))/unreached
.PHONY: preload preload-test

preload:
	$(CARGO) build --release -p sqlalloc_preload

# The list of the preload library's running code, which preload/build.rs groups at the start of
# its text (docs/preload.md, "What the library itself costs a process"). Needs valgrind.
.PHONY: hot-text
hot-text: preload
	scripts/hot-text.py --so $(PRELOAD_SO)

# The tests run Debian's sqlite3 command-line program (`make deps` installs it), a C program
# that dlopens SQLite, and a C program linked with $(LIBA), all in cargo's release directory.
preload-test: deps lib preload
	@command -v sqlite3 >/dev/null 2>&1 || { echo "preload-test: sqlite3 is not installed (make deps)"; exit 1; }
	$(CARGO) clippy -p sqlalloc_preload --all-targets --no-deps -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p sqlalloc_preload
	$(CARGO) build --manifest-path tests-bundled/Cargo.toml --example unreached --target-dir $(UNREACHED_DIR)
	SQLALLOC_BUNDLED_EXAMPLE=$(UNREACHED_DIR)/debug/examples/unreached $(CARGO) test --release -p sqlalloc_preload

# ---- Rust API with the optional features (owner: rustapi; see docs/rust.md) ---------------
# jemalloc (built once by tikv-jemalloc-sys with autoconf: a few minutes the first time),
# mimalloc, the libsqlite3-sys link path, the examples, and rusqlite's `bundled` SQLite in the
# separate crate tests-bundled/. Part of `test`; run it alone when touching the Rust API.
RUST_FEATURES := jemalloc,mimalloc,libsqlite3-sys,prometheus-client,rusqlite
RUST_EXAMPLES := basic limit memsys5 jemalloc

.PHONY: rust-features-test
rust-features-test:
	$(CARGO) test --features $(RUST_FEATURES) --all-targets
	$(CARGO) test --features $(RUST_FEATURES) --doc
	$(CARGO) clippy --features $(RUST_FEATURES) --all-targets -- -D warnings
	for e in $(RUST_EXAMPLES); do $(CARGO) run -q --features $(RUST_FEATURES) --example $$e > /dev/null || exit 1; done
	$(CARGO) test --manifest-path tests-bundled/Cargo.toml --target-dir $${CARGO_TARGET_DIR:-target}

# ---- sqlx (owner: rustapi; see docs/rust.md, "sqlx") -------------------------------------------
# The package sqlx-examples/: sqlx 0.8 with libsqlite3-sys 0.30 (its bundled SQLite), a build of
# its own since the main crate's tests link libsqlite3-sys 0.40. Each example checks what it shows
# and exits non-zero, naming the check, when it does not hold; basic runs twice (system, and a
# memsys5 heap under sqlx's connection threads). In the same target directory as the rest, where
# it shares jemalloc's build with rust-features-test. On 2 cores: about 5 min from an empty target
# directory (2 of them jemalloc), about 5 s when nothing changed.
SQLX_ARGS := --manifest-path sqlx-examples/Cargo.toml --target-dir $${CARGO_TARGET_DIR:-target}

.PHONY: sqlx-test
sqlx-test:
	$(CARGO) fmt --manifest-path sqlx-examples/Cargo.toml --check
	$(CARGO) clippy $(SQLX_ARGS) --all-targets --features jemalloc -- -D warnings
	$(CARGO) run -q $(SQLX_ARGS) --example basic > /dev/null
	$(CARGO) run -q $(SQLX_ARGS) --example basic -- memsys5:heap=32M,min=64 > /dev/null
	$(CARGO) run -q $(SQLX_ARGS) --example limit > /dev/null
	$(CARGO) run -q $(SQLX_ARGS) --features jemalloc --example jemalloc > /dev/null

# ---- Benchmarks (owner: bench; see bench/run.py and docs/BENCHMARKS.md) ----------------------
# One libsqlite3.so (Debian's 3.40.1 tree, SQLITE_ENABLE_MEMSYS5), speedtest1 and the drivers
# linked against it, under $(BENCH_DIR). `bench` measures every configuration side by side
# (~10 min) and writes docs/BENCHMARKS.md and docs/benchmarks.svg; the preload library it uses is
# built with the jemalloc and mimalloc backends in its own target directory (jemalloc's autoconf
# build takes minutes the first time). `bench-smoke` (seconds once built) runs every
# configuration once on tiny inputs with the plain preload library (without those two backends:
# they are reported as skipped; pass BENCH_SMOKE_PRELOAD=$(BENCH_PRELOAD) to include them).
BENCH_DIR     := $(BUILD)/bench
BENCH_TARGET  ?= target/bench
BENCH_PRELOAD := $(BENCH_TARGET)/release/libsqlalloc_preload.so
BENCH_SMOKE_PRELOAD ?= $(PRELOAD_SO)
# The preload library without valgrind pool marking, for memsys3/memsys5 instruction counts.
NOMARK_TARGET  ?= target/nomark
NOMARK_PRELOAD := $(NOMARK_TARGET)/release/libsqlalloc_preload.so
.PHONY: bench bench-smoke bench-deps

# Debian's jemalloc and mimalloc for the LD_PRELOAD baselines, and valgrind for callgrind: part of
# what `make deps` installs.
bench-deps: deps

bench: lib preload bench-deps
	CARGO_TARGET_DIR=$(BENCH_TARGET) $(CARGO) build --release -p sqlalloc_preload --features jemalloc,mimalloc
	CARGO_TARGET_DIR=$(NOMARK_TARGET) $(CARGO) build --release -p sqlalloc_preload --features no-valgrind-marking
	bench/build.sh $(BENCH_DIR) $(LIBA)
	$(CARGO) build --release --example counters_cost
	python3 bench/run.py --build $(BENCH_DIR) --preload $(BENCH_PRELOAD) \
	  --preload-nomark $(NOMARK_PRELOAD) --counters-cost $(RELEASE)/examples/counters_cost \
	  --preload-rss $(PRELOAD_SO) --out docs/BENCHMARKS.md --chart docs/benchmarks.svg

# bench-live: the live-telemetry costs of issues 13 and 14, alternated in one run (about 3 min):
# the endpoint scraped 10x/s, the scopes layer, 100 tracked connections (bench/live_costs.py).
.PHONY: bench-live
bench-live: lib preload bench-deps
	bench/build.sh $(BENCH_DIR) $(LIBA)
	python3 bench/live_costs.py --build $(BENCH_DIR) --preload $(PRELOAD_SO) --rounds 21

bench-smoke: lib preload bench-deps
	CARGO_TARGET_DIR=$(NOMARK_TARGET) $(CARGO) build --release -p sqlalloc_preload --features no-valgrind-marking
	bench/build.sh $(BENCH_DIR) $(LIBA)
	CARGO_TARGET_DIR=$(BENCH_DIR)/rlsf_shim-target $(CARGO) test --release --locked -q --manifest-path bench/rlsf_shim/Cargo.toml
	$(CARGO) build --release --example counters_cost
	python3 bench/run.py --build $(BENCH_DIR) --preload $(BENCH_SMOKE_PRELOAD) --smoke \
	  --preload-nomark $(NOMARK_PRELOAD) --counters-cost $(RELEASE)/examples/counters_cost
	python3 bench/live_costs.py --build $(BENCH_DIR) --preload $(PRELOAD_SO) --rounds 1 --only endpoint

# ---- Fault injection: OOM sweep and soak (owner: fault; see docs/RELIABILITY.md) -------------
# Every backend of the C tests, plus `rust` and the `scopes` layer. oom_sweep installs BACKEND+fault and fails
# allocation k of a real workload for every k (c-tests/oom_sweep.c); soak runs 2 threads of mixed
# reads and writes with memstatus on and off (c-tests/soak.c). The quick versions are in `test`.
FAULT_BACKENDS := system debug memsys3:heap=64M memsys5:heap=128M,min=32 memsys5:heap=128M,min=32,shards=2 tlsf:heap=128M tlsf:heap=128M,shards=2 system+limit:max=1G rust system+scopes memsys5:heap=128M,min=32+scopes
OOM_ROWS       ?= 200
OOM_QUICK_ROWS ?= 20
SOAK_SECS      ?= 60
SOAK_QUICK_SECS ?= 5
.PHONY: oom-sweep oom-sweep-quick soak soak-quick

oom-sweep: lib
	@$(MAKE) --no-print-directory $(CTEST_DIR)/oom_sweep
	@for b in $(FAULT_BACKENDS); do $(CTEST_DIR)/oom_sweep -n $(OOM_ROWS) $$b || exit 1; done

oom-sweep-quick: lib
	@$(MAKE) --no-print-directory $(CTEST_DIR)/oom_sweep
	@for b in $(FAULT_BACKENDS); do $(CTEST_DIR)/oom_sweep -n $(OOM_QUICK_ROWS) $$b || exit 1; done

soak: lib
	@$(MAKE) --no-print-directory $(CTEST_DIR)/soak
	@for b in $(FAULT_BACKENDS); do for m in 1 0; do \
	  $(CTEST_DIR)/soak -t $(SOAK_SECS) -m $$m $$b || exit 1; done; done

soak-quick: lib
	@$(MAKE) --no-print-directory $(CTEST_DIR)/soak
	@for b in $(FAULT_BACKENDS); do for m in 1 0; do \
	  $(CTEST_DIR)/soak -t $(SOAK_QUICK_SECS) -m $$m $$b || exit 1; done; done

# ---- Fuzzing, Miri, valgrind (owner: verify; see docs/RELIABILITY.md) ------------------------
# fuzz: each cargo-fuzz target (fuzz/fuzz_targets/, one per backend) for FUZZ_SECS seconds, on
# nightly; installs cargo-fuzz from crates.io when missing. New inputs go to $(BUILD)/fuzz-corpus,
# the committed seeds (fuzz/corpus) are only read. fuzz-corpus: replay the committed corpus once
# through the same harness (a normal test: no nightly, no cargo-fuzz).
FUZZ_TARGETS := system debug memsys3 memsys5 tlsf rust jemalloc mimalloc scopes http
FUZZ_SECS    ?= 30
# Miri (nightly component): the pure-Rust cores with strict provenance, sized down by cfg(miri).
MIRI_LIB_TESTS := spec:: counters:: heap:: lock:: backend::fixed backend::memsys3 backend::memsys5 backend::tlsf stack:: marking::
MIRI_ENV     := MIRIFLAGS="-Zmiri-strict-provenance"
# The corpus replay of the pure-Rust heap cores only (system and debug call libc, which Miri cannot
# run); isolation is disabled for these so that the test can read the corpus files.
MIRI_CORPUS_TESTS := corpus_memsys3 corpus_memsys5 corpus_tlsf
# valgrind: the C tests that do not die on purpose, with small workloads (about 1-2 minutes).
VALGRIND     := valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
                --show-leak-kinds=definite --suppressions=$(CURDIR)/c-tests/valgrind.supp
VG_BACKENDS  := system debug memsys3:heap=64M memsys5:heap=128M,min=32 tlsf:heap=64M system+limit:max=1G
VG_PROGRAMS  := t_workload t_threads t_limit t_nomem t_misuse t_badspec t_debug
# asan-pool-test: AddressSanitizer reports a write past and a read after free of memsys3/memsys5/tlsf
# pool blocks (tests-asan/, its own crate: nightly, -Zsanitizer=address, the `asan` feature; about
# a minute cold, a second warm). SKIPPED (and success) without the nightly toolchain.
ASAN_POOL_DIR := $(BUILD)/tests-asan
.PHONY: fuzz fuzz-corpus miri valgrind asan-pool-test

fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD)/fuzz-corpus/$$t || exit 1; \
	  echo "fuzz: $$t for $(FUZZ_SECS) s"; \
	  (cd fuzz && cargo +nightly fuzz run $$t $(abspath $(BUILD))/fuzz-corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECS) -print_final_stats=1) || exit 1; \
	done

fuzz-corpus:
	$(CARGO) test --test fuzz_corpus

# An explicit --target keeps RUSTFLAGS off the build scripts (cbindgen), as cargo-fuzz does.
asan-pool-test:
	@if cargo +nightly --version >/dev/null 2>&1; then \
	  host=$$(rustc +nightly -vV | sed -n 's/^host: //p'); \
	  RUSTFLAGS=-Zsanitizer=address cargo +nightly run -q --manifest-path tests-asan/Cargo.toml \
	    --target $$host --target-dir $(ASAN_POOL_DIR); \
	else \
	  echo "asan-pool-test: SKIPPED: the nightly toolchain is not installed here" \
	       "(rustup toolchain install nightly)"; \
	fi

miri:
	@if cargo +nightly miri --version >/dev/null 2>&1; then \
	  $(MIRI_ENV) cargo +nightly miri test --lib -- $(MIRI_LIB_TESTS) && \
	  MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-disable-isolation" \
	    cargo +nightly miri test --test fuzz_corpus -- $(MIRI_CORPUS_TESTS); \
	else \
	  echo "miri: SKIPPED: the nightly toolchain's Miri component is not installed here" \
	       "(rustup toolchain install nightly --component miri rust-src)"; \
	fi

valgrind: deps lib
	@command -v valgrind >/dev/null 2>&1 || { echo "valgrind: not installed (make deps)"; exit 1; }
	@$(MAKE) --no-print-directory $(VG_PROGRAMS:%=$(CTEST_DIR)/%)
	$(VALGRIND) $(CTEST_DIR)/t_workload -n 1000 $(VG_BACKENDS)
	$(VALGRIND) $(CTEST_DIR)/t_threads -n 300 memsys5:heap=128M,min=32
	$(VALGRIND) $(CTEST_DIR)/t_threads -n 300 memsys3:heap=64M
	$(VALGRIND) $(CTEST_DIR)/t_threads -n 300 tlsf:heap=64M,shards=2
	$(VALGRIND) $(CTEST_DIR)/t_limit memsys5:heap=128M,min=32
	$(VALGRIND) $(CTEST_DIR)/t_limit memsys3:heap=64M
	$(VALGRIND) $(CTEST_DIR)/t_limit tlsf:heap=64M
	$(VALGRIND) $(CTEST_DIR)/t_nomem memsys5:heap=1M,min=64 memsys5:heap=16K
	$(VALGRIND) $(CTEST_DIR)/t_nomem memsys3:heap=1M memsys3:heap=16K
	$(VALGRIND) $(CTEST_DIR)/t_nomem tlsf:heap=1M tlsf:heap=16K
	$(VALGRIND) $(CTEST_DIR)/t_misuse
	$(VALGRIND) $(CTEST_DIR)/t_badspec
	$(VALGRIND) $(CTEST_DIR)/t_debug leak
	@echo "valgrind: 13 passed, 0 failed"
