// reduce_workgroup.wgsl: whole-workgroup reductions through workgroup memory, on any adapter
// (variant reduce=workgroup). The including shader defines WG, its workgroup size, a power
// of two. reduce_subgroup.wgsl has the same functions on subgroup operations.
//
// Every function is called by all WG invocations together (barriers inside) and returns the
// same value to each.

struct Lanes {
    @builtin(local_invocation_index) id: u32,
}

var<workgroup> red_v: array<vec4<f32>, WG>;
var<workgroup> red_i: array<u32, WG>;

fn sum4(v: vec4<f32>, l: Lanes) -> vec4<f32> {
    red_v[l.id] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if l.id < s {
            red_v[l.id] += red_v[l.id + s];
        }
        workgroupBarrier();
    }
    let r = red_v[0];
    workgroupBarrier();
    return r;
}

fn sum1(v: f32, l: Lanes) -> f32 {
    return sum4(vec4<f32>(v, 0.0, 0.0, 0.0), l).x;
}

fn max1(v: f32, l: Lanes) -> f32 {
    red_v[l.id].x = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if l.id < s {
            red_v[l.id].x = max(red_v[l.id].x, red_v[l.id + s].x);
        }
        workgroupBarrier();
    }
    let r = red_v[0].x;
    workgroupBarrier();
    return r;
}

// The index of the largest value, the smallest index among equals. Each invocation brings
// its own best (v, i); v is never NaN.
fn argmax1(v: f32, i: u32, l: Lanes) -> u32 {
    red_v[l.id].x = v;
    red_i[l.id] = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if l.id < s {
            let ov = red_v[l.id + s].x;
            let oi = red_i[l.id + s];
            let mv = red_v[l.id].x;
            if ov > mv || (ov == mv && oi < red_i[l.id]) {
                red_v[l.id].x = ov;
                red_i[l.id] = oi;
            }
        }
        workgroupBarrier();
    }
    let r = red_i[0];
    workgroupBarrier();
    return r;
}
