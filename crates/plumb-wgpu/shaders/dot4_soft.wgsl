// dot4_soft.wgsl (variant dot=soft): the dot product of two words of 4 signed bytes written
// out, for adapters whose WGSL lacks the packed 4x8 integer dot product extension.

fn dot4(a: u32, b: u32) -> i32 {
    let p = s8x4(a) * s8x4(b);
    return p.x + p.y + p.z + p.w;
}
