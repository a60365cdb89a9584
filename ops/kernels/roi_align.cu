// RoIAlign with average pooling on f32 features, mmcv's RoIAlign(pool_mode='avg') semantics (the
// same as the CPU kernel in ops/src/roi_align.rs; mmcv's roi_align_cuda_kernel.cuh and
// torchvision's roi_align_kernel.cu compute it the same way): a RoI (batch, x1, y1, x2, y2) is
// scaled by spatial_scale and, when aligned, shifted by half a pixel; when not aligned its size is
// at least 1. Each of the ph x pw bins averages a grid_h x grid_w grid of bilinear samples
// (sampling_ratio, or ceil(roi / bins) when it is 0) over max(grid_h * grid_w, 1). A sample outside
// [-1, H] x [-1, W] reads 0; inside it is clamped to the map, and on the last row/column both taps
// are that row/column. Features are [N, C, H, W] (nhwc == 0) or [N, H, W, C] (nhwc == 1); the
// output is [K, C, ph, pw]. RoIs are checked on the host before the launch (batch index in range,
// finite coordinates).

__device__ __forceinline__ long long feat_index(int nhwc, int b, int ch, int y, int x, int c, int h, int w) {
    return nhwc ? (((long long)b * h + y) * w + x) * c + ch : (((long long)b * c + ch) * h + y) * w + x;
}

// The two taps of coordinate v on an axis of `size` pixels: returns false outside [-1, size];
// otherwise lo, hi and the weights (1 - l) of lo and l of hi.
__device__ __forceinline__ bool axis_taps(float v, int size, int* lo, int* hi, float* l) {
    if (!(v >= -1.0f && v <= (float)size)) return false;
    if (v <= 0.0f) v = 0.0f;
    int low = (int)v;
    int high;
    if (low >= size - 1) {
        low = size - 1;
        high = size - 1;
        v = (float)low;
    } else {
        high = low + 1;
    }
    *lo = low;
    *hi = high;
    *l = v - (float)low;
    return true;
}

struct RoiGeom {
    int batch;
    float start_h, start_w, bin_h, bin_w;
    int grid_h, grid_w;
    float count;
};

__device__ __forceinline__ RoiGeom roi_geom(const float* roi, float scale, int sampling, int aligned, int ph,
                                            int pw) {
    RoiGeom g;
    const float offset = aligned ? 0.5f : 0.0f;
    g.batch = (int)roi[0];
    g.start_w = roi[1] * scale - offset;
    g.start_h = roi[2] * scale - offset;
    const float end_w = roi[3] * scale - offset;
    const float end_h = roi[4] * scale - offset;
    float roi_w = end_w - g.start_w;
    float roi_h = end_h - g.start_h;
    if (!aligned) {
        roi_w = fmaxf(roi_w, 1.0f);
        roi_h = fmaxf(roi_h, 1.0f);
    }
    g.bin_h = roi_h / (float)ph;
    g.bin_w = roi_w / (float)pw;
    // A non-positive adaptive grid (an inverted box) has no samples.
    g.grid_h = sampling > 0 ? sampling : max((int)ceilf(roi_h / (float)ph), 0);
    g.grid_w = sampling > 0 ? sampling : max((int)ceilf(roi_w / (float)pw), 0);
    g.count = (float)max(g.grid_h * g.grid_w, 1);
    return g;
}

// One thread per output value (k, c, by, bx).
extern "C" __global__ void roi_align_fwd_f32(const float* __restrict__ feat, const float* __restrict__ rois,
                                             float* __restrict__ out, int num_rois, int c, int h, int w,
                                             int ph, int pw, float scale, int sampling, int aligned, int nhwc) {
    const long long total = (long long)num_rois * c * ph * pw;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const int bx = (int)(idx % pw);
        const int by = (int)((idx / pw) % ph);
        const int ch = (int)((idx / ((long long)pw * ph)) % c);
        const int k = (int)(idx / ((long long)pw * ph * c));
        const RoiGeom g = roi_geom(rois + 5 * (long long)k, scale, sampling, aligned, ph, pw);
        float acc = 0.0f;
        for (int iy = 0; iy < g.grid_h; ++iy) {
            const float y = g.start_h + by * g.bin_h + ((float)iy + 0.5f) * g.bin_h / (float)g.grid_h;
            int y0, y1;
            float ly;
            if (!axis_taps(y, h, &y0, &y1, &ly)) continue;
            for (int ix = 0; ix < g.grid_w; ++ix) {
                const float x = g.start_w + bx * g.bin_w + ((float)ix + 0.5f) * g.bin_w / (float)g.grid_w;
                int x0, x1;
                float lx;
                if (!axis_taps(x, w, &x0, &x1, &lx)) continue;
                const float hy = 1.0f - ly, hx = 1.0f - lx;
                acc += hy * hx * feat[feat_index(nhwc, g.batch, ch, y0, x0, c, h, w)] +
                       hy * lx * feat[feat_index(nhwc, g.batch, ch, y0, x1, c, h, w)] +
                       ly * hx * feat[feat_index(nhwc, g.batch, ch, y1, x0, c, h, w)] +
                       ly * lx * feat[feat_index(nhwc, g.batch, ch, y1, x1, c, h, w)];
            }
        }
        out[idx] = acc / g.count;
    }
}

// The feature gradient: every output gradient value is spread over the taps it was read from,
// with the same weights, by atomic adds into grad (zeroed by the caller), as mmcv and
// torchvision do on the GPU.
extern "C" __global__ void roi_align_bwd_f32(const float* __restrict__ gout, const float* __restrict__ rois,
                                             float* __restrict__ grad, int num_rois, int c, int h, int w,
                                             int ph, int pw, float scale, int sampling, int aligned, int nhwc) {
    const long long total = (long long)num_rois * c * ph * pw;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const int bx = (int)(idx % pw);
        const int by = (int)((idx / pw) % ph);
        const int ch = (int)((idx / ((long long)pw * ph)) % c);
        const int k = (int)(idx / ((long long)pw * ph * c));
        const RoiGeom g = roi_geom(rois + 5 * (long long)k, scale, sampling, aligned, ph, pw);
        const float go = gout[idx] / g.count;
        for (int iy = 0; iy < g.grid_h; ++iy) {
            const float y = g.start_h + by * g.bin_h + ((float)iy + 0.5f) * g.bin_h / (float)g.grid_h;
            int y0, y1;
            float ly;
            if (!axis_taps(y, h, &y0, &y1, &ly)) continue;
            for (int ix = 0; ix < g.grid_w; ++ix) {
                const float x = g.start_w + bx * g.bin_w + ((float)ix + 0.5f) * g.bin_w / (float)g.grid_w;
                int x0, x1;
                float lx;
                if (!axis_taps(x, w, &x0, &x1, &lx)) continue;
                const float hy = 1.0f - ly, hx = 1.0f - lx;
                atomicAdd(grad + feat_index(nhwc, g.batch, ch, y0, x0, c, h, w), go * hy * hx);
                atomicAdd(grad + feat_index(nhwc, g.batch, ch, y0, x1, c, h, w), go * hy * lx);
                atomicAdd(grad + feat_index(nhwc, g.batch, ch, y1, x0, c, h, w), go * ly * hx);
                atomicAdd(grad + feat_index(nhwc, g.batch, ch, y1, x1, c, h, w), go * ly * lx);
            }
        }
    }
}
