//! Weights as the shaders read them (shaders/formats.wgsl): the stored bytes, each block moved
//! onto a word boundary (Q4_0 and Q8_0 get 2 pad bytes after their scale, Q6_K 2 at its end,
//! F16 and BF16 rows of odd length one pad element), uploaded once. The formats without
//! shaders (Q5_0, Q5_1, Q2_K, Q3_K, Q5_K) are dequantized to F32 at upload: the same values,
//! 4 bytes each.

use plumb_core::{GgmlType, HostWeight};
use plumb_ops::Result;

/// A format the shaders read; the ids are formats.wgsl's FMT_* constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Format {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl Format {
    /// The format the shaders read a weight stored in `ty` as: its own, or F32.
    pub(crate) fn of(ty: GgmlType) -> Format {
        match ty {
            GgmlType::F16 => Format::F16,
            GgmlType::BF16 => Format::BF16,
            GgmlType::Q4_0 => Format::Q4_0,
            GgmlType::Q4_1 => Format::Q4_1,
            GgmlType::Q8_0 => Format::Q8_0,
            GgmlType::Q4K => Format::Q4K,
            GgmlType::Q6K => Format::Q6K,
            _ => Format::F32,
        }
    }

    pub(crate) fn ty(self) -> GgmlType {
        match self {
            Format::F32 => GgmlType::F32,
            Format::F16 => GgmlType::F16,
            Format::BF16 => GgmlType::BF16,
            Format::Q4_0 => GgmlType::Q4_0,
            Format::Q4_1 => GgmlType::Q4_1,
            Format::Q8_0 => GgmlType::Q8_0,
            Format::Q4K => GgmlType::Q4K,
            Format::Q6K => GgmlType::Q6K,
        }
    }

    /// formats.wgsl's FMT.
    fn id(self) -> u32 {
        self as u32
    }

    /// Whether the matvec meets this format with 8-bit activations (matvec_q8).
    pub(crate) fn quantized(self) -> bool {
        self.ty().is_quantized()
    }

    /// (offset, count) of the zero bytes inserted into each block (or float row).
    fn pad(self) -> (usize, usize) {
        match self {
            Format::Q4_0 | Format::Q8_0 => (2, 2),
            Format::Q6K => (210, 2),
            _ => (0, 0),
        }
    }

    /// Words of one block on the device (one element's word for the float formats).
    fn block_words(self) -> usize {
        (self.ty().type_size() + self.pad().1).div_ceil(4)
    }

    /// Words from one row of `cols` elements to the next.
    pub(crate) fn row_words(self, cols: usize) -> usize {
        match self {
            Format::F32 => cols,
            Format::F16 | Format::BF16 => cols.div_ceil(2),
            q => cols / q.ty().block_size() * q.block_words(),
        }
    }

    /// The pipeline constants that select this format in formats.wgsl.
    pub(crate) fn constants(self) -> [(&'static str, f64); 3] {
        [
            ("FMT", self.id() as f64),
            ("BLOCK", self.ty().block_size() as f64),
            ("BLOCK_WORDS", self.block_words() as f64),
        ]
    }
}

/// The words of `w` as the shaders read it, and its format there.
pub(crate) fn pack(w: &HostWeight) -> Result<(Format, Vec<u32>)> {
    let format = Format::of(w.ty);
    if format == Format::F32 && w.ty != GgmlType::F32 {
        let vals = w.to_f32()?;
        return Ok((format, vals.iter().map(|v| v.to_bits()).collect()));
    }
    let mut bytes = Vec::with_capacity(w.rows * format.row_words(w.cols) * 4);
    for r in 0..w.rows {
        let row = w.row(r);
        match format {
            Format::F32 | Format::F16 | Format::BF16 => {
                bytes.extend_from_slice(row);
                bytes.resize(bytes.len().next_multiple_of(4), 0);
            }
            q => {
                let (at, n) = q.pad();
                for block in row.chunks_exact(q.ty().type_size()) {
                    bytes.extend_from_slice(&block[..at]);
                    bytes.extend(std::iter::repeat_n(0u8, n));
                    bytes.extend_from_slice(&block[at..]);
                }
            }
        }
    }
    let words = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((format, words))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plumb_core::Bytes;

    #[test]
    fn blocks_land_on_words_with_their_bytes_unchanged() {
        // Two Q4_0 blocks of 18 bytes numbered 0..36: each becomes d, 2 zeros, 16 quants.
        let raw: Vec<u8> = (0..36).collect();
        let w = HostWeight::new("w", GgmlType::Q4_0, 1, 64, Bytes::from_vec(raw)).unwrap();
        let (f, words) = pack(&w).unwrap();
        assert_eq!(f, Format::Q4_0);
        assert_eq!(words.len(), 2 * 5);
        assert_eq!(words[0], u32::from_le_bytes([0, 1, 0, 0]));
        assert_eq!(words[1], u32::from_le_bytes([2, 3, 4, 5]));
        assert_eq!(words[5], u32::from_le_bytes([18, 19, 0, 0]));
        assert_eq!(f.row_words(64), 10);
        // Q6_K: 210 bytes + 2 zeros = 53 words, d in the low half of the last.
        assert_eq!(Format::Q6K.block_words(), 53);
        assert_eq!(Format::Q8_0.block_words(), 9);
        assert_eq!(Format::Q4K.block_words(), 36);
        assert_eq!(Format::Q4_1.block_words(), 5);
        // F16 rows of 3 elements take 2 words each.
        let h =
            HostWeight::new("h", GgmlType::F16, 2, 3, Bytes::from_vec((0..12).collect())).unwrap();
        let (f, words) = pack(&h).unwrap();
        assert_eq!(f.row_words(3), 2);
        assert_eq!(words, [0x0302_0100, 0x0000_0504, 0x0908_0706, 0x0000_0b0a]);
    }

    #[test]
    fn formats_without_shaders_become_f32_values() {
        let vals: Vec<f32> = (0..32).map(|i| i as f32 * 0.25 - 3.0).collect();
        let mut q = vec![0u8; GgmlType::Q5_0.row_bytes(32).unwrap()];
        plumb_core::quant::quantize_row(GgmlType::Q5_0, &vals, &mut q).unwrap();
        let w = HostWeight::new("w", GgmlType::Q5_0, 1, 32, Bytes::from_vec(q)).unwrap();
        let (f, words) = pack(&w).unwrap();
        assert_eq!(f, Format::F32);
        let back: Vec<f32> = words.iter().map(|&b| f32::from_bits(b)).collect();
        assert_eq!(back, w.to_f32().unwrap());
    }
}
