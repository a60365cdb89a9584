// The suppression mask of greedy NMS (torchvision's nms_kernel.cu scheme): boxes come sorted by
// descending score; block (row_block, col_block) compares 64 boxes of each, and thread r of it
// sets bit j of mask[row, col_block] when box row = row_block * 64 + r overlaps box
// col_block * 64 + j, a later one, with IoU strictly above the threshold. The host then walks the
// rows in order, keeping a box unless a kept box's row has its bit. The IoU is the CPU kernel's
// (ops/src/nms.rs): inter / (area_a + area_b - inter) in f32 without +1, areas computed from the
// corners as there; `thr` is the f32 the CPU compares with (the largest f32 not above the f64
// threshold), so the same pairs count as overlapping.

#define NMS_BLOCK 64

__device__ __forceinline__ float pos_part(float v) { return 0.0f < v ? v : 0.0f; }

extern "C" __global__ void nms_mask_f32(const float* __restrict__ boxes, unsigned long long* __restrict__ mask,
                                        int n, float thr) {
    const int row_block = blockIdx.y;
    const int col_block = blockIdx.x;
    if (row_block > col_block) return;
    const int rows = min(n - row_block * NMS_BLOCK, NMS_BLOCK);
    const int cols = min(n - col_block * NMS_BLOCK, NMS_BLOCK);
    __shared__ float block_boxes[NMS_BLOCK * 5];
    if (threadIdx.x < cols) {
        const float* b = boxes + 4 * (long long)(col_block * NMS_BLOCK + threadIdx.x);
        block_boxes[threadIdx.x * 5 + 0] = b[0];
        block_boxes[threadIdx.x * 5 + 1] = b[1];
        block_boxes[threadIdx.x * 5 + 2] = b[2];
        block_boxes[threadIdx.x * 5 + 3] = b[3];
        block_boxes[threadIdx.x * 5 + 4] = __fmul_rn(__fsub_rn(b[2], b[0]), __fsub_rn(b[3], b[1]));
    }
    __syncthreads();
    if (threadIdx.x >= rows) return;
    const int row = row_block * NMS_BLOCK + threadIdx.x;
    const float* a = boxes + 4 * (long long)row;
    const float ax1 = a[0], ay1 = a[1], ax2 = a[2], ay2 = a[3];
    const float area_a = __fmul_rn(__fsub_rn(ax2, ax1), __fsub_rn(ay2, ay1));
    unsigned long long bits = 0;
    const int start = row_block == col_block ? threadIdx.x + 1 : 0;
    for (int j = start; j < cols; ++j) {
        const float* b = block_boxes + 5 * j;
        const float xx1 = ax1 < b[0] ? b[0] : ax1;
        const float yy1 = ay1 < b[1] ? b[1] : ay1;
        const float xx2 = b[2] < ax2 ? b[2] : ax2;
        const float yy2 = b[3] < ay2 ? b[3] : ay2;
        const float inter = __fmul_rn(pos_part(__fsub_rn(xx2, xx1)), pos_part(__fsub_rn(yy2, yy1)));
        const float ovr = __fdiv_rn(inter, __fsub_rn(__fadd_rn(area_a, b[4]), inter));
        if (ovr > thr) bits |= 1ULL << j;
    }
    const int col_blocks = (n + NMS_BLOCK - 1) / NMS_BLOCK;
    mask[(long long)row * col_blocks + col_block] = bits;
}
