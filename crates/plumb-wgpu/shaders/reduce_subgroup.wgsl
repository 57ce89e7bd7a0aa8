// reduce_subgroup.wgsl: the functions of reduce_workgroup.wgsl on subgroup operations, for
// adapters with the `subgroups` feature (variant reduce=subgroup): each subgroup reduces in
// registers, then one value per subgroup goes through workgroup memory. The subgroup size is
// whatever the adapter runs (8 on lavapipe, 32 on NVIDIA and Apple, 32 or 64 on AMD).

struct Lanes {
    @builtin(local_invocation_index) id: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) n_sg: u32,
}

var<workgroup> red_v: array<vec4<f32>, WG>;
var<workgroup> red_i: array<u32, WG>;

fn sum4(v: vec4<f32>, l: Lanes) -> vec4<f32> {
    let s = subgroupAdd(v);
    if l.lane == 0u {
        red_v[l.sg] = s;
    }
    workgroupBarrier();
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < l.n_sg; i++) {
        r += red_v[i];
    }
    workgroupBarrier();
    return r;
}

fn sum1(v: f32, l: Lanes) -> f32 {
    return sum4(vec4<f32>(v, 0.0, 0.0, 0.0), l).x;
}

fn max1(v: f32, l: Lanes) -> f32 {
    let s = subgroupMax(v);
    if l.lane == 0u {
        red_v[l.sg].x = s;
    }
    workgroupBarrier();
    var r = red_v[0].x;
    for (var i = 1u; i < l.n_sg; i++) {
        r = max(r, red_v[i].x);
    }
    workgroupBarrier();
    return r;
}

fn argmax1(v: f32, i: u32, l: Lanes) -> u32 {
    let m = subgroupMax(v);
    let mi = subgroupMin(select(0xffffffffu, i, v == m));
    if l.lane == 0u {
        red_v[l.sg].x = m;
        red_i[l.sg] = mi;
    }
    workgroupBarrier();
    var bv = red_v[0].x;
    var bi = red_i[0];
    for (var s = 1u; s < l.n_sg; s++) {
        let ov = red_v[s].x;
        let oi = red_i[s];
        if ov > bv || (ov == bv && oi < bi) {
            bv = ov;
            bi = oi;
        }
    }
    workgroupBarrier();
    return bi;
}
