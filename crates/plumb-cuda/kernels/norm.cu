// norm.cu: RMS normalization, alone and fused with the residual add.
//
//   rms_norm:      out[r, i] = x[r, i] / sqrt(mean_j x[r, j]^2 + eps) * w[i]
//   add_rms_norm:  res[r, :] += x[r, :]; out[r, :] = rms_norm(res[r, :])
//
// Launch: grid (rows), block 256. One block per row: a row (dim ≤ ~16k) fits one block's
// strided loop, and the sum of squares needs only one block reduction (warp shuffles, then
// 8 partials through shared memory). 256 threads keep 8 warps in flight per row; small
// widths (dim 64) simply leave threads idle.
// Shapes: x, res, out [rows, dim]; w [dim]. Row 2 of dim 769 is x[1538 .. 2307].
//
// The inverse norm is computed in double from the f32 sum, as the reference does in f64.

extern "C" __global__ void rms_norm_f32(const float* x, const float* w, float* out, int dim,
                                        float eps) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = x[base + i];
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const double inv = 1.0 / sqrt((double)ss / dim + (double)eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[base + i] = (float)((double)x[base + i] * inv) * w[i];
}

extern "C" __global__ void add_rms_norm_f32(float* res, const float* x, const float* w,
                                            float* out, int dim, float eps) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = res[base + i] + x[base + i];
        res[base + i] = v;  // read back below by this same thread: no barrier needed
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const double inv = 1.0 / sqrt((double)ss / dim + (double)eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[base + i] = (float)((double)res[base + i] * inv) * w[i];
}
