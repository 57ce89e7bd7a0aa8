// mmq.cu: batched Q4_0 matmul for 9 to 64 tokens on int8 tensor cores
// (mma.sync.m16n8k32.s8), q8_1 activations (x̂ as in matvec_q8.cu: xq [n, cols] int8,
// xd [n, cols / 32] (d, d·Σq)). out[t, r] = Σ_u dw[r,u] (dx[t,u] · S[r,t,u] − 8 · sx[t,u]),
// S the integer dot of unit u (one Q4_0 block = one k32 mma step, so each step's int32
// result is scaled on its own).
//
// Fragments (PTX ISA, m16n8k32 .s8, g = lane / 4, c = lane % 4): A a0 = row g, k 4c..4c+3;
// a1 = row g+8, same k; a2 = row g, k 16+4c..; a3 = row g+8, k 16+4c... The repacked Q4_0
// unit is 16 bytes whose byte j holds element j (low nibble) and j + 16 (high nibble), so
// word c of a row's unit gives a0 (low nibbles) and a2 (high nibbles) directly. B b0 = token
// column g, k 4c..; b1 = k 16+4c..: words of x̂. C c0,c1 = row g, tokens 2c, 2c+1; c2,c3 =
// row g+8.
// Launch: grid ceil(rows / 32), block 128 = 4 warps. A block owns 32 rows (2 m-tiles) and all
// tokens (NT n-tiles of 8); warp w takes the unit pairs p ≡ w (mod 4) (32 contiguous bytes
// per row), the 4 partial sums meet in shared memory. Weights are read once per call.

#define MQ_ROWS 32

static __device__ __forceinline__ u32 mq_ld4(const void* p) {
    u32 v;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}
static __device__ __forceinline__ u16 mq_ld2(const void* p) {
    u16 v;
    asm volatile("ld.global.nc.L1::no_allocate.u16 %0, [%1];" : "=h"(v) : "l"(p));
    return v;
}

static __device__ __forceinline__ void mma_s8(int (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3,
                                              int b0, int b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%10,%10,%10,%10};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0));
}

template <int NT>
static __device__ void mmq_q4_0_impl(const u8* W, const i8* xq, const float2* xd, float* out,
                                     int rows, int cols, int row_bytes, int n) {
    __shared__ float red[4][MQ_ROWS][NT * 8 + 1];
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int g = lane / 4, c = lane % 4;
    const int r0 = blockIdx.x * MQ_ROWS;
    const int units = cols / 32, nb = units;
    // Rows of this thread: m-tile mt, half h -> r0 + 16 mt + 8 h + g (clamped for loads).
    const u8* row[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
            row[mt][h] = W + (size_t)min(r0 + 16 * mt + 8 * h + g, rows - 1) * row_bytes;
    float acc[2][NT][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][j][e] = 0.0f;

    for (int u0 = 2 * warp; u0 < units; u0 += 8) {
        // Every weight load of the pair first.
        u32 wq[2][2][2];
        float dw[2][2][2];
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const int u = min(u0 + k, units - 1);
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    wq[k][mt][h] = mq_ld4(row[mt][h] + 16 * u + 4 * c);
                    dw[k][mt][h] = f16_to_f32(mq_ld2(row[mt][h] + 16 * nb + 2 * u));
                }
        }
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const int u = u0 + k;
            if (u >= units) break;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int tb = min(8 * j + g, n - 1);  // B column token
                const i8* xr = xq + (size_t)tb * cols + 32 * u + 4 * c;
                const int b0 = *reinterpret_cast<const int*>(xr);
                const int b1 = *reinterpret_cast<const int*>(xr + 16);
                const int t0 = min(8 * j + 2 * c, n - 1), t1 = min(8 * j + 2 * c + 1, n - 1);
                const float2 x0 = xd[(size_t)t0 * units + u], x1 = xd[(size_t)t1 * units + u];
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    int s[4];
                    mma_s8(s, wq[k][mt][0] & 0x0f0f0f0fu, wq[k][mt][1] & 0x0f0f0f0fu,
                           (wq[k][mt][0] >> 4) & 0x0f0f0f0fu, (wq[k][mt][1] >> 4) & 0x0f0f0f0fu,
                           b0, b1);
                    const float d0 = dw[k][mt][0], d1 = dw[k][mt][1];
                    acc[mt][j][0] += d0 * (x0.x * (float)s[0] - 8.0f * x0.y);
                    acc[mt][j][1] += d0 * (x1.x * (float)s[1] - 8.0f * x1.y);
                    acc[mt][j][2] += d1 * (x0.x * (float)s[2] - 8.0f * x0.y);
                    acc[mt][j][3] += d1 * (x1.x * (float)s[3] - 8.0f * x1.y);
                }
            }
        }
    }

#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int lr = 16 * mt + 8 * (e / 2) + g, t = 8 * j + 2 * c + (e % 2);
                red[warp][lr][t] = acc[mt][j][e];
            }
    __syncthreads();
    for (int i = threadIdx.x; i < MQ_ROWS * NT * 8; i += blockDim.x) {
        const int lr = i % MQ_ROWS, t = i / MQ_ROWS, r = r0 + lr;
        if (r < rows && t < n)
            out[(size_t)t * rows + r] = red[0][lr][t] + red[1][lr][t] + red[2][lr][t] + red[3][lr][t];
    }
}

#define MMQ(NT)                                                                              \
    extern "C" __global__ void __launch_bounds__(128) mmq_q4_0_nt##NT(                       \
        const u8* W, const i8* xq, const float2* xd, float* out, int rows, int cols,          \
        int row_bytes, int n) {                                                              \
        mmq_q4_0_impl<NT>(W, xq, xd, out, rows, cols, row_bytes, n);                         \
    }
MMQ(2) MMQ(3) MMQ(4) MMQ(5) MMQ(6) MMQ(7) MMQ(8)
