"""A stand-in for CuPy that runs edu_seg's CUDA kernels on the CPU, for machines without a GPU.

``install(monkeypatch)`` puts this module in ``sys.modules`` as ``cupy``. Then:

- ``ndarray`` is a NumPy subclass whose ``__module__`` is ``"cupy"``, so edu_seg's dispatch
  (:func:`edu_seg.backend.kernels`) sends such arrays to the CUDA twin, ``.get()`` copies to a
  plain NumPy array, and ``cupy.<function>`` is NumPy's function with its array results
  turned into this ``ndarray``;
- ``RawModule(code=..., options=...)`` compiles the CUDA source as C++ with ``emulation.h``
  (g++), after generating for every ``extern "C" __global__`` kernel a launcher that runs it
  for each (block, thread) of the grid in turn; ``get_function(name)((grid), (block), args)``
  calls that launcher through ctypes with the argument types parsed from the kernel's
  signature.

What it checks: the kernels' index arithmetic, bounds, atomics (serialised) and the Python
wrappers around them, against the NumPy reference, on every machine. What it cannot check:
races (threads run one after another), anything NVRTC rejects that g++ accepts, speed, and
NumPy calls that real CuPy arrays refuse (NumPy accepts this subclass where CuPy raises).
"""
import ctypes
import hashlib
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy

__version__ = "0.0-emulated-on-cpu"
HEADER = Path(__file__).with_name("emulation.h")
_CACHE = Path(tempfile.gettempdir()) / "edu_seg_cuda_emulation"


class ndarray(numpy.ndarray):
    """A "device" array: NumPy memory that edu_seg treats as living on the GPU."""

    def get(self):
        """A NumPy copy on the "host" (CuPy's ``ndarray.get``)."""
        return numpy.array(self.view(numpy.ndarray))

    @property
    def device(self):
        return "emulated GPU 0"


ndarray.__module__ = "cupy"         # what edu_seg's dispatch (and CuPy's own arrays) report


def _on_device(value):
    if type(value) is numpy.ndarray:
        return value.view(ndarray)
    if isinstance(value, tuple):
        return tuple(_on_device(v) for v in value)
    if isinstance(value, list):
        return [_on_device(v) for v in value]
    return value


def asarray(a, dtype=None, order=None):
    """Copy host data to the "device" (a fresh array unless it is already a device array)."""
    if isinstance(a, ndarray) and (dtype is None or a.dtype == dtype):
        return a
    return numpy.array(a, dtype=dtype, order=order or "K").view(ndarray)


def array(a, dtype=None, copy=True, order="K"):
    return numpy.array(a, dtype=dtype, copy=copy, order=order).view(ndarray)


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else numpy.asarray(a)


def get_array_module(*arrays):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in arrays) else numpy


def __getattr__(name):
    """Any other ``cupy.<name>``: NumPy's, with array results on the "device"."""
    target = getattr(numpy, name)
    if not callable(target) or isinstance(target, type):
        return target

    def on_device(*args, **kwargs):
        return _on_device(target(*args, **kwargs))

    on_device.__name__ = name
    return on_device


# --------------------------------------------------------------------------------- kernels
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)
_SCALAR_CTYPES = {"long long": ctypes.c_longlong, "int": ctypes.c_int, "unsigned": ctypes.c_uint,
                  "float": ctypes.c_float, "double": ctypes.c_double, "bool": ctypes.c_bool,
                  "int64_t": ctypes.c_int64}


def _parameters(text, scalar_t):
    """[(C type, name, ctypes type)] of a kernel's parameter list."""
    out = []
    for raw in (p.strip() for p in text.split(",") if p.strip()):
        match = re.match(r"(.*?)(\w+)$", raw, re.S)
        ctype, name = " ".join(match.group(1).split()), match.group(2)
        if "*" in ctype:
            out.append((ctype, name, ctypes.c_void_p))
            continue
        base = " ".join(w for w in ctype.split() if w not in ("const", "__restrict__"))
        base = {"scalar_t": scalar_t}.get(base, base)
        if base not in _SCALAR_CTYPES:
            raise TypeError(f"cupy_on_cpu: kernel parameter {raw!r} has a type the emulator "
                            f"does not know ({base!r}); use long long, scalar_t or a pointer")
        out.append((ctype, name, _SCALAR_CTYPES[base]))
    return out


