"""Every zoo model with a PyTorch twin (``benchmarks/twins/``) computes what its twin computes.

The twin is the same network written independently in PyTorch; loaded with our weights it
must give our scores in eval mode and the same named outputs in training mode. Skipped
where PyTorch is not installed.
"""
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))

import twins  # noqa: E402
from edu_seg import models  # noqa: E402
from edu_seg.autograd import Tensor, no_grad  # noqa: E402

torch = pytest.importorskip("torch")

PAIRS = [(name, preset) for name in twins.available() for preset in twins.checked_presets(name)]


def _images(n=2, size=64, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("name, preset", PAIRS)
def test_twin_gives_our_scores(name, preset):
    torch.manual_seed(0)
    ours, twin = twins.build_pair(torch, name, preset=preset)
    x = _images()
    ours.eval(), twin.eval()
    with no_grad():
        expected = ours(Tensor(x)).data
    with torch.no_grad():
        got = twin(torch.from_numpy(x)).numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("name, preset", PAIRS)
def test_twin_has_our_training_outputs(name, preset):
    ours, twin = twins.build_pair(torch, name, preset=preset)
    x = _images()
    ours_out, twin_out = ours(Tensor(x)), twin(torch.from_numpy(x))
    if isinstance(ours_out, dict):
        assert isinstance(twin_out, dict) and set(twin_out) == set(ours_out)
        assert all(tuple(twin_out[k].shape) == ours_out[k].shape for k in ours_out)
    else:
        assert tuple(twin_out.shape) == ours_out.shape


def test_every_twin_is_of_a_registered_model():
    assert set(twins.available()) <= set(models.available())
