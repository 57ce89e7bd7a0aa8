// dot4_native.wgsl (variant dot=native): the dot product of two words of 4 signed bytes as
// WGSL's built-in, which naga lowers to the adapter's integer dot product instruction where
// it has one (Vulkan's VK_KHR_shader_integer_dot_product) and to an exact sequence of byte
// extractions where not.

fn dot4(a: u32, b: u32) -> i32 {
    return dot4I8Packed(a, b);
}
