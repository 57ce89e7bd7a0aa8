// common.wgsl: prepended to every shader by src/pipeline.rs.
//
// Dispatches are 2-D when one dimension would pass the 65,535-workgroup limit
// (src/pipeline.rs: `grid`), so a shader numbers its workgroups linearly: with 65,535 × 2
// groups for 100,000 items, workgroup (x 34,465, y 1) is number 34,465 + 65,535 = 100,000 and
// returns (past the count).

fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Unsigned bytes of a word as 4 integers: byte 0 (the lowest) first.
fn u8x4(w: u32) -> vec4<u32> {
    return vec4<u32>(w & 0xffu, (w >> 8u) & 0xffu, (w >> 16u) & 0xffu, w >> 24u);
}

// Signed bytes of a word as 4 integers, byte 0 first.
fn s8x4(w: u32) -> vec4<i32> {
    let s = bitcast<i32>(w);
    return vec4<i32>(extractBits(s, 0u, 8u), extractBits(s, 8u, 8u), extractBits(s, 16u, 8u),
                     extractBits(s, 24u, 8u));
}

// The lower f16 of a word.
fn f16_lo(w: u32) -> f32 {
    return unpack2x16float(w).x;
}

// A stand-in for -infinity (WGSL has no infinity literal): below every finite score.
const NEG_BIG: f32 = -3.0e38;
