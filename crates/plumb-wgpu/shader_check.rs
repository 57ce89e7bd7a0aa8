//! naga's parse and validation of one shader module, as wgpu compiles it: compiled into
//! build.rs (every module of every variant, so a shader that does not compile fails the
//! build) and into tests/naga.rs (which shows that a broken shader is caught). Not part of the
//! library.

/// Parses and validates `src`; `subgroups` allows subgroup operations (the device's SUBGROUP
/// feature). The error is naga's, with the offending source lines.
pub fn validate(src: &str, subgroups: bool) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    // unpack2x16float needs SHADER_FLOAT16_IN_FLOAT32, which wgpu grants on every Vulkan,
    // Metal and DX12 device (WebGPU core).
    let mut caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    if subgroups {
        caps |= naga::valid::Capabilities::SUBGROUP;
    }
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(naga::valid::SubgroupOperationSet::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string(src))?;
    Ok(())
}