def _launcher(name, params):
    """C++ for ``launch_<name>``: run the kernel for every (block, thread), one at a time."""
    signature = ", ".join(f"{t} {n}" for t, n, _ in params)
    arguments = ", ".join(n for _, n, _ in params)
    return f"""
extern "C" void launch_{name}(unsigned edu_gx, unsigned edu_gy, unsigned edu_gz,
                               unsigned edu_bx, unsigned edu_by, unsigned edu_bz{', ' + signature if signature else ''}) {{
    gridDim = {{edu_gx, edu_gy, edu_gz}};
    blockDim = {{edu_bx, edu_by, edu_bz}};
    for (unsigned edu_z = 0; edu_z < edu_gz; ++edu_z)
    for (unsigned edu_y = 0; edu_y < edu_gy; ++edu_y)
    for (unsigned edu_x = 0; edu_x < edu_gx; ++edu_x)
    for (unsigned edu_tz = 0; edu_tz < edu_bz; ++edu_tz)
    for (unsigned edu_ty = 0; edu_ty < edu_by; ++edu_ty)
    for (unsigned edu_tx = 0; edu_tx < edu_bx; ++edu_tx) {{
        blockIdx = {{edu_x, edu_y, edu_z}};
        threadIdx = {{edu_tx, edu_ty, edu_tz}};
        {name}({arguments});
    }}
}}
"""


def _defines(options):
    return dict(o[2:].split("=", 1) for o in options if o.startswith("-D") and "=" in o)


class RawModule:
    """CuPy's ``RawModule``, compiled for the CPU with g++ and ``emulation.h``."""

    def __init__(self, code, options=(), **_):
        defines = _defines(options)
        scalar_t = defines.get("scalar_t", "float")
        self._kernels = {name: _parameters(params, scalar_t)
                         for name, params in _KERNEL.findall(code)}
        program = code + "".join(_launcher(n, p) for n, p in self._kernels.items())
        flags = ["-std=c++14", "-O1", "-shared", "-fPIC", "-x", "c++", "-include", str(HEADER)]
        flags += [f"-D{k}={v}" for k, v in defines.items()]
        digest = hashlib.sha256((program + HEADER.read_text() + " ".join(flags)).encode())
        library = _CACHE / f"{digest.hexdigest()[:24]}.so"
        if not library.exists():
            _CACHE.mkdir(parents=True, exist_ok=True)
            source = library.with_suffix(".cu.cpp")
            source.write_text(program)
            partial = library.with_suffix(f".{id(self)}.tmp")
            done = subprocess.run(["g++", *flags, str(source), "-o", str(partial)],
                                  capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"cupy_on_cpu: g++ could not compile the kernels "
                                   f"({source}):\n{done.stderr}")
            partial.replace(library)
        self._library = ctypes.CDLL(str(library))

    def get_function(self, name):
        if name not in self._kernels:
            raise AttributeError(f"cupy_on_cpu: no kernel {name!r}; the source defines "
                                 f"{sorted(self._kernels)}")
        params = self._kernels[name]
        function = getattr(self._library, f"launch_{name}")
        function.argtypes = [ctypes.c_uint] * 6 + [c for _, _, c in params]
        function.restype = None

        def kernel(grid, block, args, shared_mem=0):
            if len(args) != len(params):
                raise TypeError(f"{name}: {len(args)} arguments for {len(params)} parameters")
            values = []
            for (ctype, pname, _), value in zip(params, args):
                if "*" in ctype:
                    if not isinstance(value, ndarray):
                        raise TypeError(f"{name}: argument {pname} must be a device array, "
                                        f"got {type(value).__name__}")
                    if not value.flags.c_contiguous:
                        raise ValueError(f"{name}: argument {pname} is not C-contiguous")
                    values.append(value.ctypes.data)
                elif isinstance(value, numpy.generic):
                    values.append(value.item())
                else:
                    raise TypeError(f"{name}: argument {pname} must be a NumPy scalar with an "
                                    f"explicit type (as real CuPy wants), got {value!r}")
            g = tuple(grid) + (1,) * (3 - len(grid))
            b = tuple(block) + (1,) * (3 - len(block))
            function(*g, *b, *values)

        return kernel


# ------------------------------------------------------------------------------- cupy.cuda
def _device_properties(index):
    return {"name": b"CUDA emulated on the CPU (tests/cuda_emulation)"}


cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
    getDeviceCount=lambda: 1, runtimeGetVersion=lambda: 12000,
    getDeviceProperties=_device_properties))


def install(monkeypatch):
    """Make ``import cupy`` give this module for the rest of the test."""
    monkeypatch.setitem(sys.modules, "cupy", sys.modules[__name__])
    return sys.modules[__name__]
