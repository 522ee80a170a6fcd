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

.PHONY: all lib header demo test rust-test c-test c-test-asan tcl-test lint install clean

all: lib

lib:
	$(CARGO) build --release

# Regenerate include/sqlalloc.h from src/ffi.rs (tests/header.rs fails when it is stale).
header:
	SQLALLOC_UPDATE_HEADER=1 $(CARGO) build --release

test: lint rust-test c-test c-test-asan

rust-test:
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
