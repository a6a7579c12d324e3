"""Shared test setup: every test starts on the default backend and thread count."""
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
