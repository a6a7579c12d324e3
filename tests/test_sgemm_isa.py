"""The hand-written GEMM of the conv kernels (kernels/sgemm.h) has two code paths chosen when
it is compiled: one for CPUs with AVX-512 and one for CPUs without (AVX2: most laptops). The
package is built for the CPU it runs on, so the suite through ``edu_seg._kernels`` only ever
exercises one of them. Here the header is compiled twice, for this CPU and for this CPU with
AVX-512 switched off, and both builds must give the same bits (each element is the same chain
of fused multiply-adds over k in either path) and agree with NumPy."""
import ctypes
import os
import pathlib
import platform
import shutil
import tempfile

import numpy as np
import pytest
from setuptools._distutils import ccompiler
from setuptools._distutils.errors import CompileError, LinkError
from setuptools._distutils.sysconfig import customize_compiler

KERNELS = pathlib.Path(__file__).resolve().parent.parent / "kernels"

WRAPPER = r"""
#include "sgemm.h"
int gemm(int transA, int transB, int M, int N, int K, const float *A, int lda,
         const float *B, int ldb, float beta, float *C, int ldc) {
    return edu_sgemm(transA, transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
}
int gemm_prepacked(int transA, int transB, int M, int N, int K, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc) {
    float *Ap = aligned_alloc(64, sizeof(float) * (edu_packed_a_size(M, K) + 16));
    if (Ap == NULL)
        return -1;
    edu_pack_a_whole(transA, A, lda, M, K, Ap);
    int status = edu_sgemm_prepacked(transB, M, N, K, Ap, B, ldb, beta, C, ldc);
    free(Ap);
    return status;
}
"""

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="the two code paths are x86's (AVX-512 and AVX2)")


def _build(tmp, name, flags):
    cc = ccompiler.new_compiler()
    customize_compiler(cc)
    src = os.path.join(tmp, f"{name}.c")
    with open(src, "w") as f:
        f.write(WRAPPER)
    try:
        objs = cc.compile([src], output_dir=tmp, include_dirs=[str(KERNELS)],
                          extra_postargs=["-O3", "-fPIC", *flags])
        lib = os.path.join(tmp, f"lib{name}.so")
        cc.link_shared_object(objs, lib)
    except (CompileError, LinkError) as exc:
        pytest.skip(f"the C compiler cannot build the GEMM with {flags}: {exc}")
    library = ctypes.CDLL(lib)
    for fn in (library.gemm, library.gemm_prepacked):
        fn.restype = ctypes.c_int
    return library


@pytest.fixture(scope="module")
def builds():
    tmp = tempfile.mkdtemp()
    try:
        yield {"native": _build(tmp, "native", ["-march=native"]),
               "no_avx512": _build(tmp, "no_avx512", ["-march=native", "-mno-avx512f"])}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(fn, trans_a, trans_b, a, b, beta, c):
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    N = b.shape[0] if trans_b else b.shape[1]
    out = c.copy()
    ptr = ctypes.POINTER(ctypes.c_float)
    status = fn(int(trans_a), int(trans_b), M, N, K, a.ctypes.data_as(ptr), a.shape[1],
                b.ctypes.data_as(ptr), b.shape[1], ctypes.c_float(beta),
                out.ctypes.data_as(ptr), N)
    assert status == 0
    return out


# odd sizes around the micro-tile (8 x 32), the 8- and 16-row transposes and the k block (256)
SHAPES = [(1, 1, 1), (7, 33, 5), (8, 32, 16), (13, 47, 257), (24, 70, 300), (65, 17, 31),
          (130, 129, 513), (6, 1030, 9)]


@pytest.mark.parametrize("M, N, K", SHAPES)
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("entry", ["gemm", "gemm_prepacked"])
def test_both_code_paths_give_the_same_bits_and_numpys_product(builds, M, N, K, trans_a,
                                                               trans_b, entry):
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    c = rng.standard_normal((M, N)).astype(np.float32)
    for beta in (0.0, 0.5):
        results = [_run(getattr(builds[name], entry), trans_a, trans_b, a, b, beta, c)
                   for name in ("native", "no_avx512")]
        np.testing.assert_array_equal(results[0], results[1])
        op_a = a.T if trans_a else a
        op_b = b.T if trans_b else b
        expected = op_a.astype(np.float64) @ op_b.astype(np.float64) + beta * c
        np.testing.assert_allclose(results[1], expected, rtol=1e-4, atol=1e-4 * np.sqrt(K))
