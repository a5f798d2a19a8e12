#!/usr/bin/env bash
# Runs the test suite (or the pytest arguments given) against a build of the
# C core instrumented with gcc's AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   tools/sanitize.sh                          # the whole suite
#   tools/sanitize.sh tests/test_fuzz.py -x    # any pytest arguments
#
# The build happens in a throwaway copy of the work tree with its own
# virtualenv, so the in-tree pyiova/_pyiova*.so that everyone else imports
# is never replaced by an instrumented one.
#
# Exit status: pytest's, or 1 if any sanitizer report was written even when
# pytest passed (a report from a subprocess, or one a test happened to catch).
#
# Environment:
#   PYIOVA_SANITIZE        sanitizers to build with (default address,undefined)
#   SANITIZE_KEEP=1        keep the copy and its logs (the path is printed)
#   SANITIZE_PYMALLOC=1    keep CPython's small-object allocator; by default it
#                          is switched off (PYTHONMALLOC=malloc) so that every
#                          buffer Python hands the C core gets ASan redzones
#   PYTHON                 interpreter to base the virtualenv on (default python3)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
SANITIZERS=${PYIOVA_SANITIZE:-address,undefined}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pyiova-sanitize.XXXXXX")

cleanup() {
    if [ "${SANITIZE_KEEP:-0}" = 1 ]; then
        echo "sanitize: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

start=$(date +%s)
TREE=$WORK/tree
LOGS=$WORK/logs
mkdir -p "$TREE" "$LOGS"

# The copy holds what the work tree holds - committed or not - minus build
# products and caches: a stale uninstrumented .so must not be importable.
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf -) | tar -C "$TREE" -xf -
else
    cp -a "$REPO"/. "$TREE"/
    rm -rf "$TREE"/.git "$TREE"/build "$TREE"/.hypothesis
fi
find "$TREE" \( -name '*.so' -o -name '*.o' -o -name '__pycache__' -o -name '*.egg-info' \) \
    -prune -exec rm -rf {} +

# The venv sees the packages of the interpreter running this script (cffi,
# pytest, hypothesis: whatever the caller installed, usually through
# `pip install -e ".[test]"`) through a .pth line, so only pyiova itself is
# installed here. A plain path line does not run that environment's own .pth
# hooks, so its editable pyiova cannot shadow the copy.
# The build runs with build isolation: pip installs what pyproject.toml's
# [build-system] requires names, so a fresh machine whose interpreter bundles
# an older setuptools builds exactly as `pip install -e .` does.
"$PYTHON" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$PYTHON" -c 'import site, sys; print("\n".join(site.getsitepackages()))' \
    >"$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/host-packages.pth"

echo "sanitize: building with -fsanitize=$SANITIZERS in $TREE" >&2
(cd "$TREE" && PYIOVA_SANITIZE=$SANITIZERS "$VPY" -m pip install -q --no-deps \
    -e . >"$LOGS/build.log" 2>&1) || {
    cat "$LOGS/build.log" >&2
    echo "sanitize: build failed" >&2
    exit 2
}
build_done=$(date +%s)

RUNTIME=
if [[ $SANITIZERS == *address* ]]; then
    # The interpreter itself is not instrumented, so the runtime has to be
    # loaded before anything else for ASan to intercept malloc. libstdc++
    # comes along: ASan resolves the real __cxa_throw when it starts, and a
    # C++ extension loaded later (matplotlib's) that throws would otherwise
    # abort the run in ASan's interceptor.
    RUNTIME="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
elif [[ $SANITIZERS == *undefined* ]]; then
    RUNTIME=$(gcc -print-file-name=libubsan.so)
fi

# Make sure the tests will import the instrumented module from the copy and
# not some other pyiova the host has installed.
SO=$(cd "$TREE" && ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD=$RUNTIME "$VPY" -c 'import pyiova._pyiova as m; print(m.__file__)')
case $SO in
    "$TREE"/*) ;;
    *) echo "sanitize: pyiova._pyiova resolves to $SO, not the copy" >&2; exit 2 ;;
esac
if [[ $SANITIZERS == *address* ]] && ! nm -D "$SO" | grep '__asan_init' >/dev/null; then
    echo "sanitize: $SO is not instrumented" >&2
    exit 2
fi

# detect_leaks=0: CPython leaves objects behind at exit by design; leaks of
# the C core are tools/leakcheck.sh's job. allocator_may_return_null=1: a
# request too big for memory must fail as malloc does (a MemoryError), not
# abort the run. Reports go to files as well as being fatal, so a report in a
# subprocess is caught even if the test that started it passes.
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=0:log_path=$LOGS/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$LOGS/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
if [ "${SANITIZE_PYMALLOC:-0}" != 1 ]; then
    export PYTHONMALLOC=malloc
fi
export PYTHONDONTWRITEBYTECODE=1

[ $# -gt 0 ] || set -- tests
set +e
(cd "$TREE" && LD_PRELOAD=$RUNTIME "$VPY" -m pytest -p no:cacheprovider "$@")
rc=$?
set -e
end=$(date +%s)

reports=$(find "$LOGS" -name 'asan.*' -o -name 'ubsan.*')
if [ -n "$reports" ]; then
    for f in $reports; do
        echo "==== sanitizer report $f" >&2
        cat "$f" >&2
    done
    [ $rc -ne 0 ] || rc=1
fi
echo "sanitize: build $((build_done - start))s, tests $((end - build_done))s," \
     "exit $rc, $(echo "$reports" | grep -c . || true) sanitizer report(s)" >&2
exit $rc
