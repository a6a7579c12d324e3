"""Whether the compiled core was built for a CPU that this one can stand in for.

The kernels are compiled with ``-march=native``: the compiler may use every instruction set the
building CPU has. Copied to a CPU without one of them (a virtual environment built on an
AVX-512 server and used on an AVX2 laptop, say), the first such instruction stops the process
with "Illegal instruction" — no exception, no message. So the build records the building CPU's
flags (``setup.py`` writes :data:`BUILD_FLAGS_FILE`), and ``edu_seg`` compares them with this
CPU's before it imports a compiled module. Linux only (``/proc/cpuinfo``); elsewhere nothing is
recorded and nothing is checked.

This module imports nothing from ``edu_seg`` (``setup.py`` loads it on its own, before anything
is built).
"""
import functools
import os

#: The instruction-set flags (as ``/proc/cpuinfo`` names them) that ``-march=native`` can make
#: the compiler use in vector and bit-manipulation code.
VECTOR_ISA_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "avx512f", "avx512dq",
    "avx512cd", "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi", "avx512_vbmi2",
    "avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq", "avx512_bf16", "avx512_fp16", "gfni",
    "vaes", "vpclmulqdq", "amx_tile",
)

#: Where the build writes the flags it compiled for (next to the compiled modules).
BUILD_FLAGS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_kernels",
                                "build_cpu_flags.txt")


@functools.lru_cache(maxsize=None)
def _cpuinfo_field(name, cpuinfo):
    """The value of the first ``name : value`` line of ``cpuinfo`` (the first CPU's), or None
    where the file cannot be read or has no such line. Read once per field: ``import edu_seg``
    asks for the flags twice (its BLAS setting, then the compiled core's check)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The flags of this CPU (a frozenset of str), or None where ``cpuinfo`` cannot be read."""
    flags = _cpuinfo_field("flags", cpuinfo)
    return None if flags is None else frozenset(flags.split())


def cpu_model_name(cpuinfo="/proc/cpuinfo"):
    """The CPU's ``model name`` ("AMD EPYC"), or None where ``cpuinfo`` cannot tell."""
    return _cpuinfo_field("model name", cpuinfo)


def vector_flags(flags):
    """The flags of :data:`VECTOR_ISA_FLAGS` among ``flags``, in that order (a tuple)."""
    return tuple(f for f in VECTOR_ISA_FLAGS if f in flags)


def widest_vectors(flags):
    """"AVX-512", "AVX2" or None: the widest x86 vector instructions among ``flags`` (None also
    when ``flags`` is None). Two CPUs with the same model name can differ here (an AMD EPYC of
    the Zen 3 generation has AVX2, one of Zen 4 AVX-512), and the kernels run about twice as
    fast with AVX-512, so every measured figure names it beside the model name.

    >>> widest_vectors({"avx", "avx2", "fma"})
    'AVX2'
    """
    flags = flags or ()
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None


def read_build_flags(path=BUILD_FLAGS_FILE):
    """The vector flags the compiled core was built for, or None if the build recorded none."""
    try:
        with open(path) as f:
            return tuple(f.read().split())
    except OSError:
        return None


def flags_missing_here(built, here):
    """The flags in ``built`` (what the build compiled for) that ``here`` (this CPU's flags)
    lacks, in order; () when either is unknown (None).

    >>> flags_missing_here(("avx2", "avx512f"), {"avx", "avx2", "fma"})
    ('avx512f',)
    """
    if built is None or here is None:
        return ()
    return tuple(f for f in built if f not in here)
