//! Storage formats of weights, numbered as in the GGUF specification (`ggml_type`), and the
//! MLX affine group formats (`quant::affine`), which GGUF does not have.

use crate::error::{CoreError, Result};

/// A tensor's storage format. The discriminant is the GGUF type id; the MLX formats have ids
/// of their own (`0x1000 | bits << 8 | group`), which no GGUF file carries.
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
    // MLX affine group formats (`quant::affine`): not GGUF types, their ids (0x1000 | bits
    // << 8 | group) lie outside GGUF's range and `from_id` never returns them.
    Mlx2G32 = 0x1000 | (2 << 8) | 32,
    Mlx2G64 = 0x1000 | (2 << 8) | 64,
    Mlx2G128 = 0x1000 | (2 << 8) | 128,
    Mlx3G32 = 0x1000 | (3 << 8) | 32,
    Mlx3G64 = 0x1000 | (3 << 8) | 64,
    Mlx3G128 = 0x1000 | (3 << 8) | 128,
    Mlx4G32 = 0x1000 | (4 << 8) | 32,
    Mlx4G64 = 0x1000 | (4 << 8) | 64,
    Mlx4G128 = 0x1000 | (4 << 8) | 128,
    Mlx5G32 = 0x1000 | (5 << 8) | 32,
    Mlx5G64 = 0x1000 | (5 << 8) | 64,
    Mlx5G128 = 0x1000 | (5 << 8) | 128,
    Mlx6G32 = 0x1000 | (6 << 8) | 32,
    Mlx6G64 = 0x1000 | (6 << 8) | 64,
    Mlx6G128 = 0x1000 | (6 << 8) | 128,
    Mlx8G32 = 0x1000 | (8 << 8) | 32,
    Mlx8G64 = 0x1000 | (8 << 8) | 64,
    Mlx8G128 = 0x1000 | (8 << 8) | 128,
}

/// Elements in one super-block of the K-quants.
pub const QK_K: usize = 256;

impl GgmlType {
    /// Every GGUF type this build can read, in id order.
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

    /// The MLX affine group formats: bits 2, 3, 4, 5, 6, 8 × groups of 32, 64, 128.
    pub const MLX: [GgmlType; 18] = [
        GgmlType::Mlx2G32,
        GgmlType::Mlx2G64,
        GgmlType::Mlx2G128,
        GgmlType::Mlx3G32,
        GgmlType::Mlx3G64,
        GgmlType::Mlx3G128,
        GgmlType::Mlx4G32,
        GgmlType::Mlx4G64,
        GgmlType::Mlx4G128,
        GgmlType::Mlx5G32,
        GgmlType::Mlx5G64,
        GgmlType::Mlx5G128,
        GgmlType::Mlx6G32,
        GgmlType::Mlx6G64,
        GgmlType::Mlx6G128,
        GgmlType::Mlx8G32,
        GgmlType::Mlx8G64,
        GgmlType::Mlx8G128,
    ];

    /// The GGUF type with this id.
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
            GgmlType::Mlx2G32 => "MLX2_G32",
            GgmlType::Mlx2G64 => "MLX2_G64",
            GgmlType::Mlx2G128 => "MLX2_G128",
            GgmlType::Mlx3G32 => "MLX3_G32",
            GgmlType::Mlx3G64 => "MLX3_G64",
            GgmlType::Mlx3G128 => "MLX3_G128",
            GgmlType::Mlx4G32 => "MLX4_G32",
            GgmlType::Mlx4G64 => "MLX4_G64",
            GgmlType::Mlx4G128 => "MLX4_G128",
            GgmlType::Mlx5G32 => "MLX5_G32",
            GgmlType::Mlx5G64 => "MLX5_G64",
            GgmlType::Mlx5G128 => "MLX5_G128",
            GgmlType::Mlx6G32 => "MLX6_G32",
            GgmlType::Mlx6G64 => "MLX6_G64",
            GgmlType::Mlx6G128 => "MLX6_G128",
            GgmlType::Mlx8G32 => "MLX8_G32",
            GgmlType::Mlx8G64 => "MLX8_G64",
            GgmlType::Mlx8G128 => "MLX8_G128",
        }
    }

    /// `(bits, group size)` of an MLX affine format, `None` for the GGUF types.
    pub fn affine(self) -> Option<(u32, usize)> {
        let id = self as u32;
        (id & 0x1000 != 0).then_some(((id >> 8) & 0xf, (id & 0xff) as usize))
    }

    /// The MLX affine format of `bits` and `group`, if it exists.
    pub fn mlx(bits: u32, group: usize) -> Option<GgmlType> {
        Self::MLX
            .into_iter()
            .find(|t| t.affine() == Some((bits, group)))
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
            .chain(&Self::MLX)
            .copied()
            .find(|t| t.name().replace('_', "") == norm)
    }

    /// Elements per block (1 for the float types; an MLX block is one group).
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => 32,
            GgmlType::Q8_0 | GgmlType::Q8_1 => 32,
            GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K => QK_K,
            GgmlType::Q5K | GgmlType::Q6K | GgmlType::Q8K => QK_K,
            // The MLX formats: one group.
            mlx => mlx.affine().map_or(1, |(_, group)| group),
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
            // scale (f32), bias (f32), then the group's codes (see `quant::affine`)
            mlx => mlx
                .affine()
                .map_or(0, |(bits, group)| 8 + group * bits as usize / 8),
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
        for t in GgmlType::MLX {
            assert_eq!(GgmlType::parse(t.name()), Some(t));
            assert!(GgmlType::from_id(t.id()).is_err(), "{t} is no GGUF type");
            let (bits, group) = t.affine().unwrap();
            assert_eq!(GgmlType::mlx(bits, group), Some(t));
        }
        assert_eq!(GgmlType::parse("mlx4g64"), Some(GgmlType::Mlx4G64));
        assert_eq!(GgmlType::Q4_0.affine(), None);
    }

    #[test]
    fn mlx_blocks_are_one_group() {
        // 4 bits, group 64: scale and bias (f32) and 32 bytes of codes.
        assert_eq!(GgmlType::Mlx4G64.block_size(), 64);
        assert_eq!(GgmlType::Mlx4G64.type_size(), 40);
        assert_eq!(GgmlType::Mlx3G128.type_size(), 8 + 48);
        assert_eq!(GgmlType::Mlx8G32.row_bytes(576).unwrap(), 18 * 40);
        assert!(GgmlType::Mlx4G128.row_bytes(576).is_err());
        assert!(GgmlType::Mlx2G32.is_quantized());
    }
}
