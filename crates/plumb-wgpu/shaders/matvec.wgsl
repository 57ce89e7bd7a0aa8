// matvec.wgsl: out[t, r] = Σ_k W[r, k] · x[t, k] for up to 8 rows t of x (decode and small
// batches), with formats.wgsl.
//
// Entry matvec_q8 (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K): x comes 8-bit quantized per 32-element block
// (quantize.wgsl) and every unit is 8 integer dot products of 4 byte pairs (dot4, variant
// dot=native: WGSL's dot4I8Packed, which becomes one instruction where the adapter has integer
// dot products; dot=soft: shifts and multiplies), scaled as formats.wgsl's Unit says.
// Entry matvec_f32 (F32, F16, BF16 and the formats dequantized at upload): f32 activations,
// 4 elements at a time through deq4.
//
// Launch (src/matvec.rs): ceil(rows / (64 / TPR)) workgroups of 64; TPR invocations (a power
// of two, 4 to 64, about the number of 32-element units in a row) share a weight row and take
// its units u = lane, lane + TPR, ...; their partial sums meet in a tree through workgroup
// memory. Worked example: cols 576 → 18 units → TPR 32, two rows per workgroup; invocation 40
// is lane 8 of the second row and takes unit 8 only (8 + 32 ≥ 18).
// A weight split into parts (src/buffer.rs) is one launch per part: rows counts the part's rows,
// and its row r is output row row0 + r of out_rows.
// Check: `plumb check --device wgpu --op matmul` (the n ≤ 8 cases). Time: `plumb bench-ops
// --device wgpu` (the matmul rows with n 1).

const WG: u32 = 64u;
const MAX_N: u32 = 8u;

override TPR: u32 = 64u;

struct Params {
    rows: u32,
    cols: u32,
    n: u32,
    row_words: u32,
    units: u32,
    xs_at: u32,
    out_rows: u32,
    row0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read> xq: array<u32>;
@group(0) @binding(4) var<storage, read> xf: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> part: array<vec4<f32>, 128>; // two per invocation: rows 0..4 and 4..8 of x

// Sums each row's partials over its TPR lanes and writes the results (lane 0).
fn finish(acc: array<f32, MAX_N>, lid: u32, row: u32) {
    let lane = lid % TPR;
    part[2u * lid] = vec4<f32>(acc[0], acc[1], acc[2], acc[3]);
    part[2u * lid + 1u] = vec4<f32>(acc[4], acc[5], acc[6], acc[7]);
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s = s >> 1u) {
        if lane < s {
            part[2u * lid] += part[2u * (lid + s)];
            part[2u * lid + 1u] += part[2u * (lid + s) + 1u];
        }
        workgroupBarrier();
    }
    if lane == 0u && row < p.rows {
        for (var t = 0u; t < p.n; t++) {
            out[t * p.out_rows + p.row0 + row] = part[2u * lid + t / 4u][t % 4u];
        }
    }
}

@compute @workgroup_size(WG)
fn matvec_q8(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = group_index(wid, nwg) * (WG / TPR) + lid / TPR;
    var acc: array<f32, MAX_N>;
    if row < p.rows {
        for (var u = lid % TPR; u < p.units; u += TPR) {
            let w = unit_q(row * p.row_words, u);
            for (var t = 0u; t < p.n; t++) {
                let b = t * p.units + u;
                var lo = 0;
                var hi = 0;
                for (var i = 0u; i < 4u; i++) {
                    lo += dot4(w.w[i], xq[8u * b + i]);
                    hi += dot4(w.w[i + 4u], xq[8u * b + 4u + i]);
                }
                let d_x = bitcast<f32>(xq[p.xs_at + 2u * b]);
                let s_x = bitcast<f32>(xq[p.xs_at + 2u * b + 1u]);
                acc[t] += d_x * (w.c_lo * f32(lo) + w.c_hi * f32(hi)) + w.c_s * s_x;
            }
        }
    }
    finish(acc, lid, row);
}

@compute @workgroup_size(WG)
fn matvec_f32(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = group_index(wid, nwg) * (WG / TPR) + lid / TPR;
    var acc: array<f32, MAX_N>;
    if row < p.rows {
        for (var u = lid % TPR; u < p.units; u += TPR) {
            for (var k = 32u * u; k < min(32u * u + 32u, p.cols); k += 4u) {
                let w = deq4(row * p.row_words, k);
                for (var t = 0u; t < p.n; t++) {
                    let base = t * p.cols + k;
                    var s = 0.0;
                    for (var i = 0u; i < 4u; i++) {
                        if k + i < p.cols {
                            s += w[i] * xf[base + i];
                        }
                    }
                    acc[t] += s;
                }
            }
        }
    }
    finish(acc, lid, row);
}
