// Non-maximum suppression on the GPU: the suppression bitmask (torchvision's CUDA design).
// NumPy twin: edu_seg/boxes.py, nms and _iou (read them first: same rule, same IoU formula).
//
// The boxes are ranked best first (the wrapper sorts them on the device: rank r is box
// order[r]). Greedy NMS keeps rank r unless a kept rank q < r has IoU(q, r) > threshold. The
// walk itself is sequential (whether r is kept depends on which earlier ranks were kept), but
// the K*K overlap tests it reads are independent, and they are the O(K^2) work: this kernel
// does all of them at once and packs the answers into bits, 64 columns per 64-bit word. The
// wrapper copies the words to the host and walks them there (edu_seg/cuda/nms.py).
//
// The wrapper compiles this file with scalar_t = double only: the IoU is compared in float64
// like the reference, whatever the boxes' dtype. It uses the exact operations of _iou, and
// its products go through __dmul_rn, which the compiler never fuses with an addition into an
// FMA (a fused a*b + c rounds once instead of twice, so a duplicate box could get IoU
// 1 + 1 ulp and be suppressed at threshold 1.0 where NumPy keeps it).

// IoU of boxes a and b, each (x1, y1, x2, y2); 0 where the union is empty (as _iou).
__device__ __forceinline__ double box_iou(const scalar_t* a, const scalar_t* b) {
    double w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0);
    double h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0);
    double inter = __dmul_rn(w, h);
    double area_a = __dmul_rn(a[2] - a[0], a[3] - a[1]);
    double area_b = __dmul_rn(b[2] - b[0], b[3] - b[1]);
    double uni = area_a + area_b - inter;
    return uni > 0 ? inter / uni : 0.0;
}

// mask[r, c] (K rows, col_blocks = ceil(K / 64) words per row), one thread per word:
//   bit t of mask[r, c] = 1  iff  s = 64 c + t satisfies  r < s < K,
//                                 group[order[s]] == group[order[r]]  and
//                                 IoU(boxes[order[r]], boxes[order[s]]) > iou_threshold,
// i.e. "rank r, if kept, suppresses rank s". Only columns s > r are set: a box suppresses
// only worse-ranked ones. group is all zeros for nms; for batched_nms it holds each box's
// class id, so that boxes of different classes never suppress each other.
// NumPy twin: the over = _iou(tile, tile) > iou_threshold matrices of boxes.nms.
extern "C" __global__ void suppression_mask(const scalar_t* boxes, const long long* order,
                                            const long long* group, unsigned long long* mask,
                                            long long K, long long col_blocks,
                                            scalar_t iou_threshold) {
    long long n = K * col_blocks;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long r = i / col_blocks, c = i % col_blocks;
        const scalar_t* a = boxes + 4 * order[r];
        long long first = 64 * c, end = min(first + 64, K);
        unsigned long long bits = 0;
        for (long long s = max(first, r + 1); s < end; ++s) {
            if (group[order[s]] == group[order[r]] &&
                box_iou(a, boxes + 4 * order[s]) > iou_threshold) {
                bits |= 1ULL << (s - first);
            }
        }
        mask[i] = bits;
    }
}
