// embedding.wgsl: out[t, :] = dequant(table[ids[t], :]), with formats.wgsl.
//
// Launch (src/embedding.rs): ceil(n_ids · ceil(cols/4) / 256) workgroups of 256, one
// invocation per 4 output elements. Item g = t · quads + c/4: with cols 576 (144 quads),
// g = 300 is token 2, elements 48..51.
// A table split into parts (src/buffer.rs) is one launch per part, each writing the ids in its
// rows row0 .. row0 + rows and leaving the others to theirs.
// Check: `plumb check --device wgpu --op embedding`.

const WG: u32 = 256u;

struct Params {
    n_ids: u32,
    cols: u32,
    row_words: u32,
    row0: u32,
    rows: u32,
    ids_at: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> data: array<u32>;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn embedding(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let quads = (p.cols + 3u) / 4u;
    let g = group_index(wid, nwg) * WG + lid;
    if g >= p.n_ids * quads {
        return;
    }
    let t = g / quads;
    let k = (g % quads) * 4u;
    let id = data[p.ids_at + t];
    if id < p.row0 || id - p.row0 >= p.rows {
        return;
    }
    let v = deq4((id - p.row0) * p.row_words, k);
    for (var i = 0u; i < 4u; i++) {
        if k + i < p.cols {
            out[t * p.cols + k + i] = v[i];
        }
    }
}
