# Platform: ngx_platform_module.so for a stock nginx, plus PostgreSQL.
#
#   make              build build/ngx_platform_module.so (target: build)
#   make SAN=1        ASan+UBSan build of nginx itself and the module:
#                     build/san/nginx, build/san/ngx_platform_module.so
#                     (nginx's full source comes from `apt-get source nginx`,
#                     see tools/nginx-source; objects in build/san/objs)
#   make deps         install missing Debian packages (and t/browser npm ci)
#   make run          build, start PostgreSQL (var/pg) and nginx on :8080
#                     (always the normal build with /usr/sbin/nginx)
#   make stop         stop what `make run` started
#   make test         run the test suite (TESTS="t/x.t ..." for some files;
#                     with SAN=1 against the sanitizer build)
#   make bench        run the benchmarks (BENCH=api-read for one)
#   make fuzz         fuzz the WebSocket frame parser, then the lift reading
#                     decoder, with libFuzzer for FUZZ_TIME seconds each
#                     (default 600); new inputs are kept in
#                     build/fuzz/corpus*, crashes in build/fuzz/
#   make clean        remove build/
#
# The module is built the way third-party modules are built for a packaged
# nginx: against a copy of the nginx sources the package was built from
# (Debian's nginx-dev, /usr/share/nginx/src), configured with the package's
# own flags plus --with-compat, so the .so loads into /usr/sbin/nginx.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

# nginx sources to build against; conf_flags there (Debian) holds the
# package's configure flags, otherwise only --with-compat is used.
NGINX_SRC ?= /usr/share/nginx/src

SAN ?= 0

ifeq ($(SAN),1)
BUILD_DIR := $(CURDIR)/build/san
# build/san/nginx is the binary, so the object directory is named objs.
OBJ_DIR := $(BUILD_DIR)/objs
CONF_EXTRA := --with-cc-opt='-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer' \
              --with-ld-opt='-fsanitize=address,undefined'
NGINX_BIN := $(BUILD_DIR)/nginx
else
BUILD_DIR := $(CURDIR)/build
OBJ_DIR := $(BUILD_DIR)/nginx
CONF_EXTRA :=
NGINX_BIN := /usr/sbin/nginx
endif

