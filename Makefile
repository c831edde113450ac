# Forklift — build, test, demo, bench, install.
#
#   make demo      set up, build the library, build and run the C examples
#   make test      set up, then every test suite (swift test, C ABI tests, header check, sanitizers,
#                  Python binding tests)
#   make header    regenerate include/forklift.h from the Swift sources
#   make bench     the benchmark suite (QUICK=1 for a short run)
#   make install PREFIX=/usr/local

SWIFT_BIN ?= $(firstword $(wildcard /opt/swift/usr/bin) $(dir $(shell command -v swift 2>/dev/null)))
export PATH := $(SWIFT_BIN):$(PATH)

PREFIX    ?= /usr/local
BUILD     := build
LIBDIR    := $(BUILD)/lib
RAWHEADER := $(BUILD)/forklift-raw.h
SO        := $(LIBDIR)/libforklift.so
AR_LIB    := $(LIBDIR)/libforklift.a
SWIFT_STATIC := $(SWIFT_BIN)/../lib/swift_static/linux
CC        ?= cc
CFLAGS_C  := -std=c99 -Wall -Wextra -pedantic -Werror -O2 -g -Iinclude
LDFLAGS_C := -L$(LIBDIR) -Wl,-rpath,$(abspath $(LIBDIR)) -lforklift -lpthread -lm
# Release builds leave out the run-time exclusivity checks (swift_beginAccess on every class
# property access): `swift test` builds keep them, so the suites still catch a violation.
RELEASE_SWIFTC := -Xswiftc -static-stdlib -Xswiftc -enforce-exclusivity=unchecked -Xcc -mtls-dialect=gnu2
SOURCES   := $(shell find Sources -name '*.swift' -o -name '*.c' -o -name '*.h') Package.swift

.PHONY: all setup lib header check-header demo examples test test-swift test-c test-sanitize test-python bench install clean

all: lib

setup:
	@bash scripts/setup

# The release library: Swift runtime linked statically, only fl_* exported.
$(SO) $(RAWHEADER): $(SOURCES) scripts/forklift.map
	@mkdir -p $(LIBDIR)
	swift build -c release --product forklift $(RELEASE_SWIFTC) \
	    -Xswiftc -emit-clang-header-path -Xswiftc $(abspath $(RAWHEADER)) \
	    -Xlinker --version-script=$(abspath scripts/forklift.map)
	cp .build/release/libforklift.so $(SO)

# A self-contained static archive: the library, the Swift runtime parts it uses, and only
# fl_* left global. Link with: -lforklift -lffi -lstdc++ -lm -lpthread -ldl
$(AR_LIB): $(SOURCES)
	@mkdir -p $(LIBDIR)
	swift build -c release --product forklift-static $(RELEASE_SWIFTC) --scratch-path .build-static
	ld -r -o $(BUILD)/forklift-all.o $(SWIFT_STATIC)/x86_64/swiftrt.o \
	    --whole-archive .build-static/release/libforklift-static.a --no-whole-archive \
	    $(SWIFT_STATIC)/libswiftCore.a $(SWIFT_STATIC)/libswiftGlibc.a
	objcopy --wildcard --keep-global-symbol='fl_*' $(BUILD)/forklift-all.o
	rm -f $@ && ar rcs $@ $(BUILD)/forklift-all.o

lib: $(SO)

header: $(RAWHEADER)
	python3 scripts/gen-header.py $(RAWHEADER) include/forklift.h

# Fails when the checked-in header differs from what the sources generate.
check-header: $(RAWHEADER)
	python3 scripts/gen-header.py $(RAWHEADER) $(BUILD)/forklift.h
	@diff -u include/forklift.h $(BUILD)/forklift.h || \
	    { echo "include/forklift.h is stale: run 'make header' and commit it"; exit 1; }
	@echo "header: include/forklift.h is up to date"

examples: lib
	$(MAKE) -C examples-c LIBDIR=$(abspath $(LIBDIR)) INCLUDE=$(abspath include)

demo: setup examples
	$(MAKE) -C examples-c run LIBDIR=$(abspath $(LIBDIR)) INCLUDE=$(abspath include)

test: setup test-swift test-sanitize test-c test-python

test-swift:
	swift test --disable-swift-testing

# The black-box suite: C programs that include the header and link the .so like a user; then
# the examples, which exit non-zero on any error (the remote one also when a value is wrong).
test-c: lib check-header $(AR_LIB)
	bash Tests/c/run.sh $(LIBDIR) include
	$(MAKE) -C examples-c run LIBDIR=$(abspath $(LIBDIR)) INCLUDE=$(abspath include)

# The Python binding (bindings/python) against the library just built, with pytest.
test-python: lib
	cd bindings/python && python3 -m pytest -q -p no:cacheprovider -W error::pytest.PytestUnraisableExceptionWarning tests

# ThreadSanitizer and AddressSanitizer over the swift test suite (its concurrency tests call
# the C entry points from many threads).
test-sanitize:
	TSAN_OPTIONS=halt_on_error=1 \
	    swift test --disable-swift-testing --sanitize=thread --scratch-path .build-tsan
	ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 LSAN_OPTIONS=suppressions=$(abspath Tests/lsan.supp) \
	    swift test --disable-swift-testing --sanitize=address --scratch-path .build-asan

bench: lib
	bash bench/run.sh $(if $(QUICK),--quick,)

install: lib $(AR_LIB)
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(SO) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 $(AR_LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/forklift.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(shell sed -n 's/.*versionString: StaticString = "\(.*\)"/\1/p' Sources/Forklift/CAPI/RuntimeExports.swift)|' \
	    scripts/forklift.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/forklift.pc

clean:
	rm -rf $(BUILD) .build .build-static .build-tsan .build-asan
	$(MAKE) -C examples-c clean
