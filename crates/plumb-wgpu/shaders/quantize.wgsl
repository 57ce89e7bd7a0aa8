// quantize.wgsl: 8-bit activations for matvec.wgsl. Each block of 32 values of a row of x
// becomes 8 words of signed bytes q = round(x / d), d = max|x| / 127 (q = 0 when the block is
// all zeros), and the pair (d, d · Σq) at xs_at + 2 · block: the sum of the values as
// quantized, which the offset terms of Q4_0, Q4_1 and Q4_K multiply (formats.wgsl: Unit), so
// that a unit's result is exactly W · x̂ of the quantized x̂. (With the exact Σx instead, the
// rounding errors of x meet the weights' unsigned quants, all of one sign, rather than the
// weights themselves: on Q4_K W 2048×1536 the NMSE grew from 3e-5 to 6e-4.)
// Layout: block b = t · units + u of row t: words 8b .. 8b + 8; (d, d · Σq) at xs_at + 2b.
//
// Launch (src/quantize.rs): ceil(n · units / 64) workgroups of 64, one invocation per block.
// Check: every quantized `matmul` case of `plumb check --device wgpu` with n ≤ 8 runs it.

const WG: u32 = 64u;

struct Params {
    n: u32,
    cols: u32,
    units: u32,
    xs_at: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> xq: array<u32>;

@compute @workgroup_size(WG)
fn quantize(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = group_index(wid, nwg) * WG + lid;
    if b >= p.n * p.units {
        return;
    }
    let base = (b / p.units) * p.cols + (b % p.units) * 32u;
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[base + i]));
    }
    let d = amax / 127.0;
    let id = select(0.0, 1.0 / d, d > 0.0);
    var sum = 0;
    for (var w = 0u; w < 8u; w++) {
        var packed = 0u;
        for (var k = 0u; k < 4u; k++) {
            let q = clamp(i32(round(x[base + 4u * w + k] * id)), -127, 127);
            sum += q;
            packed |= (bitcast<u32>(q) & 0xffu) << (8u * k);
        }
        xq[8u * b + w] = packed;
    }
    xq[p.xs_at + 2u * b] = bitcast<u32>(d);
    xq[p.xs_at + 2u * b + 1u] = bitcast<u32>(d * f32(sum));
}
