// attention.wgsl: causal attention with grouped-query heads over a contiguous KV cache
// (entry attention) or the slots of a paged pool (entry attention_paged):
//   out[r, h] = Σ_{first(r) ≤ j ≤ last(r)} softmax_j(scale · q[r, h] · k[j, h / group]) v[j, h / group]
// first(r) is 0, or with a sliding window of w keys (w > 0) max(0, last(r) + 1 - w): window 512
// at position 600 → keys 89 ..= 600 (plumb_ops::window_start).
// q, out: [rows, n_heads, head_dim]; k, v: [positions or slots, n_kv_heads, head_dim].
// Contiguous: item r is row r at position pos0 + r. Paged: `data` holds, from data_at, one
// (row, last position, table start relative to data_at) per item, then the block tables;
// position j of the row's sequence is slot table[j / bs] · bs + j % bs (block size 16, table
// [7, 2], position 19 → block 2, offset 3 → slot 35).
//
// Launch (src/attention.rs): one workgroup of 64 per (item, head), g = item · n_heads + h. The
// positions first(r) ..= last(r) go by in tiles of 64 starting at first(r) (one workgroup walks
// the whole range, so no split of it can end anywhere but at last(r)), one score per invocation, with an online softmax: the running
// maximum m and denominator l are rescaled by e^(m_old - m_new) as each tile arrives, and
// invocation i accumulates output dimensions i, i + 64, ... (head_dim ≤ 256) from the tile's
// probabilities in workgroup memory. Max and sum are workgroup reductions (reduce_*).
// Check: `plumb check --device wgpu --op attention` (both entries). Time: `plumb bench-ops
// --device wgpu` (its attention rows).

const WG: u32 = 64u;
const MAX_DIMS: u32 = 4u; // head_dim ≤ 64 · 4

struct Params {
    items: u32,
    n_heads: u32,
    group: u32,
    head_dim: u32,
    kv_dim: u32,
    scale: f32,
    pos0: u32,
    block_size: u32,
    window: u32, // keys per query (sliding window), 0: all keys
    data_at: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> data: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> q_sh: array<f32, 256>;
var<workgroup> p_sh: array<f32, WG>; // the tile's probabilities
var<workgroup> s_sh: array<u32, WG>; // the tile's slots
var<workgroup> row_sh: vec3<u32>; // row, last position, table start

fn attend(l: Lanes, item: u32, h: u32, paged: bool) {
    if l.id == 0u {
        if paged {
            let at = p.data_at + 3u * item;
            row_sh = vec3<u32>(data[at], data[at + 1u], p.data_at + data[at + 2u]);
        } else {
            row_sh = vec3<u32>(item, p.pos0 + item, 0u);
        }
    }
    let r = workgroupUniformLoad(&row_sh);
    let row = r.x;
    let n_kv = r.y + 1u;
    var first = 0u;
    if p.window != 0u && n_kv > p.window {
        first = n_kv - p.window;
    }
    let table = r.z;
    let qd = p.n_heads * p.head_dim;
    let head = (h / p.group) * p.head_dim;
    for (var d = l.id; d < p.head_dim; d += WG) {
        q_sh[d] = q[row * qd + h * p.head_dim + d];
    }
    var m = NEG_BIG;
    var lsum = 0.0;
    var acc: array<f32, MAX_DIMS>;
    for (var t0 = first; t0 < n_kv; t0 += WG) {
        let j = t0 + l.id;
        var slot = j;
        if paged && j < n_kv {
            slot = data[table + j / p.block_size] * p.block_size + j % p.block_size;
        }
        s_sh[l.id] = slot;
        workgroupBarrier(); // q_sh (first tile) and s_sh are complete
        var s = NEG_BIG;
        if j < n_kv {
            let base = slot * p.kv_dim + head;
            var dot = 0.0;
            for (var d = 0u; d < p.head_dim; d++) {
                dot += q_sh[d] * k[base + d];
            }
            s = dot * p.scale;
        }
        let m_new = max(m, max1(s, l));
        let corr = exp(m - m_new);
        let pj = select(0.0, exp(s - m_new), j < n_kv);
        p_sh[l.id] = pj;
        lsum = lsum * corr + sum1(pj, l); // its barriers publish p_sh
        let count = min(WG, n_kv - t0);
        for (var c = 0u; c < MAX_DIMS; c++) {
            let d = l.id + WG * c;
            if d < p.head_dim {
                var a = acc[c] * corr;
                for (var jj = 0u; jj < count; jj++) {
                    a += p_sh[jj] * v[s_sh[jj] * p.kv_dim + head + d];
                }
                acc[c] = a;
            }
        }
        m = m_new;
        workgroupBarrier(); // p_sh and s_sh are read before the next tile writes them
    }
    for (var c = 0u; c < MAX_DIMS; c++) {
        let d = l.id + WG * c;
        if d < p.head_dim {
            out[row * qd + h * p.head_dim + d] = acc[c] / lsum;
        }
    }
}

@compute @workgroup_size(WG)
fn attention(l: Lanes, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = group_index(wid, nwg);
    if g < p.items * p.n_heads {
        attend(l, g / p.n_heads, g % p.n_heads, false);
    }
}

@compute @workgroup_size(WG)
fn attention_paged(l: Lanes, @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = group_index(wid, nwg);
    if g < p.items * p.n_heads {
        attend(l, g / p.n_heads, g % p.n_heads, true);
    }
}
