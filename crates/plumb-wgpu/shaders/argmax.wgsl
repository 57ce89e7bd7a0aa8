// argmax.wgsl: the index of the largest of each row of `len` values, the first among equals;
// NaN never wins and a row with nothing above -inf gives 0 (backend.rs: argmax_host).
//
// Launch (src/argmax.rs): one workgroup of 256 per row; each invocation scans elements id,
// id + 256, ... keeping its first maximum (strictly greater replaces), then one workgroup
// reduction picks the largest value and among equals the smallest index.
// Check: `plumb check --device wgpu --op argmax`.

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;

struct Params {
    rows: u32,
    len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;

// NaN by its bits, which no compiler may assume away.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

@compute @workgroup_size(WG)
fn argmax(l: Lanes, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg);
    if r >= p.rows {
        return;
    }
    var bv = bitcast<f32>(0xff800000u); // -inf
    var bi = NONE;
    for (var i = l.id; i < p.len; i += WG) {
        let v = x[r * p.len + i];
        if !is_nan(v) && v > bv {
            bv = v;
            bi = i;
        }
    }
    let best = argmax1(bv, bi, l);
    if l.id == 0u {
        ids[r] = select(best, 0u, best == NONE);
    }
}
