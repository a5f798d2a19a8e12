# The C core's cffi extension module, generated at build time by build_ext.py.
# Its members are the C declarations in build_ext.py, which no type checker
# can read: `ffi` (cffi's FFI object) and `lib` (the C functions and
# constants) are typed as Any, and the Python layer's own annotations say
# what each call takes and returns.
from typing import Any

ffi: Any
lib: Any
