"""Build the compiled core: every ``kernels/<name>.pyx`` becomes ``edu_seg._kernels.<name>``.

Environment switches (read at build time):

- ``EDU_SEG_NO_OPENMP=1``     build serial kernels even if the compiler supports OpenMP.
- ``EDU_SEG_CYTHON_DEBUG=1``  turn Cython's bounds/wraparound/zero-division checks back on.
- ``EDU_SEG_NO_NATIVE=1``     do not add ``-march=native`` (for a wheel that must run elsewhere).
- ``EDU_SEG_ONLY=conv,pool``  build only these kernel modules (quick rebuilds while developing).
"""
import importlib.util
import os
import pathlib
import shutil
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools._distutils import ccompiler
from setuptools._distutils.errors import CompileError, LinkError
from setuptools._distutils.sysconfig import customize_compiler

HERE = pathlib.Path(__file__).parent

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def compiler_accepts(flags, source="int main(void) { return 0; }\n", link_flags=()):
    """True if the C compiler Python was built with compiles AND links ``source`` with ``flags``."""
    cc = ccompiler.new_compiler()
    customize_compiler(cc)
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        objs = cc.compile([src], output_dir=tmp, extra_postargs=list(flags))
        cc.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=list(link_flags))
        return True
    except (CompileError, LinkError, OSError):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def flag(name):
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


compile_args = ["-O3"]
link_args = []

if flag("EDU_SEG_NO_OPENMP"):
    use_openmp = False
    print("edu_seg build: OpenMP disabled by EDU_SEG_NO_OPENMP=1; kernels run serially.")
else:
    use_openmp = compiler_accepts(["-fopenmp"], OPENMP_PROBE, ["-fopenmp"])
    if use_openmp:
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    else:
        print("edu_seg build: the C compiler cannot build an OpenMP program; kernels run serially.")

native = not flag("EDU_SEG_NO_NATIVE") and compiler_accepts(["-march=native"])
if native:
    # Lets the C compiler vectorise the im2col/pooling loops with this CPU's widest SIMD.
    compile_args.append("-march=native")

# Record the instruction sets the build compiles for, so that edu_seg refuses (with a message)
# to load the kernels on a CPU without them instead of dying of an illegal instruction
# (edu_seg/_cpu.py). Kernels built for other flags than this build's are deleted first: else
# build_ext, which compares only file dates, would keep them.
_spec = importlib.util.spec_from_file_location("edu_seg_cpu", HERE / "edu_seg" / "_cpu.py")
cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpu)
here = cpu.cpu_flags()
if here is not None:
    building_for = cpu.vector_flags(here) if native else ()
    if cpu.read_build_flags() not in (None, building_for):
        print("edu_seg build: the compiled kernels were built for another CPU's instruction "
              "sets; rebuilding them all.")
        for old in (HERE / "edu_seg" / "_kernels").glob("*.so"):
            old.unlink()
    pathlib.Path(cpu.BUILD_FLAGS_FILE).write_text(" ".join(building_for) + "\n")

directives = {
    "language_level": 3,
    "boundscheck": flag("EDU_SEG_CYTHON_DEBUG"),
    "wraparound": flag("EDU_SEG_CYTHON_DEBUG"),
    "cdivision": not flag("EDU_SEG_CYTHON_DEBUG"),
    "initializedcheck": flag("EDU_SEG_CYTHON_DEBUG"),
}

extensions = [
    Extension(
        f"edu_seg._kernels.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[np.get_include(), "kernels"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                       ("EDU_SEG_OPENMP", "1" if use_openmp else "0")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for pyx in sorted((HERE / "kernels").glob("*.pyx"))
    if not os.environ.get("EDU_SEG_ONLY") or pyx.stem in os.environ["EDU_SEG_ONLY"].split(",")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        nthreads=int(os.environ.get("EDU_SEG_BUILD_JOBS", "0")),
    ),
)
