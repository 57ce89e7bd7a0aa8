//! Validates every shader module of every variant with naga, the WGSL front end wgpu compiles
//! with: a shader that does not compile fails the build, with naga's message and the lines.

#[path = "shader_check.rs"]
mod shader_check;
#[allow(dead_code)]
#[path = "src/shaders.rs"]
mod shaders;

use shaders::{Dot, Reduce, ALL};

fn main() {
    println!("cargo:rerun-if-changed=shaders");
    println!("cargo:rerun-if-changed=src/shaders.rs");
    println!("cargo:rerun-if-changed=shader_check.rs");
    let mut failed = Vec::new();
    for s in ALL {
        for reduce in [Reduce::Subgroup, Reduce::Workgroup] {
            for dot in [Dot::Native, Dot::Soft] {
                let src = s.module(reduce, dot);
                if let Err(e) = shader_check::validate(&src, s.needs_subgroups(reduce)) {
                    failed.push(format!("{} ({reduce:?}, {dot:?}):\n{e}", s.name));
                }
            }
        }
    }
    if !failed.is_empty() {
        for f in &failed {
            for line in f.lines() {
                println!("cargo:warning={line}");
            }
        }
        eprintln!("{}", failed.join("\n"));
        panic!("{} shader module(s) do not validate", failed.len());
    }
}
