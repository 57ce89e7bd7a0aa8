//! The validation that build.rs runs on every shader module (shader_check.rs) does catch a
//! broken shader, so a build that passes it means something.

#[path = "../shader_check.rs"]
mod shader_check;

use plumb_wgpu::shaders::{ALL, NORM};
use plumb_wgpu::{Dot, Reduce};

#[test]
fn every_shader_of_every_variant_validates() {
    for s in ALL {
        for reduce in [Reduce::Subgroup, Reduce::Workgroup] {
            for dot in [Dot::Native, Dot::Soft] {
                let src = s.module(reduce, dot);
                if let Err(e) = shader_check::validate(&src, s.needs_subgroups(reduce)) {
                    panic!("{} ({reduce:?}, {dot:?}): {e}", s.name);
                }
            }
        }
    }
}

#[test]
fn a_broken_shader_fails_validation() {
    let good = NORM.module(Reduce::Workgroup, Dot::Soft);
    assert!(shader_check::validate(&good, false).is_ok());
    // A call of a function that does not exist does not parse.
    let src = good.replace("sum1(ss, l)", "sum9(ss, l)");
    assert!(src != good);
    assert!(shader_check::validate(&src, false).is_err());
    // A subgroup reduction on a device without subgroups does not validate.
    let sub = NORM.module(Reduce::Subgroup, Dot::Soft);
    assert!(shader_check::validate(&sub, true).is_ok());
    assert!(shader_check::validate(&sub, false).is_err());
    // A type error: an f32 stored where a u32 goes.
    let src = good.replacen("let inv = 1.0 / sqrt(", "let inv: u32 = 1.0 / sqrt(", 1);
    assert!(src != good);
    assert!(shader_check::validate(&src, false).is_err());
}
