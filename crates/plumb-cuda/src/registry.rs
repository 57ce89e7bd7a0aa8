//! The variant registry: every op family with named kernels, its variants, and the check
//! cases that exercise them. `plumb check --device cuda`, `plumb tune`, the GPU tests and
//! `plumb kernels` all iterate this one table, so a registered variant cannot go unchecked.

/// One named kernel choice of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub name: &'static str,
    /// What it runs (kernel file and the shapes it takes).
    pub doc: &'static str,
}

/// An op family with named variants; the first variant is the default (except that
/// `prefill` defaults to `tiled` where cuBLAS cannot be loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub variants: &'static [Variant],
    /// The check-harness ops (`plumb_ops::check::OPS`) whose cases run this family's kernels:
    /// a variant is checked by running these ops with it selected.
    pub checks: &'static [&'static str],
    /// Which backend calls the family serves.
    pub doc: &'static str,
    /// For a matmul family, the token counts it serves (inclusive); `None` for attention.
    pub tokens: Option<(usize, usize)>,
}

impl Family {
    pub fn variant_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.variants.iter().map(|v| v.name)
    }

    pub fn default_variant(&self) -> &'static str {
        self.variants[0].name
    }
}

const fn v(name: &'static str, doc: &'static str) -> Variant {
    Variant { name, doc }
}

/// Every family with variants, in the order check and tune visit them.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "matvec",
        doc: "matmul of 1 to 8 tokens",
        checks: &["matmul"],
        tokens: Some((1, 8)),
        variants: &[
            v(
                "q8_dp4a",
                "matvec_q8.cu: q8_1 activations, dp4a dots on repacked weights; F16 / BF16: \
                 matvec_h.cu (f32 activations, 16-byte weight loads); other formats take \
                 warp_per_row",
            ),
            v(
                "warp_per_row",
                "matvec_q.cu: f32 activations, one warp per weight row",
            ),
            v(
                "tiled",
                "matvec_q.cu: f32 activations, 8 rows per block, x tiled in shared memory",
            ),
            v(
                "mma",
                "as q8_dp4a, but 2 to 8 tokens through mmq.cu's one-tile kernel (its formats: \
                 Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, on sm_80+)",
            ),
        ],
    },
    Family {
        name: "prefill",
        doc: "matmul of more than 64 tokens (and of 9 to 64 where no batch kernel applies)",
        checks: &["matmul"],
        tokens: Some((65, usize::MAX)),
        variants: &[
            v(
                "cublas",
                "matmul.cu dequantizes to f16 (f32 for F32/BF16), then one cuBLAS GEMM",
            ),
            v(
                "tiled",
                "matmul.cu: a register-tiled kernel on the stored format",
            ),
        ],
    },
    Family {
        name: "batch",
        doc: "matmul of 9 to 64 tokens",
        checks: &["matmul"],
        tokens: Some((9, 64)),
        variants: &[
            v(
                "auto",
                "mma for every mmq.cu format on sm_80+ up to its cross-over (launch.rs \
                 AUTO_MMA_MAX_N), else the prefill path",
            ),
            v(
                "mma",
                "mmq.cu: int8 tensor cores on sm_80+ for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K \
                 (other formats: prefill path)",
            ),
            v(
                "mma_lb",
                "mmq.cu without the double buffer, two blocks per SM",
            ),
            v(
                "q8_dp4a",
                "matvec_q8.cu's batched kernel, chunks of 8 tokens (formats with a dp4a kernel)",
            ),
            v("prefill", "the prefill path (dequantize + cuBLAS or tiled)"),
        ],
    },
    Family {
        name: "attention",
        doc: "attention over a contiguous KV cache",
        checks: &["attention"],
        tokens: None,
        variants: &[
            v(
                "split_kv",
                "one token: attn_decode.cu (split-KV); more: attn_prefill.cu or the flash kernel",
            ),
            v("flash_split", "attention.cu's flash kernel for every call"),
        ],
    },
];

/// The family `name`, if it has variants.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// The variant names of `op` (empty for an op without variants).
pub fn variants(op: &str) -> Vec<&'static str> {
    family(op).map_or_else(Vec::new, |f| f.variant_names().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_checked_and_names_are_unique() {
        for f in FAMILIES {
            assert!(!f.checks.is_empty(), "{} has no check cases", f.name);
            assert!(!f.variants.is_empty(), "{} has no variants", f.name);
            for c in f.checks {
                assert!(
                    plumb_ops::check::OPS.contains(c),
                    "{}: {c} is not a check op",
                    f.name
                );
            }
            if let Some((lo, hi)) = f.tokens {
                assert!(lo <= hi, "{}", f.name);
            }
            let mut names: Vec<_> = f.variant_names().collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), f.variants.len(), "{}: duplicate names", f.name);
        }
    }

    #[test]
    fn the_matmul_families_cover_every_token_count_once() {
        let mut ranges: Vec<(usize, usize)> = FAMILIES.iter().filter_map(|f| f.tokens).collect();
        ranges.sort_unstable();
        assert_eq!(ranges[0], (1, crate::launch::MATVEC_MAX_N));
        for w in ranges.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0, "{ranges:?}");
        }
        assert_eq!(ranges.last().map(|r| r.1), Some(usize::MAX));
    }
}
