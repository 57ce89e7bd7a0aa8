//! Every shader module of every variant parses and validates with naga, the WGSL front end
//! wgpu compiles with, so a shader that does not compile fails the tests without a GPU.

use plumb_wgpu::shaders::ALL;
use plumb_wgpu::{Dot, Reduce};

#[test]
fn every_shader_of_every_variant_validates() {
    let mut checked = 0;
    for s in ALL {
        for reduce in [Reduce::Subgroup, Reduce::Workgroup] {
            for dot in [Dot::Native, Dot::Soft] {
                let src = s.module(reduce, dot);
                let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| {
                    panic!(
                        "{} ({reduce:?}, {dot:?}): {}",
                        s.name,
                        e.emit_to_string(&src)
                    )
                });
                // unpack2x16float needs SHADER_FLOAT16_IN_FLOAT32, which wgpu grants on every
                // Vulkan, Metal and DX12 device (WebGPU core).
                let mut caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
                if s.needs_subgroups(reduce) {
                    caps |= naga::valid::Capabilities::SUBGROUP;
                }
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                    .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                    .subgroup_operations(naga::valid::SubgroupOperationSet::all())
                    .validate(&module)
                    .unwrap_or_else(|e| {
                        panic!(
                            "{} ({reduce:?}, {dot:?}): {}",
                            s.name,
                            e.emit_to_string(&src)
                        )
                    });
                checked += 1;
            }
        }
    }
    assert_eq!(checked, ALL.len() * 4);
}

#[test]
fn a_broken_shader_fails_validation() {
    // The check above would pass vacuously if naga accepted anything: a call of a function
    // that does not exist must not parse.
    let src = plumb_wgpu::shaders::NORM
        .module(Reduce::Workgroup, Dot::Soft)
        .replace("sum1(ss, l)", "sum9(ss, l)");
    assert!(naga::front::wgsl::parse_str(&src).is_err());
}
