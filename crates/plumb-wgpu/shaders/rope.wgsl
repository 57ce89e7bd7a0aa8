// rope.wgsl: rotary position embedding in place on x [n_tokens, n_heads, head_dim].
//
// Pair i (< n_rot/2) of a head at position p turns by θ = p · base^(-2i/n_rot) / f_i; Normal
// style pairs (x[2i], x[2i+1]), NeoX style (x[i], x[i + n_rot/2]); dimensions past n_rot pass
// through.
//
// WGSL has no f64 and GPU sin/cos are only accurate near 0, while positions in the tens of
// thousands need the angle to ~1e-6 rad. So the host computes each pair's frequency in turns,
// g_i = base^(-2i/n_rot) / (2π f_i), in f64 and hands over its fraction as a 64-bit fixed-point
// number G_i (`freqs`: low word, high word; src/rope.rs). Then p · G_i mod 2^64 is exact integer
// arithmetic, its top 32 bits are the angle in turns mod 1, and sin/cos come from polynomials on
// [-π/4, π/4] after taking out the quadrant. Worked example: g = 0.25 turns, p = 3 → the top word
// is 0xC000_0000 (0.75 turns); adding 1/8 turn gives quadrant 3 and remainder 0: θ = 3π/2,
// sin -1, cos 0.
//
// Launch (src/rope.rs): ceil(n_tokens · n_heads · n_rot/2 / 256) workgroups of 256, one
// invocation per pair; pair g = (t · n_heads + h) · half + i.
// Check: `plumb check --device wgpu --op rope`.

const WG: u32 = 256u;

struct Params {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    half: u32,
    neox: u32,
    positions_at: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> data: array<u32>;
@group(0) @binding(2) var<storage, read> freqs: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

// The high word of the 64-bit product a · b (32 × 32 bits through 16-bit halves).
fn mul_hi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
}

// (sin, cos) of the angle whose turns mod 1 are `turns` / 2^32.
fn sincos_turns(turns: u32) -> vec2<f32> {
    // Shift by 1/8 turn so that the top two bits name the nearest quadrant.
    let u = turns + 0x20000000u;
    let quadrant = u >> 30u;
    let r = f32(i32(u & 0x3fffffffu) - 0x20000000) * (6.283185307179586 / 4294967296.0);
    let r2 = r * r;
    // Taylor series to r^9 and r^10: errors below 2e-9 on |r| ≤ π/4.
    let s = r * (1.0 + r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0
        + r2 * (1.0 / 362880.0)))));
    let c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0
        + r2 * (-1.0 / 3628800.0)))));
    switch quadrant {
        case 0u: { return vec2<f32>(s, c); }
        case 1u: { return vec2<f32>(c, -s); }
        case 2u: { return vec2<f32>(-s, -c); }
        default: { return vec2<f32>(-c, s); }
    }
}

@compute @workgroup_size(WG)
fn rope(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = group_index(wid, nwg) * WG + lid;
    if g >= p.n_tokens * p.n_heads * p.half {
        return;
    }
    let th = g / p.half;
    let i = g % p.half;
    let pos = data[p.positions_at + th / p.n_heads];
    let f = freqs[i];
    // p · (G_hi · 2^32 + G_lo) mod 2^64, top word only.
    let turns = pos * f.y + mul_hi(pos, f.x);
    let sc = sincos_turns(turns);
    let base = th * p.head_dim;
    var ia = base + 2u * i;
    var ib = ia + 1u;
    if p.neox != 0u {
        ia = base + i;
        ib = ia + p.half;
    }
    let a = x[ia];
    let b = x[ib];
    x[ia] = a * sc.y - b * sc.x;
    x[ib] = a * sc.x + b * sc.y;
}
