// Depthwise 2-D convolution on channels-last f32 tensors: odd square kernel k, stride 1, "same"
// zero padding p = k / 2, one filter per channel (PyTorch's Conv2d(C, C, k, padding=k//2,
// groups=C) on [N, H, W, C] data with its [C, 1, k, k] weight). The same maths as the CPU kernel
// in ops/src/depthwise_conv.rs, one output value per thread: channels are the fastest index, so
// neighbouring threads read neighbouring memory.

// y[n, h, w, c] = b[c] + sum_{i, j} x[n, h + i - p, w + j - p, c] * wt[c, i, j]
extern "C" __global__ void dwconv_fwd_f32(const float* __restrict__ x, const float* __restrict__ wt,
                                          const float* __restrict__ b, float* __restrict__ y, int n,
                                          int h, int w, int c, int k) {
    const long long total = (long long)n * h * w * c;
    const int p = k / 2;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const int ch = (int)(idx % c);
        long long rest = idx / c;
        const int ox = (int)(rest % w);
        rest /= w;
        const int oy = (int)(rest % h);
        const int img = (int)(rest / h);
        float acc = b[ch];
        for (int i = 0; i < k; ++i) {
            const int iy = oy + i - p;
            if (iy < 0 || iy >= h) continue;
            for (int j = 0; j < k; ++j) {
                const int ix = ox + j - p;
                if (ix < 0 || ix >= w) continue;
                acc += x[(((long long)img * h + iy) * w + ix) * c + ch] * wt[(ch * k + i) * k + j];
            }
        }
        y[idx] = acc;
    }
}

// The input gradient: dx[n, h, w, c] = sum_{i, j} gy[n, h - i + p, w - j + p, c] * wt[c, i, j]
// (each input pixel gathers from the outputs that read it; no atomics).
extern "C" __global__ void dwconv_input_grad_f32(const float* __restrict__ gy, const float* __restrict__ wt,
                                                 float* __restrict__ dx, int n, int h, int w, int c, int k) {
    const long long total = (long long)n * h * w * c;
    const int p = k / 2;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const int ch = (int)(idx % c);
        long long rest = idx / c;
        const int ix = (int)(rest % w);
        rest /= w;
        const int iy = (int)(rest % h);
        const int img = (int)(rest / h);
        float acc = 0.0f;
        for (int i = 0; i < k; ++i) {
            const int oy = iy - i + p;
            if (oy < 0 || oy >= h) continue;
            for (int j = 0; j < k; ++j) {
                const int ox = ix - j + p;
                if (ox < 0 || ox >= w) continue;
                acc += gy[(((long long)img * h + oy) * w + ox) * c + ch] * wt[(ch * k + i) * k + j];
            }
        }
        dx[idx] = acc;
    }
}

// Partial weight and bias gradients, summed in a fixed order (no atomics, so the result does not
// depend on scheduling). Block (t, cb, part): tap t of k * k (t == k * k is the bias), channels
// cb * 32 .. cb * 32 + 32, output rows part, part + parts, ... Threads are 32 channels x 8 row
// groups; each sums its share of pixels, then the 8 sums of a channel are added in order.
//   out[part, t, c] = sum over the block's pixels (n, h, w) of gy[n, h, w, c] * (t < k*k ?
//                     x[n, h + i - p, w + j - p, c] : 1),  t = i * k + j
// The caller sums out over its first dimension.
extern "C" __global__ void dwconv_weight_grad_partial_f32(const float* __restrict__ x,
                                                          const float* __restrict__ gy,
                                                          float* __restrict__ out, int n, int h, int w,
                                                          int c, int k, int parts) {
    __shared__ float sums[8][32];
    const int taps = k * k;
    const int t = blockIdx.x;
    const int ch = blockIdx.y * 32 + threadIdx.x;
    const int part = blockIdx.z;
    const int p = k / 2;
    const int di = t < taps ? t / k - p : 0;
    const int dj = t < taps ? t % k - p : 0;
    float acc = 0.0f;
    if (ch < c) {
        const long long rows = (long long)n * h;
        for (long long r = part + (long long)parts * threadIdx.y; r < rows; r += (long long)parts * 8) {
            const int img = (int)(r / h);
            const int oy = (int)(r % h);
            const int iy = oy + di;
            if (iy < 0 || iy >= h) continue;
            for (int ox = 0; ox < w; ++ox) {
                const int ix = ox + dj;
                if (ix < 0 || ix >= w) continue;
                const float g = gy[((r * w) + ox) * c + ch];
                acc += t < taps ? g * x[(((long long)img * h + iy) * w + ix) * c + ch] : g;
            }
        }
    }
    sums[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        float total = 0.0f;
        for (int g = 0; g < 8; ++g) total += sums[g][threadIdx.x];
        out[((long long)part * (taps + 1) + t) * c + ch] = total;
    }
}
