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

extern "C" __global__ void rope_f32(float* x, const u32* positions, const float* freq_factors,
                                    int has_ff, int n_tokens, int n_heads, int head_dim,
                                    int n_rot, int neox, float theta) {
    const int half = n_rot / 2;
    const long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (g >= (long long)n_tokens * n_heads * half) return;
    const int i = (int)(g % half);
    const long long th = g / half;  // t * n_heads + h
    const int t = (int)(th / n_heads);
    const double inv_freq = pow((double)theta, -2.0 * i / (double)n_rot);
    const double ff = has_ff ? (double)freq_factors[i] : 1.0;
    const double angle = (double)positions[t] * inv_freq / ff;
    double s, c;
    sincos(angle, &s, &c);
    float* head = x + th * head_dim;
    const int ia = neox ? i : 2 * i;
    const int ib = neox ? i + half : 2 * i + 1;
    const double a = head[ia], b = head[ib];
    head[ia] = (float)(a * c - b * s);
    head[ib] = (float)(a * s + b * c);
}
