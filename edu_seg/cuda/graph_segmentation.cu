// Felzenszwalb-Huttenlocher merging on the GPU: the union-find loop, run by ONE thread.
// NumPy twin: edu_seg/reference/graph_segmentation.py (read it first: the merge rule, the
// disjoint-set forest, the float32 thresholds and the tie rules are explained there).
//
// Why one thread: each merge decision depends on every merge before it (the components an edge
// sees are the ones the lighter edges built), so the loop over the sorted edges is inherently
// sequential; a parallel union-find would merge in another order and give other components.
// The two loops below are therefore the reference's, statement for statement, in a kernel that
// only thread 0 of block 0 runs. Only the set-up of the forest and the final "find the root of
// every vertex" are parallel, one thread per vertex.
//
// The weights are float64 and the thresholds float32 whatever scalar_t is (the reference's
// types), so the kernels name double and float explicitly.

// Root of v's tree, with path compression: the second walk re-points every vertex on the path
// straight at the root (reference: _find).
__device__ inline long long find(long long* parent, long long v) {
    long long root = v;
    while (parent[root] != root) root = parent[root];
    while (parent[v] != root) {
        long long up = parent[v];
        parent[v] = root;
        v = up;
    }
    return root;
}

// Union by size of the trees of roots a and b: the smaller hangs under the larger, equal sizes
// b under a (reference: _merge). Returns the root of the merged tree.
__device__ inline long long merge(long long* parent, long long* size, long long a, long long b) {
    if (size[a] < size[b]) {
        long long t = a;
        a = b;
        b = t;
    }
    parent[b] = a;
    size[a] += size[b];
    return a;
}

// Every vertex its own component: parent[v] = v, size[v] = 1, threshold[v] = Int({v}) + k/1 = k
// rounded to float32. One thread per vertex.
extern "C" __global__ void init_forest(long long* parent, long long* size, float* threshold,
                                       double k, long long num_vertices) {
    for (long long v = blockIdx.x * (long long)blockDim.x + threadIdx.x; v < num_vertices;
         v += (long long)blockDim.x * gridDim.x) {
        parent[v] = v;
        size[v] = 1;
        threshold[v] = (float)k;
    }
}

// The merging pass, lightest edge first (edges (E, 2) and weights (E,) come sorted):
//     a = find(u), b = find(v);  merge if a != b and w < min(threshold[a], threshold[b]),
//     then threshold[root] = float32(w + k / |root|)   (Int of the merged component is w).
// Then the post-processing pass over the same edges: merge a != b whenever either component
// has fewer than min_size vertices. Sequential by nature: thread 0 of block 0 does it all.
extern "C" __global__ void merge_along_edges(const long long* edges, const double* weights,
                                             long long* parent, long long* size,
                                             float* threshold, double k, long long E,
                                             long long min_size) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;       // one thread: see the top of file
    for (long long e = 0; e < E; ++e) {
        long long a = find(parent, edges[2 * e]), b = find(parent, edges[2 * e + 1]);
        double w = weights[e];
        float tau = threshold[a] < threshold[b] ? threshold[a] : threshold[b];
        if (a != b && w < (double)tau) {
            long long root = merge(parent, size, a, b);
            threshold[root] = (float)(w + k / (double)size[root]);
        }
    }
    for (long long e = 0; e < E; ++e) {                     // absorb components below min_size
        long long a = find(parent, edges[2 * e]), b = find(parent, edges[2 * e + 1]);
        if (a != b && (size[a] < min_size || size[b] < min_size)) merge(parent, size, a, b);
    }
}

// component[v] = the root of v's tree (the name of its component). One thread per vertex; the
// forest is only read here (no path compression), so the threads do not race.
extern "C" __global__ void find_roots(const long long* parent, long long* component,
                                      long long num_vertices) {
    for (long long v = blockIdx.x * (long long)blockDim.x + threadIdx.x; v < num_vertices;
         v += (long long)blockDim.x * gridDim.x) {
        long long root = v;
        while (parent[root] != root) root = parent[root];
        component[v] = root;
    }
}
