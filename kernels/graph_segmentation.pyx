# cython: language_level=3
"""The merging loop of graph-based segmentation: the compiled twin of
``edu_seg/reference/graph_segmentation.py``.

Same function, signature and result as the reference, vertex for vertex (read it first: it
explains Felzenszwalb & Huttenlocher's merge rule and the union-find forest). The loop is the
reference's, statement for statement, with the same tie rules (union by size, equal sizes hang
the second root under the first), so even the roots agree. What changes:

- the forest, the sizes and the thresholds are C arrays, and the whole function runs without
  the GIL;
- it is serial. Each merge decision depends on every merge before it (the components an edge
  sees are the ones the lighter edges built), so there is no parallel loop to write.

The threshold of each component, Int(C) + k/|C|, is stored in float32 as in the authors' C++
code and in scikit-image; the comparison ``w < min(τ1, τ2)`` widens it back to double exactly
as the reference does.

Kernels validate nothing: :func:`edu_seg.proposals.felzenszwalb` checks every argument first.
"""
import numpy as np

from libc.stdint cimport int64_t


cdef inline int64_t find(int64_t* parent, int64_t v) noexcept nogil:
    """Root of v's tree, with path compression (reference: ``_find``)."""
    cdef int64_t root = v, up
    while parent[root] != root:
        root = parent[root]
    while parent[v] != root:
        up = parent[v]
        parent[v] = root
        v = up
    return root


cdef inline int64_t merge(int64_t* parent, int64_t* size, int64_t a, int64_t b) noexcept nogil:
    """Merge roots a and b by size, equal sizes b under a (reference: ``_merge``); new root."""
    cdef int64_t t
    if size[a] < size[b]:
        t = a
        a = b
        b = t
    parent[b] = a
    size[a] += size[b]
    return a


def segment_graph(const int64_t[:, ::1] edges, const double[::1] weights,
                  Py_ssize_t num_vertices, double k, Py_ssize_t min_size):
    """Felzenszwalb–Huttenlocher merging over edges sorted by weight.

    edges (E, 2) int64 sorted by weight, weights (E,) float64 -> component (num_vertices,)
    int64, the root of each vertex. See the reference for the definition.
    """
    component = np.empty(num_vertices, dtype=np.int64)
    size_arr = np.ones(num_vertices, dtype=np.int64)
    threshold_arr = np.full(num_vertices, k, dtype=np.float32)   # Int({v}) = 0, |{v}| = 1
    cdef int64_t[::1] parent = component      # the forest is built in the output array
    cdef int64_t[::1] size = size_arr
    cdef float[::1] threshold = threshold_arr
    cdef Py_ssize_t E = edges.shape[0], e, v
    cdef int64_t a, b, root
    cdef double w
    for v in range(num_vertices):
        parent[v] = v
    if num_vertices == 0:
        return component
    with nogil:
        for e in range(E):
            a = find(&parent[0], edges[e, 0])
            b = find(&parent[0], edges[e, 1])
            w = weights[e]
            if a != b and w < min(threshold[a], threshold[b]):
                root = merge(&parent[0], &size[0], a, b)
                # w is the heaviest edge of the merged spanning tree: Int(C1 ∪ C2) = w.
                threshold[root] = <float>(w + k / <double>size[root])

        for e in range(E):       # post-processing: absorb components below min_size
            a = find(&parent[0], edges[e, 0])
            b = find(&parent[0], edges[e, 1])
            if a != b and (size[a] < min_size or size[b] < min_size):
                merge(&parent[0], &size[0], a, b)

        for v in range(num_vertices):
            parent[v] = find(&parent[0], v)
    return component
