//! The WGSL sources (`shaders/`, embedded in the binary) and how a module is put together from
//! them. WGSL has no includes: a module is its op family's file after the shared pieces it
//! needs — `common.wgsl` always, one of the two reductions, the weight formats, one of the two
//! integer dot products. (naga takes subgroup operations without WGSL's `enable subgroups;`,
//! which it rejects as not yet implemented: the device's SUBGROUP feature is what allows
//! them.)
//!
//! This file stands alone (no crate imports): build.rs compiles it too, and validates every
//! module of every variant with naga (`shader_check.rs`), so a shader that does not compile
//! fails the build.

/// How workgroups sum, take maxima and argmax (`shaders/reduce_*.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reduce {
    /// Subgroup operations, then one value per subgroup through workgroup memory.
    Subgroup,
    /// A tree through workgroup memory: every adapter.
    Workgroup,
}

/// How the 8-bit matvec takes dot products of 4 byte pairs (`shaders/dot4_*.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dot {
    /// WGSL's `dot4I8Packed`: one instruction where the adapter has integer dot products.
    Native,
    /// Byte extractions and multiplies: WGSL without the packed 4x8 dot product extension.
    Soft,
}

/// One op family's shader file and the shared pieces it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shader {
    pub name: &'static str,
    body: &'static str,
    reduce: bool,
    formats: bool,
    dot: bool,
}

const fn shader(name: &'static str, body: &'static str) -> Shader {
    Shader {
        name,
        body,
        reduce: false,
        formats: false,
        dot: false,
    }
}

const fn with_reduce(s: Shader) -> Shader {
    Shader { reduce: true, ..s }
}

const fn with_formats(s: Shader) -> Shader {
    Shader { formats: true, ..s }
}

pub const EMBEDDING: Shader = with_formats(shader(
    "embedding.wgsl",
    include_str!("../shaders/embedding.wgsl"),
));
pub const NORM: Shader = with_reduce(shader("norm.wgsl", include_str!("../shaders/norm.wgsl")));
pub const ROPE: Shader = shader("rope.wgsl", include_str!("../shaders/rope.wgsl"));
pub const ELEMENTWISE: Shader = shader(
    "elementwise.wgsl",
    include_str!("../shaders/elementwise.wgsl"),
);
pub const KV: Shader = shader("kv.wgsl", include_str!("../shaders/kv.wgsl"));
pub const ARGMAX: Shader = with_reduce(shader(
    "argmax.wgsl",
    include_str!("../shaders/argmax.wgsl"),
));
pub const QUANTIZE: Shader = shader("quantize.wgsl", include_str!("../shaders/quantize.wgsl"));
pub const MATVEC: Shader = Shader {
    dot: true,
    ..with_formats(shader(
        "matvec.wgsl",
        include_str!("../shaders/matvec.wgsl"),
    ))
};
pub const MATMUL: Shader = with_formats(shader(
    "matmul.wgsl",
    include_str!("../shaders/matmul.wgsl"),
));
pub const ATTENTION: Shader = with_reduce(shader(
    "attention.wgsl",
    include_str!("../shaders/attention.wgsl"),
));

/// Every shader file with an entry point.
pub const ALL: &[Shader] = &[
    EMBEDDING,
    NORM,
    ROPE,
    ELEMENTWISE,
    KV,
    ARGMAX,
    QUANTIZE,
    MATVEC,
    MATMUL,
    ATTENTION,
];

const COMMON: &str = include_str!("../shaders/common.wgsl");
const FORMATS: &str = include_str!("../shaders/formats.wgsl");
const REDUCE_WORKGROUP: &str = include_str!("../shaders/reduce_workgroup.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../shaders/reduce_subgroup.wgsl");
const DOT4_NATIVE: &str = include_str!("../shaders/dot4_native.wgsl");
const DOT4_SOFT: &str = include_str!("../shaders/dot4_soft.wgsl");

impl Shader {
    /// Whether the module of this shader needs the adapter's subgroups under `reduce`.
    pub fn needs_subgroups(&self, reduce: Reduce) -> bool {
        self.reduce && reduce == Reduce::Subgroup
    }

    /// The whole module of this shader under the variants `reduce` and `dot`.
    pub fn module(&self, reduce: Reduce, dot: Dot) -> String {
        let mut parts = vec![COMMON];
        if self.reduce {
            parts.push(match reduce {
                Reduce::Subgroup => REDUCE_SUBGROUP,
                Reduce::Workgroup => REDUCE_WORKGROUP,
            });
        }
        if self.formats {
            parts.push(FORMATS);
        }
        if self.dot {
            parts.push(match dot {
                Dot::Native => DOT4_NATIVE,
                Dot::Soft => DOT4_SOFT,
            });
        }
        parts.push(self.body);
        parts.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_holds_exactly_the_pieces_it_needs() {
        let m = MATVEC.module(Reduce::Workgroup, Dot::Soft);
        assert!(m.contains("fn unit_q") && m.contains("fn s8x4") && m.contains("let p = s8x4"));
        assert!(!m.contains("dot4I8Packed(") && !m.contains("fn sum4"));
        let a = ATTENTION.module(Reduce::Subgroup, Dot::Native);
        assert!(a.contains("subgroupAdd") && !a.contains("fn deq4"));
        assert!(ATTENTION.needs_subgroups(Reduce::Subgroup));
        let r = ROPE.module(Reduce::Subgroup, Dot::Native);
        assert!(!ROPE.needs_subgroups(Reduce::Subgroup) && !r.contains("fn sum4"));
    }
}
