// kv.wgsl: kv_write_slots, pool[slots[i] · kv_dim + d] = src[i · kv_dim + d] (the paged KV
// cache's write; the contiguous kv_write is a buffer copy, src/backend.rs).
//
// Launch (src/kv.rs): ceil(n · kv_dim / 256) workgroups of 256, one invocation per element;
// the slots are in the step's data buffer at slots_at.
// Check: the crate's tests/kv.rs (against the reference backend), and end to end by the
// paged forward (`plumb serve --device wgpu`, `plumb bench --device wgpu --parallel N`).

const WG: u32 = 256u;

struct Params {
    n: u32,
    kv_dim: u32,
    slots_at: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> data: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> pool: array<f32>;

@compute @workgroup_size(WG)
fn kv_write_slots(@builtin(local_invocation_index) lid: u32,
                  @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = group_index(wid, nwg) * WG + lid;
    if g >= p.n * p.kv_dim {
        return;
    }
    let i = g / p.kv_dim;
    pool[data[p.slots_at + i] * p.kv_dim + g % p.kv_dim] = src[g];
}
