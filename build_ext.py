"""cffi builder for pyiova's C core (API, out-of-line mode).

The C sources in csrc/ are compiled into ``pyiova._pyiova``. The declarations
cffi sees come from the public headers that ``csrc/pyiova.h`` includes: each
of them holds only declarations cffi can parse (opaque structs, functions,
enums, integer #defines), so C and Python read the very same text.

Environment switches read at build time:
  PYIOVA_SANITIZE=address,undefined   build with gcc's sanitizers
  PYIOVA_DEBUG=1                      -O0 -g, for a debugger (the validators,
                                      *_check(), are always built: the tests
                                      call them)
"""
import glob
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")


def _public_headers():
    with open(os.path.join(CSRC, "pyiova.h")) as f:
        umbrella = f.read()
    return re.findall(r'^#include "([^"]+)"', umbrella, flags=re.M)


def _cdef_text(header):
    """The header with preprocessor lines dropped, integer #defines kept."""
    out = []
    define = re.compile(r"#define\s+([A-Z][A-Z0-9_]*)\s+"
                        r"\(?(-?(?:0x[0-9a-fA-F]+|\d+))[uUlL]*\)?\s*$")
    with open(os.path.join(CSRC, header)) as f:
        for line in f:
            stripped = re.sub(r"/\*.*?\*/|//.*", "", line).strip()
            if stripped.startswith("#"):
                m = define.match(stripped)
                if m:
                    out.append("#define %s %s\n" % m.groups())
                continue
            out.append(line)
    return "".join(out)


def _compile_args():
    args = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-unused-parameter",
            # Only PyInit_ needs exporting: hidden, the core's calls between
            # its own files are direct instead of through the PLT.
            "-fvisibility=hidden"]
    link = ["-pthread", "-lm"]
    if os.environ.get("PYIOVA_DEBUG"):
        args += ["-O0", "-g", "-DPYIOVA_DEBUG=1"]
    else:
        args += ["-O2"]
    sanitize = os.environ.get("PYIOVA_SANITIZE")
    if sanitize:
        flags = ["-fsanitize=" + sanitize, "-fno-omit-frame-pointer", "-g"]
        args += flags
        link += flags
    return args, link


ffibuilder = FFI()
for _h in _public_headers():
    ffibuilder.cdef(_cdef_text(_h))

_cflags, _ldflags = _compile_args()
ffibuilder.set_source(
    "pyiova._pyiova",
    '#include "pyiova.h"',
    sources=sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(CSRC, "*.c"))),
    include_dirs=[os.path.relpath(CSRC, HERE)],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
