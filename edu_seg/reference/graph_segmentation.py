"""The merging loop of graph-based segmentation, in plain Python: the textbook twin of
``kernels/graph_segmentation.pyx``.

Felzenszwalb & Huttenlocher ("Efficient Graph-Based Image Segmentation", IJCV 2004) see an
image as a graph: one vertex per pixel, one edge between neighbouring pixels, weighted by how
different their colours are. A segmentation is a partition of the vertices into components.
The whole algorithm is one pass over the edges, lightest first:

- each component C carries its *internal difference* Int(C), the heaviest edge of its minimum
  spanning tree (0 for a single pixel), and its size |C|;
- an edge of weight w between two different components C1 and C2 merges them if

      w < min(Int(C1) + k/|C1|, Int(C2) + k/|C2|),

  i.e. if the two components are not clearly separated: the gap between them is no larger
  than the variation already inside each, plus a bonus k/|C| that lets small components grow
  (a single pixel has no inside variation to measure). Larger k, larger components.

Because the edges come lightest first, the edge that merges two components is the heaviest
edge of the merged spanning tree, so Int(C1 ∪ C2) = w: no spanning tree is ever built. The
only data structure needed is a *disjoint-set forest* (union-find): every vertex points to a
parent, a component is a tree, its root names it. ``find`` walks up to the root and then points
every vertex on the path straight at it (path compression); a merge hangs the smaller tree
under the larger root (union by size). Together they make each operation nearly O(1)
(Tarjan, "Efficiency of a good but not linear set union algorithm", JACM 1975).

A second pass over the same sorted edges then merges every component smaller than
``min_size`` into a neighbour, the lightest edge first (the authors' post-processing).

Only the loops live here; the image, the graph and the sorting are prepared by
:func:`edu_seg.proposals.felzenszwalb`, which also validates every argument.
"""
import numpy as np

__all__ = ["segment_graph"]


def _find(parent, v):
    """Root of v's tree; every vertex on the way is re-pointed straight at it."""
    root = v
    while parent[root] != root:
        root = parent[root]
    while parent[v] != root:          # path compression: a second walk up the same path
        parent[v], v = root, parent[v]
    return root


def _merge(parent, size, a, b):
    """Merge the trees of roots a and b (union by size: the smaller hangs under the larger;
    equal sizes: b under a). Returns the root of the merged tree."""
    if size[a] < size[b]:
        a, b = b, a
    parent[b] = a
    size[a] += size[b]
    return a


def segment_graph(edges, weights, num_vertices, k, min_size):
    """Felzenszwalb–Huttenlocher merging over edges sorted by weight.

    Parameters
    ----------
    edges : (E, 2) int64 array, C-contiguous
        Vertex pairs, sorted by weight (lightest first).
    weights : (E,) float64 array
        The edge weights, non-decreasing.
    num_vertices : int
        Vertices are ``0 .. num_vertices - 1``.
    k : float
        The constant of the threshold function τ(C) = k/|C|, in the units of ``weights``.
    min_size : int
        Components smaller than this are merged into a neighbour in a second pass.

    Returns
    -------
    component : (num_vertices,) int64 array
        The root vertex of each vertex's component: two vertices are in one component iff
        they have the same root.

    Notes
    -----
    For each component the loop stores its size and its threshold
    ``Int(C) + k/|C|`` (not Int(C) itself): that is the only way Int(C) is ever used. The
    threshold is stored in float32, as in the authors' C++ code and in scikit-image, so that
    every comparison ``w < min(threshold)`` is the same, to the bit, as theirs.

    Examples
    --------
    A path 0 - 1 - 2 whose second edge is much heavier: with a small k only the first merges.

    >>> segment_graph(np.array([[0, 1], [1, 2]]), np.array([0.1, 5.0]), 3, 1.0, 1)
    array([0, 0, 2])
    """
    parent = list(range(num_vertices))
    size = [1] * num_vertices
    threshold = [float(np.float32(k))] * num_vertices     # Int({v}) = 0, |{v}| = 1
    edge_list = edges.tolist()                               # Python ints: a faster loop

    for (u, v), w in zip(edge_list, weights.tolist()):
        a, b = _find(parent, u), _find(parent, v)
        if a != b and w < min(threshold[a], threshold[b]):
            root = _merge(parent, size, a, b)
            # w is the heaviest edge of the merged spanning tree: Int(C1 ∪ C2) = w.
            threshold[root] = float(np.float32(w + k / size[root]))

    for u, v in edge_list:           # post-processing: absorb components below min_size
        a, b = _find(parent, u), _find(parent, v)
        if a != b and (size[a] < min_size or size[b] < min_size):
            _merge(parent, size, a, b)

    return np.array([_find(parent, v) for v in range(num_vertices)], dtype=np.int64)
