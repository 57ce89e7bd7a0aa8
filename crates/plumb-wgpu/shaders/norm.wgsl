// norm.wgsl: rms_norm and add_rms_norm over rows of `dim`:
//   out[r, i] = x[r, i] / sqrt(mean_j x[r, j]² + eps) · w[i]
// add_rms_norm first adds x into the residual and normalizes the sum (residual keeps it).
//
// Launch (src/norm.rs): one workgroup of 256 per row; each invocation takes elements
// id, id + 256, ... of its row, and the sum of squares is one workgroup reduction (reduce_*).
// Check: `plumb check --device wgpu --op rms_norm` (both ops).

const WG: u32 = 256u;

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> residual: array<f32>;

@compute @workgroup_size(WG)
fn rms_norm(l: Lanes, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg);
    if r >= p.rows {
        return;
    }
    let base = r * p.dim;
    var ss = 0.0;
    for (var i = l.id; i < p.dim; i += WG) {
        let v = x[base + i];
        ss += v * v;
    }
    let inv = 1.0 / sqrt(sum1(ss, l) / f32(p.dim) + p.eps);
    for (var i = l.id; i < p.dim; i += WG) {
        out[base + i] = x[base + i] * inv * w[i];
    }
}

@compute @workgroup_size(WG)
fn add_rms_norm(l: Lanes, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg);
    if r >= p.rows {
        return;
    }
    let base = r * p.dim;
    var ss = 0.0;
    for (var i = l.id; i < p.dim; i += WG) {
        let v = residual[base + i] + x[base + i];
        residual[base + i] = v;
        ss += v * v;
    }
    let inv = 1.0 / sqrt(sum1(ss, l) / f32(p.dim) + p.eps);
    // Each invocation reads back only the elements it wrote.
    for (var i = l.id; i < p.dim; i += WG) {
        out[base + i] = residual[base + i] * inv * w[i];
    }
}
