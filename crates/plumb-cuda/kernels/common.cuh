// common.cuh: prepended to every kernel file before NVRTC compiles it (see src/compile.rs).
//
// NVRTC is used without the CUDA toolkit's headers, so the few things plumb needs from them
// are defined here: fixed-width integers, f16/bf16 <-> f32 conversions through inline PTX,
// and warp reductions. Everything is `static __device__ __forceinline__` so that each file
// only pays for what it uses.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;

#define WARP 32
#define FULL_MASK 0xffffffffu
#define NEG_INF (__int_as_float((int)0xff800000u))

// f16 bits -> f32: exact (every f16 is an f32).
static __device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// f32 -> f16 bits, round to nearest even (what cuBLAS inputs are rounded with).
static __device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// bf16 bits -> f32: exact (bf16 is the top half of an f32).
static __device__ __forceinline__ float bf16_to_f32(u16 h) {
    return __int_as_float(((u32)h) << 16);
}

// Unaligned-safe little-endian loads from byte pointers (the block formats pack f16 and u32
// fields at offsets that are only 2-byte aligned).
static __device__ __forceinline__ u16 ld_u16(const u8* p) {
    return (u16)p[0] | ((u16)p[1] << 8);
}
static __device__ __forceinline__ u32 ld_u32(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over a whole block of blockDim.x threads (a multiple of 32, at most 1024). `scratch`
// holds 32 floats of shared memory; every thread gets the total.
static __device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int n_warps = blockDim.x / WARP;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// dp4a: c + Σ_i a.byte[i] · b.byte[i] over four signed bytes (sm_61+), as inline PTX so that
// no CUDA header is needed.
static __device__ __forceinline__ int dp4a(int a, int b, int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// q8_1 activations (the matvec's input, see matvec_q8.cu): for every group g of 32
// consecutive elements, qs[32g + i] = round(x / d) as int8 with d = max|x| / 127, and
// ds[g] = (d, d · Σ_i qs[32g + i]), so that Σ_i w_i · (d · q_i) is exact for any w.
// Called by a whole warp, lane i holding element i of group g (index `e` = 32g + i).
static __device__ __forceinline__ void q8_group(float v, int g, int e, i8* qs, float2* ds) {
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const int q = amax == 0.0f ? 0 : __float2int_rn(v / d);
    const float sum = warp_sum((float)q);  // exact: |Σ| ≤ 32 · 127
    qs[e] = (i8)q;
    if ((threadIdx.x & 31) == 0) ds[g] = make_float2(d, d * sum);
}
