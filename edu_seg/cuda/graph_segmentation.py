"""Felzenszwalb-Huttenlocher merging on the GPU (CUDA twin of
:mod:`edu_seg.reference.graph_segmentation`).

Same function, signature and result as the reference, on CuPy arrays: edges ``(E, 2)`` int64
and weights ``(E,)`` float64, **already sorted by weight** (lightest first; the caller,
:func:`edu_seg.proposals.felzenszwalb`, sorts with a stable argsort, so ties keep the edge
order) -> ``component (num_vertices,)`` int64, the root vertex of each vertex's component, the
same roots as the reference's, vertex for vertex.

Why a GPU gains nothing here
----------------------------
The algorithm is one pass over the sorted edges, and each merge decision depends on all the
merges before it: whether edge e joins two components depends on their sizes and thresholds,
which the lighter edges decided. There is no independent work to spread over threads, and a
parallel union-find (merging in another order) would give other components. So the merging
loop runs in a kernel launched with **one thread** (grid 1, block 1), the reference's loop
statement for statement; a single GPU thread is much slower than a CPU core at this.

Why the twin exists anyway
--------------------------
The kernel contract (:data:`edu_seg.backend.KERNEL_CONTRACT`): every backend provides every
kernel, so code whose data lives on the GPU can run the whole pipeline there, without copying
the graph to the host and the labels back. The parts that are parallel are parallel: setting
up the forest and the final "root of every vertex" run one thread per vertex.
"""
import cupy
import numpy as np

from ._raw import compiled, launch

__all__ = ["segment_graph"]


def _run_on_one_thread(kernel, *args):
    """Launch ``kernel`` of ``graph_segmentation.cu`` as a single thread: grid (1,), block (1,).

    ``launch`` sizes the grid for ``n`` parallel work items; a sequential loop has one.
    Arguments are passed with the kernel's C types: arrays as pointers, NumPy scalars as given.
    """
    compiled("graph_segmentation", np.float64).get_function(kernel)((1,), (1,), args)


def segment_graph(edges, weights, num_vertices, k, min_size):
    """Felzenszwalb-Huttenlocher merging over edges sorted by weight; see the reference.

    edges (E, 2) int64 sorted by weight, weights (E,) float64 -> component (num_vertices,)
    int64, the root vertex of each vertex's component.
    """
    n = int(num_vertices)
    edges = cupy.ascontiguousarray(edges, dtype=cupy.int64)
    weights = cupy.ascontiguousarray(weights, dtype=cupy.float64)
    parent = cupy.empty(n, dtype=cupy.int64)
    size = cupy.empty(n, dtype=cupy.int64)
    threshold = cupy.empty(n, dtype=cupy.float32)        # Int(C) + k/|C|, float32 as the reference
    component = cupy.empty(n, dtype=cupy.int64)
    if n == 0:
        return component
    launch("graph_segmentation", "init_forest", np.float64, n, parent, size, threshold,
           float(k), n)
    _run_on_one_thread("merge_along_edges", edges, weights, parent, size, threshold,
                       np.float64(k), np.int64(edges.shape[0]), np.int64(min_size))
    launch("graph_segmentation", "find_roots", np.float64, n, parent, component, n)
    return component
