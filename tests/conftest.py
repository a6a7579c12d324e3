"""Shared test setup: every test starts on the default backend and thread count; ``gpu`` runs
the CUDA twin (emulated on the CPU, and on a real GPU where there is one)."""
import importlib
import shutil
import sys

import edu_seg  # noqa: F401  (first: sets OPENBLAS_CORETYPE before NumPy loads BLAS)
import pytest
from hypothesis import settings

settings.register_profile("edu_seg", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("edu_seg")


@pytest.fixture(autouse=True)
def _restore_backend_and_threads():
    backend, threads = edu_seg.get_backend(), edu_seg.get_num_threads()
    yield
    edu_seg.set_backend(backend)
    edu_seg.set_num_threads(threads)


def _forget_cuda_twin():
    """Drop edu_seg.cuda's kernel modules, so the next import binds the current ``cupy``."""
    import edu_seg.cuda._raw as raw

    raw.compiled.cache_clear()
    for name in [m for m in sys.modules if m.startswith("edu_seg.cuda.") and m != raw.__name__]:
        del sys.modules[name]


class _Gpu:
    """What a CUDA-twin test needs: the ``cupy`` in use and the twin's modules."""

    def __init__(self, cupy, kind):
        self.cupy, self.kind = cupy, kind

    def twin(self, module):
        """``edu_seg.cuda.<module>``, bound to this ``cupy``."""
        return importlib.import_module(f"edu_seg.cuda.{module}")

    def to_device(self, *arrays):
        out = tuple(None if a is None else self.cupy.asarray(a) for a in arrays)
        return out[0] if len(out) == 1 else out


@pytest.fixture(scope="module", params=["emulated", pytest.param("cuda", marks=pytest.mark.gpu)])
def gpu(request):
    """The CUDA twin's ``cupy``: emulated on the CPU (tests/cuda_emulation) everywhere, and a real
    GPU where CuPy finds one (the ``gpu`` marker; skipped elsewhere)."""
    if request.param == "cuda":
        cupy = pytest.importorskip("cupy")
        try:
            if cupy.cuda.runtime.getDeviceCount() == 0:
                pytest.skip("CuPy sees no GPU")
        except Exception as exc:  # CuPy's CUDARuntimeError when there is no driver
            pytest.skip(f"CuPy cannot reach a GPU: {exc}")
        _forget_cuda_twin()
        yield _Gpu(cupy, "cuda")
        _forget_cuda_twin()
        return
    if shutil.which("g++") is None:
        pytest.skip("the CUDA emulation compiles the .cu files with g++, which is not installed")
    from cuda_emulation import cupy_on_cpu

    _forget_cuda_twin()
    with pytest.MonkeyPatch.context() as patch:
        yield _Gpu(cupy_on_cpu.install(patch), "emulated")
    _forget_cuda_twin()
