// argmax.cu: index of the largest of `len` values, the first one on ties; NaN never wins and
// an all -inf/NaN input gives 0 (as the host fallback in plumb-ops' Backend::argmax).
//
// Launch: grid (rows), block 1024: block b takes row b (x + b·len) and writes result[b]. One
// block per row: a vocabulary (≤ ~256k floats, 1 MB) is read once
// at full speed by 1024 threads with a strided loop, and a single block needs no second
// pass or atomics. Each thread keeps its best (value, index) scanning upward (strict >, so
// the first index wins within a thread), then a shuffle tree and a shared-memory step merge
// with ties going to the smaller index. len 151936: thread 7 reads 7, 1031, 2055, ...
//
// Launched from src/argmax.rs (Backend::argmax and argmax_rows).
// Check: `plumb check --device cuda --op argmax`.
// Time: `plumb bench-ops --device cuda` has no argmax row; it ends every greedy step of
// `plumb bench -m M --device cuda --parallel 64`. Measured (H100, 8B Q4_0, NOTES.md run 6):
// greedy ids from this kernel instead of 64 × 128,256 logits scanned on the host took
// `bench --parallel 64` from 1,567 to 3,343 t/s.

static __device__ __forceinline__ void better(float& bv, u32& bi, float v, u32 i) {
    if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
}

extern "C" __global__ void argmax_f32(const float* x, u32 len, u32* result) {
    __shared__ float sv[32];
    __shared__ u32 si[32];
    x += (size_t)blockIdx.x * len;
    float bv = NEG_INF;
    u32 bi = 0;
    for (u32 i = threadIdx.x; i < len; i += blockDim.x)
        if (x[i] > bv) { bv = x[i]; bi = i; }
    // A thread that saw nothing above -inf must not win ties against real -inf finds at a
    // larger index: index 0 is the answer then anyway, so (-inf, 0) is the neutral element.
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
        const u32 oi = __shfl_xor_sync(FULL_MASK, bi, o);
        better(bv, bi, ov, oi);
    }
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    if (lane == 0) { sv[warp] = bv; si[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
        const int n_warps = blockDim.x / WARP;
        bv = lane < n_warps ? sv[lane] : NEG_INF;
        bi = lane < n_warps ? si[lane] : 0;
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
            const u32 oi = __shfl_xor_sync(FULL_MASK, bi, o);
            better(bv, bi, ov, oi);
        }
        if (lane == 0) result[blockIdx.x] = bi;
    }
}
