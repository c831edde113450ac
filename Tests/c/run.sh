#!/usr/bin/env bash
# The black-box C ABI suite: compiles against include/forklift.h and links the built library
# exactly as a user would, with gcc and clang, as C99 and C++17, shared and static.
# usage: run.sh LIBDIR INCLUDEDIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lib=$(cd "$1" && pwd)
inc=$(cd "$2" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
strict="-Wall -Wextra -pedantic -Werror"
clang_bin=$(command -v clang || echo /opt/swift/usr/bin/clang)
clangxx_bin=$(command -v clang++ || echo /opt/swift/usr/bin/clang++)

echo "== header: C99 and C++17, gcc and clang, $strict"
for cc in gcc "$clang_bin"; do
    echo '#include <forklift.h>' | $cc -std=c99 $strict -I"$inc" -x c -fsyntax-only -
done
for cxx in g++ "$clangxx_bin"; do
    $cxx -std=c++17 $strict -I"$inc" -c "$here/header_cxx.cpp" -o "$out/header_cxx.o"
done
g++ -std=c++17 $strict -I"$inc" "$here/header_cxx.cpp" -L"$lib" -Wl,-rpath,"$lib" -lforklift -o "$out/header_cxx"
"$out/header_cxx"

echo "== exported symbols: only fl_*"
# Global symbols only (upper-case type letter): the linker lists the local _TLS_MODULE_BASE_ of
# the thread-local descriptors too, which no program can bind to.
leaked=$(nm -D --defined-only "$lib/libforklift.so" | awk '$2 ~ /^[A-Z]$/ {print $3}' | grep -v '^fl_' || true)
if [ -n "$leaked" ]; then echo "symbols other than fl_* are exported:"; echo "$leaked" | head; exit 1; fi
if ldd "$lib/libforklift.so" | grep -q swift; then echo "libforklift.so depends on a Swift runtime library"; exit 1; fi

failed=0
total_pass=0
total_fail=0
run_test() {  # name binary
    local log="$out/$1.log"
    if "$2" >"$log" 2>&1; then status=ok; else status=FAILED; failed=1; fi
    cat "$log"
    local line
    line=$(grep -E '^[a-z_]+: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
    if [ -n "$line" ]; then
        total_pass=$((total_pass + $(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')))
        total_fail=$((total_fail + $(echo "$line" | sed -E 's/.* ([0-9]+) failed$/\1/')))
    else
        failed=1
    fi
    echo "-- $1: $status"
}

for t in "$here"/test_*.c; do
    name=$(basename "$t" .c)
    for cc in gcc "$clang_bin"; do
        tag=$(basename "$cc")
        # -rdynamic: spawned processes find task functions by their exported names.
        $cc -std=c99 $strict -O1 -g -rdynamic -I"$inc" "$t" -L"$lib" -Wl,-rpath,"$lib" -lforklift -lpthread -lm -o "$out/$name-$tag"
    done
    echo "== $name (gcc, shared)"
    run_test "$name" "$out/$name-gcc"
done

echo "== README quick start compiles and prints what it claims"
python3 - "$here/../../README.md" "$out/quickstart.c" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
block = re.search(r"## C quick start.*?```c\n(.*?)```", text, re.S).group(1)
open(sys.argv[2], "w").write(block)
PY
gcc -std=c99 $strict -I"$inc" "$out/quickstart.c" -L"$lib" -Wl,-rpath,"$lib" -lforklift -o "$out/quickstart"
expected=$(grep -oE '/\* 49 16 385 \*/' "$here/../../README.md" | grep -oE '[0-9]+ [0-9]+ [0-9]+')
got=$("$out/quickstart")
if [ "$got" = "$expected" ]; then total_pass=$((total_pass + 1)); echo "quickstart: $got"; else
    echo "README quick start printed '$got', README says '$expected'"; total_fail=$((total_fail + 1)); failed=1; fi

echo "== static archive: test_basics linked against libforklift.a"
gcc -std=c99 $strict -I"$inc" "$here/test_basics.c" "$lib/libforklift.a" -lffi -lstdc++ -lm -lpthread -ldl -o "$out/basics-static"
if ldd "$out/basics-static" | grep -q forklift; then echo "static binary still needs libforklift.so"; exit 1; fi
run_test static_basics "$out/basics-static"
# A spawned process of a static program finds the library inside the program itself.
gcc -std=c99 $strict -rdynamic -I"$inc" "$here/test_start_methods.c" "$lib/libforklift.a" -lffi -lstdc++ -lm -lpthread -ldl -o "$out/start-static"
run_test static_start_methods "$out/start-static"

echo "== install + pkg-config: a program outside the repo"
prefix="$out/prefix"
make -s -C "$here/../.." install PREFIX="$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc "$here/test_basics.c" $(pkg-config --cflags --libs forklift) -o "$out/basics-pkgconfig"
run_test pkgconfig_basics "$out/basics-pkgconfig"
cc -std=c99 -I"$here" "$here/test_pool.c" $(pkg-config --cflags --libs forklift) -lpthread -o "$out/pool-pkgconfig"
run_test pkgconfig_pool "$out/pool-pkgconfig"

echo "c-abi: $total_pass passed, $total_fail failed"
exit $failed
