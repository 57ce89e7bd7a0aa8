// elementwise.wgsl: add (x += y), add_bias (x[r, :] += y[:dim]), swiglu (x = silu(y) · z),
// geglu (x = gelu_tanh(y) · z), scale (x *= f) and softcap (x = f · tanh(x / f)).
//
// Launch (src/elementwise.rs): ceil(len / 256) workgroups of 256, one invocation per element.
// Check: `plumb check --device wgpu --op add` (add, add_bias), `--op swiglu`, `--op geglu`,
// `--op scale`, `--op softcap`.

const WG: u32 = 256u;

struct Params {
    len: u32,
    dim: u32,
    f: f32, // scale's factor, softcap's cap
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

// tanh with its argument clamped to ±15, where tanh is ±1 in f32 already: a driver may compute
// tanh as a quotient of exponentials, which is inf / inf (NaN) for large arguments.
fn tanh_clamped(a: f32) -> f32 {
    return tanh(clamp(a, -15.0, 15.0));
}

// gelu_tanh(g) = g/2 · (1 + tanh(√(2/π) · (g + 0.044715 g³))), Gemma's gate.
@compute @workgroup_size(WG)
fn geglu(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = item(lid, wid, nwg);
    if i < p.len {
        let g = y[i];
        let t = tanh_clamped(0.7978845608028654 * (g + 0.044715 * g * g * g));
        x[i] = 0.5 * g * (1.0 + t) * z[i];
    }
}

@compute @workgroup_size(WG)
fn scale(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = item(lid, wid, nwg);
    if i < p.len {
        x[i] *= p.f;
    }
}

@compute @workgroup_size(WG)
fn softcap(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = item(lid, wid, nwg);
    if i < p.len {
        x[i] = p.f * tanh_clamped(x[i] / p.f);
    }
}
