// matmul.wgsl: out[t, r] = Σ_k W[r, k] · x[t, k] for batches above 8 rows of x (prefill),
// with formats.wgsl: f32 activations, weights dequantized into workgroup memory tile by tile.
//
// Launch (src/matmul.rs): one workgroup of 256 per 64 × 64 output tile (64 weight rows × 64
// tokens), tiles numbered m-fastest: tile g is rows 64 (g % tiles_m) .., tokens 64 (g / tiles_m)
// ... Per 32-wide step of k the workgroup dequantizes W[64 × 32] (two deq4 per invocation) and
// loads x[64 × 32] (8 values each); invocation (ty, tx) = (id / 16, id % 16) accumulates the
// 4 × 4 outputs rows 4ty .. 4ty + 3, tokens 4tx .. 4tx + 3.
// A weight split into parts (src/buffer.rs) is one launch per part: rows counts the part's rows,
// and its row r is output row row0 + r of out_rows.
// Check: `plumb check --device wgpu --op matmul` (the cases with n > 8). Time: `plumb bench-ops
// --device wgpu` (the matmul rows of the prefill shapes).

const WG: u32 = 256u;
const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 32u;

struct Params {
    rows: u32,
    cols: u32,
    n: u32,
    row_words: u32,
    tiles_m: u32,
    out_rows: u32,
    row0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> ws: array<f32, 2048>; // [TK][TM]: ws[k · 64 + r]
var<workgroup> xs: array<f32, 2048>; // [TK][TN]: xs[k · 64 + t]

@compute @workgroup_size(WG)
fn matmul(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = group_index(wid, nwg);
    let r0 = (g % p.tiles_m) * TM;
    let t0 = (g / p.tiles_m) * TN;
    if t0 >= p.n {
        return;
    }
    let ty = lid / 16u;
    let tx = lid % 16u;
    var acc: array<vec4<f32>, 4>; // acc[i][j]: row 4ty + i, token 4tx + j
    for (var k0 = 0u; k0 < p.cols; k0 += TK) {
        for (var h = 0u; h < 2u; h++) {
            let idx = lid + WG * h;
            let r = idx / 8u;
            let kq = 4u * (idx % 8u);
            var v = vec4<f32>(0.0);
            if r0 + r < p.rows {
                v = deq4((r0 + r) * p.row_words, k0 + kq);
            }
            for (var i = 0u; i < 4u; i++) {
                ws[(kq + i) * TM + r] = select(0.0, v[i], k0 + kq + i < p.cols);
            }
        }
        for (var h = 0u; h < 8u; h++) {
            let idx = lid + WG * h;
            let t = idx / TK;
            let kk = idx % TK;
            var v = 0.0;
            if t0 + t < p.n && k0 + kk < p.cols {
                v = x[(t0 + t) * p.cols + k0 + kk];
            }
            xs[kk * TN + t] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = vec4<f32>(ws[kk * TM + 4u * ty], ws[kk * TM + 4u * ty + 1u],
                              ws[kk * TM + 4u * ty + 2u], ws[kk * TM + 4u * ty + 3u]);
            let b = vec4<f32>(xs[kk * TN + 4u * tx], xs[kk * TN + 4u * tx + 1u],
                              xs[kk * TN + 4u * tx + 2u], xs[kk * TN + 4u * tx + 3u]);
            for (var i = 0u; i < 4u; i++) {
                acc[i] += a[i] * b;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + 4u * ty + i;
        for (var j = 0u; j < 4u; j++) {
            let t = t0 + 4u * tx + j;
            if r < p.rows && t < p.n {
                out[t * p.out_rows + p.row0 + r] = acc[i][j];
            }
        }
    }
}