SRC_DIR := $(BUILD_DIR)/nginx-src
MODULE := $(BUILD_DIR)/ngx_platform_module.so
MODULE_SRCS := $(wildcard $(CURDIR)/ngx_platform_module/*)

# What `make build` produces: the module, and for SAN=1 the nginx binary.
ifeq ($(SAN),1)
BUILD_OUTPUTS := $(MODULE) $(NGINX_BIN)
else
BUILD_OUTPUTS := $(MODULE)
endif

export PLATFORM_NGINX := $(NGINX_BIN)
export PLATFORM_MODULE := $(MODULE)
export SAN

.PHONY: all build deps run stop test bench fuzz clean

# Our targets run one after the other (deps before build); nginx's own
# Makefile still gets -j.
.NOTPARALLEL:

all: build

build: $(BUILD_OUTPUTS) html/vendor/hls.min.mjs

# A private copy of the nginx sources, taken once.  Debian's nginx-dev has
# no .c files: for SAN=1 (which builds nginx itself) the package's complete
# source is fetched with apt-get source instead (tools/nginx-source).
$(SRC_DIR)/.copied:
	rm -rf '$(SRC_DIR)' '$(SRC_DIR).tmp'
	mkdir -p '$(BUILD_DIR)'
	if [ '$(SAN)' = 1 ] && [ ! -f '$(NGINX_SRC)/src/core/nginx.c' ]; then \
	    tools/nginx-source '$(SRC_DIR).tmp'; \
	else \
	    cp -a '$(NGINX_SRC)/.' '$(SRC_DIR).tmp'; \
	fi
	mv '$(SRC_DIR).tmp' '$(SRC_DIR)'
	touch '$@'

# configure (~20 s): only when not configured yet or `config` changed.
$(OBJ_DIR)/Makefile: $(CURDIR)/config $(SRC_DIR)/.copied
	@echo "configuring nginx with ngx_platform_module (log: $(BUILD_DIR)/configure.log)"
	cd '$(SRC_DIR)' \
	&& flags=() \
	&& if [ -f conf_flags ]; then . ./conf_flags; flags=("$${NGX_CONF_FLAGS[@]}"); fi \
	&& if ./configure "$${flags[@]}" --with-compat $(CONF_EXTRA) \
	        --add-dynamic-module='$(CURDIR)' --builddir='$(OBJ_DIR)' \
	        > '$(BUILD_DIR)/configure.log' 2>&1; \
	   then touch '$@'; \
	   else tail -n 30 '$(BUILD_DIR)/configure.log' >&2; rm -f '$@'; exit 1; fi

# The module: nginx's own Makefile decides what to recompile.  Copied by
# rename so a running nginx never sees a half-written file.
$(MODULE): $(OBJ_DIR)/Makefile $(MODULE_SRCS)
	cd '$(SRC_DIR)' && $(MAKE) -f '$(OBJ_DIR)/Makefile' modules
	cp '$(OBJ_DIR)/ngx_platform_module.so' '$@.tmp'
	mv '$@.tmp' '$@'

ifeq ($(SAN),1)
# SAN=1 only: nginx itself built with the sanitizers (an ASan module cannot
# be loaded into a binary without the ASan runtime).  After the module, so
# the two never run in the same object directory at once.
$(NGINX_BIN): $(MODULE)
	cd '$(SRC_DIR)' && $(MAKE) -f '$(OBJ_DIR)/Makefile'
	cp '$(OBJ_DIR)/nginx' '$@.tmp'
	mv '$@.tmp' '$@'
endif

deps:
	tools/deps

# Always the normal build: /usr/sbin/nginx loads build/ngx_platform_module.so.
run: deps
	$(MAKE) SAN=0 build
	tools/dev-server start

stop:
	tools/dev-server stop

test: deps build
	TESTS='$(TESTS)' tools/run-tests

bench: deps build
	BENCH='$(BENCH)' tools/run-bench

# The frame parser is plain C (no nginx headers), so its fuzzer builds on
# its own; t/82-ws-fuzz.t runs it briefly in every `make test`.
FUZZ_TIME ?= 600
FUZZ_DIR := $(CURDIR)/build/fuzz
FUZZ_SRCS := t/fuzz/ws_frame_fuzz.c \
             ngx_platform_module/ngx_platform_ws_frame.c \
             ngx_platform_module/ngx_platform_ws_frame.h

$(FUZZ_DIR)/ws_frame_fuzz: $(FUZZ_SRCS)
	mkdir -p '$(FUZZ_DIR)'
	clang -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=undefined -I ngx_platform_module \
	    t/fuzz/ws_frame_fuzz.c ngx_platform_module/ngx_platform_ws_frame.c \
	    -o '$@'

fuzz: $(FUZZ_DIR)/ws_frame_fuzz $(FUZZ_DIR)/reading_fuzz
	mkdir -p '$(FUZZ_DIR)/corpus'
	cd '$(FUZZ_DIR)' && ./ws_frame_fuzz -max_total_time=$(FUZZ_TIME) \
	    -print_final_stats=1 corpus '$(CURDIR)/t/fuzz/corpus/ws_frame'
	mkdir -p '$(FUZZ_DIR)/corpus-reading'
	cd '$(FUZZ_DIR)' && ./reading_fuzz -max_total_time=$(FUZZ_TIME) \
	    -print_final_stats=1 corpus-reading '$(CURDIR)/t/fuzz/corpus/reading'

# The lift reading decoder (MessagePack and JSON paths), plain C as well;
# t/123-lifts-fuzz.t runs it briefly in every `make test`.
READING_FUZZ_SRCS := t/fuzz/reading_fuzz.c \
                     ngx_platform_module/ngx_platform_reading.c \
                     ngx_platform_module/ngx_platform_reading.h

$(FUZZ_DIR)/reading_fuzz: $(READING_FUZZ_SRCS)
	mkdir -p '$(FUZZ_DIR)'
	clang -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=undefined -I ngx_platform_module \
	    t/fuzz/reading_fuzz.c ngx_platform_module/ngx_platform_reading.c \
	    -lmsgpackc -lm -o '$@'

clean:
	rm -rf build

# hls.js for the video player (html/js/player.js, docs/hls.md): the version
# in package.json/package-lock.json, installed by npm ci and copied into
# html/vendor/ (not committed; rebuilt when the lock file changes).
html/vendor/hls.min.mjs: package-lock.json
	npm ci --no-audit --no-fund
	mkdir -p html/vendor
	cp node_modules/hls.js/dist/hls.min.mjs '$@.tmp'
	mv '$@.tmp' '$@'
