"""Bad sizes fail fast with a named ValueError: thread counts, RoIAlign work, geometry, outputs."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edu_seg
from edu_seg.autograd import pad
from edu_seg.ops import limits
from edu_seg.ops.conv import conv2d, conv_transpose2d
from edu_seg.ops.pool import (adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d,
                              max_unpool2d)
from edu_seg.ops.resample import interpolate
from edu_seg.ops.roi import roi_align, roi_pool

ROOT = Path(__file__).resolve().parents[1]


def _raises_fast(fn, match, seconds=1.0):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        fn()
    assert time.perf_counter() - start < seconds


# ============================================================================== item 1: threads
def _run(code, **env):
    """Run ``code`` in a fresh interpreter, so a crash there cannot take the test runner down."""
    base = {k: v for k, v in os.environ.items() if k != "EDU_SEG_NUM_THREADS"}
    return subprocess.run([sys.executable, "-c", code],
                          env={**base, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=120)


def test_huge_thread_count_raises_and_the_interpreter_survives():
    code = ("import edu_seg\n"
            "try:\n"
            "    edu_seg.set_num_threads(100000)\n"
            "except ValueError as e:\n"
            "    print('REFUSED', e)\n"
            "edu_seg.set_num_threads(1)\n"
            "print('ALIVE', edu_seg.get_num_threads())\n")
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert "REFUSED set_num_threads: n=100000" in out.stdout
    assert f"os.cpu_count()={os.cpu_count()}" in out.stdout
    assert f"{edu_seg.backend.max_num_threads()} threads" in out.stdout
    assert "ALIVE 1" in out.stdout


def test_huge_thread_count_from_the_environment_is_a_value_error():
    out = _run("import edu_seg", EDU_SEG_NUM_THREADS="40000")
    assert out.returncode == 1                 # a Python exception, not a signal or an abort
    assert "ValueError: EDU_SEG_NUM_THREADS='40000'" in out.stderr
    assert "n=40000" in out.stderr


def test_thread_bound_is_a_multiple_of_the_cpus():
    bound = edu_seg.backend.max_num_threads()
    assert bound == max(1, 4 * (os.cpu_count() or 1))
    edu_seg.set_num_threads(bound)             # the bound itself is accepted
    assert edu_seg.get_num_threads() == bound
    with pytest.raises(ValueError, match=rf"n={bound + 1} .* {bound} threads"):
        edu_seg.set_num_threads(bound + 1)


# ============================================================================ item 2: roi_align
X = np.ones((1, 16, 32, 32), np.float32)
BOX = [[0, 0, 0, 30, 30]]


def test_huge_sampling_ratio_is_refused_fast():
    _raises_fast(lambda: roi_align(X, BOX, 7, sampling_ratio=30000),
                 r"roi_align: this call would take .* bilinear samples.*smaller sampling_ratio")


def test_huge_box_with_adaptive_sampling_is_refused_fast():
    _raises_fast(lambda: roi_align(X, [[0, 0, 0, 1e7, 1e7]], 7, sampling_ratio=-1),
                 r"roi_align: .*1\.6e\+15 bilinear samples.*fixed sampling_ratio.*inside the "
                 r"image.*spatial_scale")
    _raises_fast(lambda: roi_align(X, [[0, 0, 0, 1e6, 1e6]], 7, aligned=True),
                 "roi_align: .* bilinear samples")


def test_roi_align_huge_output_size_is_refused():
    _raises_fast(lambda: roi_align(X, BOX, 10 ** 9), "roi_align: output_size=.*2\\*\\*24")
    _raises_fast(lambda: roi_pool(X, BOX, (100000, 100000)), r"roi_pool: .* GiB")


def test_ordinary_roi_calls_still_work():
    assert roi_align(X, BOX * 200, 7, sampling_ratio=2).shape == (200, 16, 7, 7)
    assert roi_align(X, [[0, 0, 0, 300, 300]], 14).shape == (1, 16, 14, 14)
    assert roi_pool(X, BOX, 7).shape == (1, 16, 7, 7)


# ======================================================================== item 3: geometry/size
x = np.ones((1, 3, 8, 8), np.float32)
w = np.ones((4, 3, 3, 3), np.float32)
wt = np.ones((3, 4, 3, 3), np.float32)
BIG = 2 ** 31


@pytest.mark.parametrize("name, call", [
    ("conv2d: stride", lambda: conv2d(x, w, stride=BIG)),
    ("conv2d: padding", lambda: conv2d(x, w, padding=(1, BIG))),
    ("conv2d: dilation", lambda: conv2d(x, w, dilation=BIG)),
    ("conv_transpose2d: stride", lambda: conv_transpose2d(x, wt, stride=BIG)),
    ("conv_transpose2d: dilation", lambda: conv_transpose2d(x, wt, dilation=BIG)),
    ("max_pool2d: kernel_size", lambda: max_pool2d(x, BIG)),
    ("max_pool2d: stride", lambda: max_pool2d(x, 2, stride=BIG)),
    ("max_pool2d: dilation", lambda: max_pool2d(x, 2, dilation=BIG)),
    ("avg_pool2d: padding", lambda: avg_pool2d(x, 3, padding=BIG)),
    ("adaptive_avg_pool2d: output_size", lambda: adaptive_avg_pool2d(x, 10 ** 9)),
    ("max_unpool2d: stride",
     lambda: max_unpool2d(*max_pool2d(x, 2, return_indices=True), 2, stride=BIG)),
    ("max_unpool2d: output_size",
     lambda: max_unpool2d(*max_pool2d(x, 2, return_indices=True), 2, output_size=(10 ** 9,) * 2)),
    ("interpolate: size", lambda: interpolate(x, size=10 ** 9)),
    ("interpolate: scale_factor", lambda: interpolate(x, scale_factor=1e9)),
    ("interpolate: scale_factor", lambda: interpolate(x, scale_factor=1e308)),
])
def test_geometry_above_2_24_is_refused_fast(name, call):
    _raises_fast(call, rf"^{name}.*2\*\*24")


@pytest.mark.parametrize("name, call", [
    ("conv2d", lambda: conv2d(x, w, padding=100000)),
    ("conv2d", lambda: conv2d(np.ones((1, 512, 64, 64), np.float32),
                              np.ones((1, 512, 64, 64), np.float32), padding=63)),  # im2col
    ("conv_transpose2d", lambda: conv_transpose2d(x, wt, stride=100000, output_padding=1)),
    ("adaptive_max_pool2d", lambda: adaptive_max_pool2d(x, (100000, 100000))),
    ("max_unpool2d", lambda: max_unpool2d(*max_pool2d(x, 2, return_indices=True), 2,
                                          stride=100000)),
    ("interpolate", lambda: interpolate(x, size=(100000, 100000))),
    ("interpolate", lambda: interpolate(x, scale_factor=12000.0)),
    ("pad", lambda: pad(x, (10 ** 6, 10 ** 6, 10 ** 6, 10 ** 6))),
])
def test_outputs_too_large_for_memory_are_refused_fast(name, call):
    _raises_fast(call, rf"^{name}: the (output|work buffer) would be .* GiB, more than the "
                       rf".* limit.*it comes from")


def test_limits_helpers():
    assert limits.max_bytes() <= limits.MAX_BYTES
    limits.check_output_size("op", (1, 1, 10, 10), np.float32, "size")  # fine: no error
    with pytest.raises(ValueError, match=r"op: the output would be .*16\.0 GiB.*from size=9"):
        limits.check_output_size("op", (4, 1, 2 ** 15, 2 ** 15), np.float32, "size=9")


def test_ordinary_large_shapes_still_work():
    big = np.ones((1, 2, 256, 256), np.float32)
    assert interpolate(big, scale_factor=4).shape == (1, 2, 1024, 1024)
    assert interpolate(big, size=(2000, 100), mode="nearest").shape == (1, 2, 2000, 100)
    assert conv2d(big, np.ones((4, 2, 7, 7), np.float32), padding=3, dilation=1).shape == \
        (1, 4, 256, 256)
    assert conv_transpose2d(big, np.ones((2, 2, 4, 4), np.float32), stride=2,
                            padding=1).shape == (1, 2, 512, 512)
    y, i = max_pool2d(big, 3, stride=2, padding=1, return_indices=True)
    assert max_unpool2d(y, i, 3, stride=2, padding=1, output_size=(256, 256)).shape == \
        (1, 2, 256, 256)
    assert avg_pool2d(big, 2).shape == (1, 2, 128, 128)
    assert adaptive_avg_pool2d(big, (1000, 1000)).shape == (1, 2, 1000, 1000)
