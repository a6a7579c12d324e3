"""The CUDA twin of Felzenszwalb-Huttenlocher merging == the NumPy reference, root for root
(emulated on the CPU, and on a real GPU where there is one: the ``gpu`` fixture)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_proposals import FH_PARAMS, random_images, shapes_images, sorted_graph

from edu_seg.reference import graph_segmentation as ref


def _check(gpu, edges, weights, num_vertices, k, min_size):
    twin = gpu.twin("graph_segmentation")
    got = twin.segment_graph(*gpu.to_device(edges, weights), num_vertices, k, min_size)
    assert type(got) is gpu.cupy.ndarray and got.dtype == np.int64
    assert got.shape == (num_vertices,)
    np.testing.assert_array_equal(got.get(), ref.segment_graph(edges, weights, num_vertices,
                                                               k, min_size))


@st.composite
def graphs(draw):
    """A random multigraph (self-loops and repeated pairs allowed) with many tied weights,
    sorted the way felzenszwalb sorts: a stable argsort, ties in edge order."""
    n = draw(st.integers(1, 40))
    E = draw(st.integers(0, 120))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    edges = rng.integers(0, n, size=(E, 2)).astype(np.int64)
    levels = draw(st.integers(1, 8))                  # few distinct weights: many exact ties
    weights = rng.integers(0, levels, size=E) / levels
    order = np.argsort(weights, kind="stable")
    return (np.ascontiguousarray(edges[order]), np.ascontiguousarray(weights[order]), n)


@given(graph=graphs(), k=st.sampled_from([0.0, 0.3, 1.0, 4.0, 25.0]), min_size=st.integers(1, 12))
def test_twin_matches_reference_on_random_graphs_with_ties(gpu, graph, k, min_size):
    edges, weights, n = graph
    _check(gpu, edges, weights, n, k, min_size)


def test_twin_on_the_hand_worked_graph_and_edge_cases(gpu):
    edges = np.array([[0, 1], [2, 3], [1, 2]], dtype=np.int64)
    weights = np.array([0.1, 0.2, 0.7])
    for k, min_size in ((1.0, 1), (1.4, 1), (1.0, 3)):
        _check(gpu, edges, weights, 4, k, min_size)
    # The float32 thresholds, to the bit: float32(0.1) > 0.1, so a weight of exactly 0.1 merges
    # under k = 0.1; a weight just below 1.0 merges under k = 1.0 (compared in double, it is
    # below; rounded to float32 it would not be).
    pair = np.array([[0, 1]], dtype=np.int64)
    _check(gpu, pair, np.array([0.1]), 2, 0.1, 1)
    _check(gpu, pair, np.array([1.0 - 1e-12]), 2, 1.0, 1)
    _check(gpu, pair, np.array([1.0]), 2, 1.0, 1)                       # equal: no merge
    _check(gpu, np.zeros((0, 2), np.int64), np.zeros(0), 3, 1.0, 5)      # no edges
    _check(gpu, np.zeros((0, 2), np.int64), np.zeros(0), 0, 1.0, 5)      # no vertices


@pytest.mark.parametrize("scale, sigma, min_size", FH_PARAMS)
def test_twin_matches_reference_on_image_grid_graphs(gpu, scale, sigma, min_size):
    """The 8-connected pixel graphs felzenszwalb builds, on Shapes and noise images."""
    for image in shapes_images(1, size=48) + random_images(1):
        edges, weights = sorted_graph(image, sigma)
        _check(gpu, edges, weights, image.shape[1] * image.shape[2], scale / 255.0, min_size)
