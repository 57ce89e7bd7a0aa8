// elementwise.cu: add (x += y), add_bias (x[r, :] += b), swiglu (out = silu(g) * u), geglu
// (out = gelu_tanh(g) * u), gelu (the erf form), scale (x *= s), softcap (x = c tanh(x / c)),
// the KV-cache write of a step and the q8_1 quantization of a matvec's activations.
//
// Launch: grid min(ceil(len / 256), 4096), block 256, grid-stride loop. These ops move 8-12 bytes per element and do almost no math:
// any configuration that keeps enough loads in flight saturates bandwidth; 256 threads × up
// to 4096 blocks covers an H100 (132 SMs × 2048 threads) several times over, and the stride
// loop handles any length. Shapes are flat: element i of a [rows, dim] buffer is row i / dim.
//
// Launched from src/elementwise.rs.
// Check: `plumb check --device cuda --op add` (add, add_bias and add_rms_norm's cases) and
// `--op swiglu` (and `--op geglu`, `gelu`, `scale`, `softcap`); quantize_q8 runs in `--op matmul`'s decode cases (inputs no producer
// quantized). kv_write_f32 has no op case: it runs where a step's KV writes do not merge into
// rope.cu's rope_kv_f32, and is checked end to end by `plumb check --model M --device cuda`.
// Time: `plumb bench-ops --device cuda` (its swiglu rows). Measured: no figure of its own.

extern "C" __global__ void add_f32(float* x, const float* y, u64 len) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x)
        x[i] += y[i];
}

// x: [rows, dim], b: [dim]; element 1540 of dim 769 is row 2, column 2: adds b[2].
extern "C" __global__ void add_bias_f32(float* x, const float* b, u64 len, u32 dim) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x)
        x[i] += b[i % dim];
}

// silu(g) = g / (1 + e^-g); expf (not __expf) keeps the error near 1 ulp.
// With `qs` not null (len a multiple of 32, checked by the launcher) also writes out's q8_1
// form for the matvec that follows: each warp's 32 consecutive elements are one q8 group.
extern "C" __global__ void swiglu_f32(const float* g, const float* u, float* out, u64 len,
                                      i8* qs, float2* ds) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x) {
        const float gv = g[i];
        const float o = gv / (1.0f + expf(-gv)) * u[i];
        out[i] = o;
        if (qs != nullptr) q8_group(o, (int)(i / 32), (int)i, qs, ds);
    }
}

// gelu_tanh(g) = g/2 (1 + tanh(y)) = g / (1 + e^(-2y)), y = √(2/π) (g + 0.044715 g³): the
// second form does not cancel for negative g. q8_1 copy of out as swiglu_f32.
extern "C" __global__ void geglu_f32(const float* g, const float* u, float* out, u64 len,
                                     i8* qs, float2* ds) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x) {
        const float gv = g[i];
        const float y2 = 1.5957691f * (gv + 0.044715f * gv * gv * gv);  // 2√(2/π) · (...)
        const float o = gv / (1.0f + expf(-y2)) * u[i];
        out[i] = o;
        if (qs != nullptr) q8_group(o, (int)(i / 32), (int)i, qs, ds);
    }
}

// gelu(x) = x/2 (1 + erf(x / √2)) = x/2 · erfc(-x / √2): erfcf keeps the relative accuracy
// of the negative tail, where 1 + erf cancels.
extern "C" __global__ void gelu_f32(const float* x, float* out, u64 len) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x)
        out[i] = 0.5f * x[i] * erfcf(-x[i] * 0.70710678f);
}

extern "C" __global__ void scale_f32(float* x, float s, u64 len) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x)
        x[i] *= s;
}

extern "C" __global__ void softcap_f32(float* x, float cap, u64 len) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x)
        x[i] = cap * tanhf(x[i] / cap);
}

// The KV-cache write of a step: cache[pos0 * kv_dim + i] = src[i] for i < len (= n * kv_dim),
// with pos0 read from the device (the step's positions[0], so a replayed step writes its own
// position). Rows past `capacity` are never written. Launch: as the ops above.
extern "C" __global__ void kv_write_f32(const float* src, float* cache, const u32* pos0,
                                        u64 len, u32 kv_dim, u64 capacity) {
    const u64 p0 = *pos0;
    if ((p0 * kv_dim + len) > capacity * kv_dim) return;
    float* dst = cache + p0 * kv_dim;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

// x [groups * 32] -> q8_1 (common.cuh's q8_group): the matvec's activations when the op that
// produced x did not write them. Launch: grid ceil(groups / 8), block 256: one warp per group
// of 32 elements; group 9 is warp 1 of block 1, elements 288..320.
extern "C" __global__ void quantize_q8(const float* x, i8* qs, float2* ds, int groups) {
    const int g = blockIdx.x * 8 + threadIdx.x / WARP;
    if (g >= groups) return;  // whole warps leave
    const int e = g * 32 + threadIdx.x % WARP;
    q8_group(x[e], g, e, qs, ds);
}
