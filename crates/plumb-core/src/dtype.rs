//! Storage formats of weights, numbered as in the GGUF specification (`ggml_type`).

use crate::error::{CoreError, Result};

/// A tensor's storage format. The discriminant is the GGUF type id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2K = 10,
    Q3K = 11,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    Q8K = 15,
    BF16 = 30,
}

/// Elements in one super-block of the K-quants.
pub const QK_K: usize = 256;

impl GgmlType {
    /// Every type this build can read, in id order.
    pub const ALL: [GgmlType; 15] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
        GgmlType::BF16,
    ];

    pub fn from_id(id: u32) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| *t as u32 == id)
            .ok_or(CoreError::UnknownType(id))
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Q8K => "Q8_K",
        }
    }

    /// Parses a name as written on a command line (case-insensitive, `q4_k` or `q4k`).
    pub fn parse(name: &str) -> Option<Self> {
        let norm: String = name
            .chars()
            .filter(|c| *c != '_')
            .collect::<String>()
            .to_ascii_uppercase();
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name().replace('_', "") == norm)
    }

    /// Elements per block (1 for the float types).
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => 32,
            GgmlType::Q8_0 | GgmlType::Q8_1 => 32,
            GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K => QK_K,
            GgmlType::Q5K | GgmlType::Q6K | GgmlType::Q8K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 2 + 16,
            GgmlType::Q4_1 => 2 + 2 + 16,
            GgmlType::Q5_0 => 2 + 4 + 16,
            GgmlType::Q5_1 => 2 + 2 + 4 + 16,
            GgmlType::Q8_0 => 2 + 32,
            GgmlType::Q8_1 => 2 + 2 + 32,
            // d, dmin, scales[16], qs[64]
            GgmlType::Q2K => 2 + 2 + QK_K / 16 + QK_K / 4,
            // hmask[32], qs[64], scales[12], d
            GgmlType::Q3K => QK_K / 8 + QK_K / 4 + 12 + 2,
            // d, dmin, scales[12], qs[128]
            GgmlType::Q4K => 2 + 2 + 12 + QK_K / 2,
            // d, dmin, scales[12], qh[32], qs[128]
            GgmlType::Q5K => 2 + 2 + 12 + QK_K / 8 + QK_K / 2,
            // ql[128], qh[64], scales[16], d
            GgmlType::Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
            // d (f32), qs[256], bsums[16] (i16)
            GgmlType::Q8K => 4 + QK_K + 2 * QK_K / 16,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of a row of `n` elements, or an error if `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Result<usize> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return Err(CoreError::NotBlockAligned {
                ty: self.name(),
                n,
                block: bs,
            });
        }
        (n / bs)
            .checked_mul(self.type_size())
            .ok_or_else(|| CoreError::Shape(format!("{} elements of {} overflow", n, self.name())))
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_block_layouts() {
        // Bits per weight of the K-quants, a well-known figure: Q4_K 4.5, Q6_K 6.5625.
        assert_eq!(GgmlType::Q4K.type_size() * 8, 256 * 9 / 2);
        assert_eq!(GgmlType::Q6K.type_size(), 210);
        assert_eq!(GgmlType::Q2K.type_size(), 84);
        assert_eq!(GgmlType::Q3K.type_size(), 110);
        assert_eq!(GgmlType::Q5K.type_size(), 176);
        assert_eq!(GgmlType::Q8K.type_size(), 292);
        assert_eq!(GgmlType::Q4_1.row_bytes(576).unwrap(), 18 * 20);
        assert!(GgmlType::Q4_0.row_bytes(33).is_err());
    }

    #[test]
    fn ids_and_names_round_trip() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()).unwrap(), t);
            assert_eq!(GgmlType::parse(t.name()), Some(t));
        }
        assert_eq!(GgmlType::parse("q4k"), Some(GgmlType::Q4K));
        assert!(GgmlType::from_id(4).is_err());
    }
}
