#!/usr/bin/env bash
# Leak and memory-error check of the C core, without Python in the way.
#
#   tools/leakcheck.sh              # both checks below
#   tools/leakcheck.sh valgrind     # only valgrind memcheck
#   tools/leakcheck.sh asan         # only ASan+UBSan with LeakSanitizer
#   tools/leakcheck.sh selftest     # both must FAIL on a planted leak
#   tools/leakcheck.sh python [pytest args]
#                                   # the Python tests under valgrind, failing
#                                   # on a definite leak allocated by the core
#
# tests/c/test_core.c drives every public call of the core (including every
# allocation failure the injector can produce and hostile saved states) and
# destroys all it made, so any block still allocated at exit is a leak.
# It is compiled straight from csrc/*.c into a temporary directory: nothing
# in the work tree is built or replaced.
#
# Exit status 0 only if every check ran clean.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pyiova-leakcheck.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

CC=${CC:-gcc}
# The extension's own flags (build_ext.py), so the driver sees the same code.
CFLAGS=(-std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -g -I"$REPO/csrc")
SOURCES=("$REPO"/csrc/*.c "$REPO/tests/c/test_core.c")

what=${1:-all}
[ $# -eq 0 ] || shift
status=0

run_valgrind() {
    echo "leakcheck: valgrind memcheck" >&2
    # -O1: fast enough, and little enough inlining that stacks stay readable
    "$CC" "${CFLAGS[@]}" -O1 "${SOURCES[@]}" -pthread -lm -o "$WORK/test_core"
    local t0=$(date +%s)
    # definite leaks and every memory error fail the run; "still reachable"
    # cannot happen here (the driver frees everything) but would not be a bug
    if valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible \
            --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
            --track-origins=yes "$WORK/test_core"; then
        echo "leakcheck: valgrind clean ($(( $(date +%s) - t0 ))s)" >&2
    else
        echo "leakcheck: valgrind FAILED" >&2
        status=1
    fi
}

run_asan() {
    echo "leakcheck: ASan+UBSan+LeakSanitizer" >&2
    # -fno-sanitize-recover: undefined behaviour stops the run with an error
    # instead of printing and carrying on with an exit status of 0
    "$CC" "${CFLAGS[@]}" -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
        -fno-omit-frame-pointer "${SOURCES[@]}" -pthread -lm -o "$WORK/test_core_asan"
    local t0=$(date +%s)
    if ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1 \
       UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$WORK/test_core_asan"; then
        echo "leakcheck: ASan+UBSan+LSan clean ($(( $(date +%s) - t0 ))s)" >&2
    else
        echo "leakcheck: ASan+UBSan+LSan FAILED" >&2
        status=1
    fi
}

# The Python test suite under valgrind. CPython leaves objects behind at exit
# by design, so rather than failing on every definite leak this fails on
# those whose allocation stack passes through the compiled core.
run_python() {
    echo "leakcheck: pytest under valgrind (slow: about 40x)" >&2
    [ $# -gt 0 ] || set -- tests/test_lifetime.py
    local so py
    # the interpreter itself, not a wrapper script (pyenv's shims are bash,
    # and valgrind would only watch bash)
    py=$(python3 -c 'import sys; print(sys.executable)')
    so=$(cd "$REPO" && "$py" -c 'import pyiova._pyiova as m; print(m.__file__)')
    # one log per process: anything pytest forks reports its own leaks
    local logs=$WORK/python-valgrind
    mkdir -p "$logs"
    (cd "$REPO" && PYTHONMALLOC=malloc valgrind --leak-check=full \
        --show-leak-kinds=definite --num-callers=40 --log-file="$logs/%p.log" \
        "$py" -m pytest -q -p no:cacheprovider "$@") || status=1
    python3 - "$logs" "$(basename "$so")" <<'EOF' || status=1
import glob, os, re, sys
logs, module = sys.argv[1], sys.argv[2]
ours, summaries = [], []
for path in sorted(glob.glob(os.path.join(logs, "*.log"))):
    text = open(path).read()
    records = re.split(r"\n==\d+== \n", text)
    # every call into the core passes through a cffi wrapper _cffi_f_<name>;
    # frames show the module's name instead when it has no debug information
    ours += [r for r in records if "are definitely lost" in r
             and ("_cffi_f_" in r or module in r)]
    summaries += re.findall(r"definitely lost: [^\n]*", text)
for r in ours:
    print(r, file=sys.stderr)
print("leakcheck: python run: %d process(es) [%s]; %d definite leak record(s) through %s"
      % (len(summaries), "; ".join(summaries) or "no leak summary", len(ours), module),
      file=sys.stderr)
sys.exit(1 if ours else 0)
EOF
}

case $what in
    all) run_valgrind; run_asan ;;
    valgrind) run_valgrind ;;
    asan) run_asan ;;
    python) run_python "$@" ;;
    selftest)
        # a check that cannot fail proves nothing: plant a leak, expect both
        # checkers to report it
        export TEST_CORE_LEAK_CANARY=1
        run_valgrind; v=$status; status=0
        run_asan; a=$status
        if [ $v -ne 0 ] && [ $a -ne 0 ]; then
            echo "leakcheck: selftest ok: both checkers caught the planted leak" >&2
            status=0
        else
            echo "leakcheck: selftest FAILED: valgrind=$v asan=$a (1 = caught)" >&2
            status=1
        fi ;;
    *) echo "usage: $0 [all|valgrind|asan|selftest|python [pytest args]]" >&2; exit 2 ;;
esac
exit $status
