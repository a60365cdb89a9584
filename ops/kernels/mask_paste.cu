// Pastes M x M mask probabilities into image windows and thresholds them, mmdet 2.11's
// _do_paste_mask (grid_sample, bilinear, zero padding, align_corners=False) with the arithmetic of
// the CPU kernel in ops/src/mask_paste.rs: the taps along each axis come from the pixel centre
// mapped into the box, the blend is separable (rows first, then columns) in that order, and every
// operation is rounded as written (no fused multiply-add), so the bits match the CPU's.
//
// Detection d pastes into its window (rows y0 .. y0 + wh, columns x0 .. x0 + ww, computed on the
// host) and writes wh * ww bytes, column-major, at out[offset ..], where meta[d] is
// {y0, wh, x0, ww, offset}; boxes[d] is {x0, y0, x1, y1} in image pixels; masks is [K, mh, mw].

struct Tap {
    int i0, i1;
    float w0, w1;
};

// One axis: pixel p of a box spanning lo .. hi, into a mask axis of m cells.
__device__ __forceinline__ Tap grid_tap(int p, float lo, float hi, int m) {
    Tap t = {0, 0, 0.0f, 0.0f};
    const float half = __fdiv_rn((float)m, 2.0f);
    float g = __fsub_rn(__fmul_rn(__fdiv_rn(__fsub_rn(__fadd_rn((float)p, 0.5f), lo), __fsub_rn(hi, lo)), 2.0f), 1.0f);
    if (isinf(g)) g = 0.0f;
    const float s = __fsub_rn(__fmul_rn(__fadd_rn(g, 1.0f), half), 0.5f);
    const float f = floorf(s);
    if (!(f >= -1.0f && f <= (float)(m - 1))) return t;  // NaN fails too
    const float frac = __fsub_rn(s, f);
    const int fi = (int)f;
    t.i0 = fi > 0 ? fi : 0;
    t.i1 = fi + 1 < m - 1 ? fi + 1 : m - 1;
    t.w0 = fi >= 0 ? __fsub_rn(1.0f, frac) : 0.0f;
    t.w1 = fi + 1 < m ? frac : 0.0f;
    return t;
}

// One thread per window pixel of one detection: blockIdx.y is the detection.
extern "C" __global__ void paste_masks_f32(const float* __restrict__ masks, const float* __restrict__ boxes,
                                           const long long* __restrict__ meta, unsigned char* __restrict__ out, int mh,
                                           int mw, float thr) {
    const int d = blockIdx.y;
    const long long* md = meta + 5 * (long long)d;
    const int y0 = (int)md[0], wh = (int)md[1], x0 = (int)md[2], ww = (int)md[3];
    const long long offset = md[4];
    const float* b = boxes + 4 * (long long)d;
    const float* m = masks + (long long)d * mh * mw;
    const long long pixels = (long long)wh * ww;
    for (long long q = blockIdx.x * (long long)blockDim.x + threadIdx.x; q < pixels;
         q += (long long)gridDim.x * blockDim.x) {
        const int col = (int)(q / wh);  // column-major: q = col * wh + row
        const int row = (int)(q % wh);
        const Tap ty = grid_tap(y0 + row, b[1], b[3], mh);
        const Tap tx = grid_tap(x0 + col, b[0], b[2], mw);
        // v(c) = w0r * m[i0r, c] + w1r * m[i1r, c], then w0c * v(i0c) + w1c * v(i1c)
        const float v0 = __fadd_rn(__fmul_rn(ty.w0, m[ty.i0 * mw + tx.i0]), __fmul_rn(ty.w1, m[ty.i1 * mw + tx.i0]));
        const float v1 = __fadd_rn(__fmul_rn(ty.w0, m[ty.i0 * mw + tx.i1]), __fmul_rn(ty.w1, m[ty.i1 * mw + tx.i1]));
        const float v = __fadd_rn(__fmul_rn(tx.w0, v0), __fmul_rn(tx.w1, v1));
        out[offset + q] = v >= thr ? 1 : 0;
    }
}
