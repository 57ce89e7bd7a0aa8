// rope.cu: rotary position embedding in place on x [n_tokens, n_heads, head_dim].
//
// Pair i (< n_rot/2) of a head at position p turns by θ = p · base^(-2i/n_rot) / f_i:
// Normal style pairs (x[2i], x[2i+1]), NeoX style (x[i], x[i + n_rot/2]); dimensions past
// n_rot pass through untouched.
//
// Launch: grid ceil(n_tokens * n_heads * n_rot/2 / 256), block 256: one thread per rotated
// pair, the natural parallelism of the op (pairs are independent).
// Index: pair index g = (t * n_heads + h) * half + i. With n_heads 9, half 32: g = 600 is
// token 2, head 0, pair 24 (600 = (2*9 + 0)*32 + 24); Normal rotates x[(2*9+0)*64 + 48, +49].
//
// The angle is computed in double: with positions in the tens of thousands an f32 angle is
// off by ~1e-3 rad, far outside the op's tolerance. The op moves a few KB per token, so the
// double-precision math costs nothing measurable.
//
// Launched from src/rope.rs (held back inside a step, src/defer.rs).
// Check: `plumb check --device cuda --op rope` (rope_f32). rope_kv_f32 has no op case: it runs
// inside steps and is checked end to end by `plumb check --model M --device cuda`.
// Time: `plumb bench-ops --device cuda` (its rope rows). Measured: rope_kv_f32 is one of the
// merges that took a decode layer from 16-17 launches to 9 (NOTES.md run 2: 8B tg128 343.5 ->
// 380.2 t/s, SmolLM2 840 -> 1,111, with the other changes of that run).

// Rotates pair i of the head at x + th·head_dim (th = t·n_heads + h) for position `pos`; when
// `cache_row` is not null the rotated pair is also written there (the fused KV write).
static __device__ __forceinline__ void rope_pair(float* x, float* cache_row, long long th,
                                                 int i, u32 pos, const float* freq_factors,
                                                 int has_ff, int head_dim, int n_rot, int neox,
                                                 float theta) {
    const int half = n_rot / 2;
    const double inv_freq = pow((double)theta, -2.0 * i / (double)n_rot);
    const double ff = has_ff ? (double)freq_factors[i] : 1.0;
    const double angle = (double)pos * inv_freq / ff;
    double s, c;
    sincos(angle, &s, &c);
    float* head = x + th * head_dim;
    const int ia = neox ? i : 2 * i;
    const int ib = neox ? i + half : 2 * i + 1;
    const double a = head[ia], b = head[ib];
    const float ra = (float)(a * c - b * s), rb = (float)(a * s + b * c);
    head[ia] = ra;
    head[ib] = rb;
    if (cache_row != nullptr) {
        cache_row[ia] = ra;
        cache_row[ib] = rb;
    }
}

extern "C" __global__ void rope_f32(float* x, const u32* positions, const float* freq_factors,
                                    int has_ff, int n_tokens, int n_heads, int head_dim,
                                    int n_rot, int neox, float theta) {
    const int half = n_rot / 2;
    const long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (g >= (long long)n_tokens * n_heads * half) return;
    const long long th = g / half;  // t * n_heads + h
    rope_pair(x, nullptr, th, (int)(g % half), positions[(int)(th / n_heads)], freq_factors,
              has_ff, head_dim, n_rot, neox, theta);
}

// rope_kv_f32 (v2 of a step's attention preamble, merged by src/defer.rs): rope(q), rope(k),
// kv_write(k), kv_write(v) of one step in one launch instead of four — the same arithmetic
// (rope_pair), with the cache rows at the step's pos0 = positions[0] read on the device.
// Launch: grid ceil(total / 256), block 256, one thread per item of four consecutive ranges:
// q pairs [n · n_heads · half], k pairs [n · n_kv_heads · half] (rotated in k and written to
// kc), then n · kv_dim elements e (v[e] -> vc, and k[e] -> kc for the dims past n_rot that rope
// leaves alone). kc, vc: [capacity, kv_dim]; rows past capacity are never written.
extern "C" __global__ void rope_kv_f32(float* q, float* k, const float* v, float* kc, float* vc,
                                       const u32* positions, const float* freq_factors,
                                       int has_ff, int n_tokens, int n_heads, int n_kv_heads,
                                       int head_dim, int n_rot, int neox, float theta,
                                       u64 capacity) {
    const int half = n_rot / 2;
    const long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long qp = (long long)n_tokens * n_heads * half;
    const long long kp = (long long)n_tokens * n_kv_heads * half;
    const long long kv_dim = (long long)n_kv_heads * head_dim;
    const u64 p0 = positions[0];
    const bool fits = p0 + (u64)n_tokens <= capacity;
    if (g < qp) {
        const long long th = g / half;
        rope_pair(q, nullptr, th, (int)(g % half), positions[(int)(th / n_heads)],
                  freq_factors, has_ff, head_dim, n_rot, neox, theta);
    } else if (g < qp + kp) {
        const long long gk = g - qp, th = gk / half;  // th = t * n_kv_heads + h
        // The head's row in the cache: token t's row p0 + t holds kv_dim = n_kv_heads · hd
        // values, so head h of token t sits th · head_dim past row p0's start.
        float* row = fits ? kc + (long long)p0 * kv_dim + th * head_dim : nullptr;
        rope_pair(k, row, th, (int)(gk % half), positions[(int)(th / n_kv_heads)],
                  freq_factors, has_ff, head_dim, n_rot, neox, theta);
    } else if (g < qp + kp + n_tokens * kv_dim) {
        const long long e = g - qp - kp;
        if (!fits) return;
        vc[(long long)p0 * kv_dim + e] = v[e];
        if ((int)(e % head_dim) >= n_rot) kc[(long long)p0 * kv_dim + e] = k[e];
    }
}
