// norm.cu: RMS normalization, alone and fused with the residual add, and LayerNorm.
//
//   rms_norm:      out[r, i] = x[r, i] / sqrt(mean_j x[r, j]^2 + eps) * w[i]
//   add_rms_norm:  res[r, :] += x[r, :]; out[r, :] = rms_norm(res[r, :])
//   layer_norm:    out[r, i] = (x[r, i] - μ) / sqrt(σ² + eps) * w[i] + b[i] (two block sums:
//                  the mean, then the variance around it; no q8 copy)
//
// Launch: grid (rows), block min(1024, dim / 4 rounded up to a warp) (src/norm.rs). One block
// per row: the sum of squares needs one block reduction (warp shuffles, then ≤ 32 partials in
// shared memory). v1 used 256 threads whatever the width: 16 dependent loads per thread for a
// 4096-wide row; v2 sizes the block to ~4 elements per thread (4096 -> 1024 threads, 576 ->
// 160), so a decode step's norm is one round of loads.
// Shapes: x, res, out [rows, dim]; w [dim]. Row 2 of dim 769 is x[1538 .. 2307].
//
// v2 also writes the q8_1 form of `out` (qs, ds; common.cuh) when `qs` is not null, for the
// matvec that follows (src/q8.rs): dim is then a multiple of 32 and the block a multiple of
// 32, so each warp's 32 consecutive elements of one loop round are exactly one q8 group.
//
// The inverse norm is computed in double from the f32 sum, as the reference does in f64.
//
// Launched from src/norm.rs.
// Check: `plumb check --device cuda --op rms_norm` (rms_norm and add_rms_norm's cases),
// `--op layer_norm`.
// Time: `plumb bench-ops --device cuda` (its rms_norm rows). Measured (H100, NOTES.md): v2
// 13 µs per synchronized 1×4096 call, ~10 µs of which is the launch and the sync.

static __device__ __forceinline__ void norm_out(const float* v, const float* w, float* out,
                                                i8* qs, float2* ds, size_t base, int dim,
                                                double inv) {
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float o = (float)((double)v[base + i] * inv) * w[i];
        out[base + i] = o;
        if (qs != nullptr) {
            const size_t e = base + i;  // whole warps: dim % 32 == 0 (checked by the launcher)
            q8_group(o, (int)(e / 32), (int)e, qs, ds);
        }
    }
}

extern "C" __global__ void rms_norm_f32(const float* x, const float* w, float* out, int dim,
                                        float eps, i8* qs, float2* ds) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = x[base + i];
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const double inv = 1.0 / sqrt((double)ss / dim + (double)eps);
    norm_out(x, w, out, qs, ds, base, dim, inv);
}

extern "C" __global__ void add_rms_norm_f32(float* res, const float* x, const float* w,
                                            float* out, int dim, float eps, i8* qs,
                                            float2* ds) {
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
    norm_out(res, w, out, qs, ds, base, dim, inv);
}

extern "C" __global__ void layer_norm_f32(const float* x, const float* w, const float* b,
                                          float* out, int dim, float eps) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * dim;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += x[base + i];
    const float mean = block_sum(sum, scratch) / dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float d = x[base + i] - mean;
        ss += d * d;
    }
    ss = block_sum(ss, scratch);
    const float inv = (float)(1.0 / sqrt((double)ss / dim + (double)eps));
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[base + i] = (x[base + i] - mean) * inv * w[i] + b[i];
}
