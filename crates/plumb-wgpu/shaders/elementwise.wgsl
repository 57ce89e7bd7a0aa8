// elementwise.wgsl: add (x += y), add_bias (x[r, :] += y[:dim]), swiglu (x = silu(y) · z).
//
// Launch (src/elementwise.rs): ceil(len / 256) workgroups of 256, one invocation per element.
// Check: `plumb check --device wgpu --op add` (add, add_bias), `--op swiglu`.

const WG: u32 = 256u;

struct Params {
    len: u32,
    dim: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> y: array<f32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;

fn item(lid: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return group_index(wid, nwg) * WG + lid;
}

@compute @workgroup_size(WG)
fn add(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = item(lid, wid, nwg);
    if i < p.len {
        x[i] += y[i];
    }
}

@compute @workgroup_size(WG)
fn add_bias(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = item(lid, wid, nwg);
    if i < p.len {
        x[i] += y[i % p.dim];
    }
}

// silu(g) = g / (1 + e^-g); for g below about -88, e^-g is +inf and the quotient -0.
@compute @workgroup_size(WG)
fn swiglu(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = item(lid, wid, nwg);
    if i < p.len {
        let g = y[i];
        x[i] = g / (1.0 + exp(-g)) * z[i];
    }
}
